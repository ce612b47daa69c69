//! GEMM at the shapes the workloads use, through eddy's own `MatMul` forward: the kernels
//! layer's GEMM dispatcher (`eddy_ops::kernels::gemm`), which picks the few-row kernels, the
//! packed kernel (its weight packed for the call) or matrixmultiply by shape and kernel level
//! (transposes as strided views); and, as "packed" rows, the packed-weight kernel with the
//! weight packed once beforehand, as the sequence ops use it.
//!
//! `bench/torch_bench.py` has the same list (`GEMM_CASES`); keep the two in step.

use crate::stats::{measure, Stats};
use eddy_nn::init;
use eddy_ops::kernels::packed::{packed_kernel_available, PackedMatrix};
use eddy_ops::MatMul;
use eddy_tape::{Op, Result, Rng};
use ndarray::{ArrayD, Ix2};
use std::hint::black_box;
use std::time::Instant;

/// `op(A)·op(B)` with `op(A)` `[m, k]`, `op(B)` `[k, n]`; `ta`/`tb`: the operand is stored
/// transposed (`A` as `[k, m]`, `B` as `[n, k]`), as the layers store it.
pub struct GemmCase {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub ta: bool,
    pub tb: bool,
    pub note: &'static str,
}

impl GemmCase {
    /// The id the runner matches against PyTorch's: `MxK*KxN` and the layout, e.g. `64x256*256x1024 NT`.
    pub fn id(&self) -> String {
        let layout = format!(
            "{}{}",
            if self.ta { "T" } else { "N" },
            if self.tb { "T" } else { "N" }
        );
        format!("{}x{}*{}x{} {layout}", self.m, self.k, self.k, self.n)
    }

    /// Floating-point operations of one product.
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
}

const fn case(m: usize, k: usize, n: usize, ta: bool, tb: bool, note: &'static str) -> GemmCase {
    GemmCase {
        m,
        k,
        n,
        ta,
        tb,
        note,
    }
}

/// The shapes, with the product each stands for.
pub const GEMM_CASES: &[GemmCase] = &[
    case(32, 50, 200, false, true, "W1 step: h·W_hhᵀ (H 50, 4 gates)"),
    case(
        1600,
        50,
        200,
        false,
        true,
        "W1 layer 2 input projection x·W_ihᵀ, all T",
    ),
    case(64, 256, 1024, false, true, "W2/W7 step: h·W_hhᵀ"),
    case(
        64,
        256,
        1024,
        false,
        false,
        "W2 step, W_hh stored [H, 4H] (layout check)",
    ),
    case(64, 1024, 256, false, false, "W2 step backward: dh = dgates·W_hh"),
    case(1024, 64, 256, true, false, "W2 step backward: dW_hh += dgatesᵀ·h"),
    case(6400, 128, 1024, false, true, "W2 input projection x·W_ihᵀ, all T"),
    case(1, 256, 1024, false, true, "W6 step: h·W_hhᵀ, batch 1"),
    case(
        64,
        512,
        4096,
        false,
        true,
        "W4 per-step input projection (if not hoisted)",
    ),
    case(64, 1024, 4096, false, true, "W4 step: h·W_hhᵀ"),
    case(3200, 512, 4096, false, true, "W4 input projection x·W_ihᵀ, all T"),
    case(32, 128, 128, false, true, "W5 step: h·W_hhᵀ"),
    case(64, 256, 768, false, true, "W3 step: h·W_hhᵀ (GRU, 3 gates)"),
    case(64, 768, 256, false, false, "W3 step backward: dh = dgates·W_hh"),
    case(
        1024,
        6336,
        256,
        true,
        false,
        "W2 backward: dW_hh = Σₜ dGₜᵀ·hₜ₋₁, one product over the steps",
    ),
    case(1024, 6400, 128, true, false, "W2 backward: dW_ih = dGᵀ·x, all T"),
    case(4096, 3136, 1024, true, false, "W4 backward: dW_hh over the steps"),
    case(
        200,
        1568,
        50,
        true,
        false,
        "W1 backward: dW_hh over the steps (one layer)",
    ),
    case(1024, 8192, 128, true, false, "W9 backward: dW_ih = dGᵀ·x, all T"),
];

/// Times one case: enough products per sample for it to last about a millisecond; returns the
/// per-product stats.
pub fn run(c: &GemmCase, warmup: usize, steps: usize) -> Result<Stats> {
    let mut rng = Rng::seed(0);
    let a_shape = if c.ta { [c.k, c.m] } else { [c.m, c.k] };
    let b_shape = if c.tb { [c.n, c.k] } else { [c.k, c.n] };
    let a: ArrayD<f32> = init::uniform(&a_shape, 1.0, &mut rng);
    let b: ArrayD<f32> = init::uniform(&b_shape, 1.0, &mut rng);
    let op = MatMul { ta: c.ta, tb: c.tb };
    per_product(warmup, steps, || {
        black_box(op.forward(&[&a, &b])?);
        Ok(())
    })
}

/// Times `product`: enough calls per sample for it to last about a millisecond; returns the
/// per-call stats.
fn per_product(warmup: usize, steps: usize, mut product: impl FnMut() -> Result<()>) -> Result<Stats> {
    let start = Instant::now();
    product()?;
    let once = start.elapsed().as_secs_f64().max(1e-7);
    let reps = ((1e-3 / once).ceil() as usize).clamp(1, 100_000);
    let stats = measure(warmup, steps, || -> Result<()> {
        for _ in 0..reps {
            product()?;
        }
        Ok(())
    })?;
    let per = |t: f64| t / reps as f64;
    Ok(Stats::from_samples(stats.times_ms.into_iter().map(per).collect()))
}

/// Times one case the way the recurrent layers compute it: the weight packed once
/// (`eddy_ops::kernels::packed::PackedMatrix`, as a sequence op packs `W_hh` once per sequence), the
/// products through the packed tile of the chosen kernel level (AVX-512 or AVX2). `None` where
/// the layers would not use it (a transposed left operand, at most 4 rows, or the portable level).
pub fn run_packed(c: &GemmCase, warmup: usize, steps: usize) -> Result<Option<Stats>> {
    if c.ta || c.m <= 4 || !packed_kernel_available::<f32>() {
        return Ok(None);
    }
    let mut rng = Rng::seed(0);
    let a: ArrayD<f32> = init::uniform(&[c.m, c.k], 1.0, &mut rng);
    let b_shape = if c.tb { [c.n, c.k] } else { [c.k, c.n] };
    let b: ArrayD<f32> = init::uniform(&b_shape, 1.0, &mut rng);
    let b2 = b.view().into_dimensionality::<Ix2>().expect("2-D");
    let packed = PackedMatrix::new(&if c.tb { b2.t() } else { b2 });
    let a = a.as_slice().expect("row-major");
    let mut out = vec![0f32; c.m * c.n];
    let stats = per_product(warmup, steps, || {
        packed.mul_into(a, black_box(&mut out), false);
        Ok(())
    })?;
    Ok(Some(stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_name_the_layout() {
        let ids: Vec<String> = GEMM_CASES.iter().map(GemmCase::id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert_eq!(GEMM_CASES[2].id(), "64x256*256x1024 NT");
    }

    #[test]
    fn a_small_case_runs() {
        let s = run(&GEMM_CASES[0], 0, 2).unwrap();
        assert_eq!(s.times_ms.len(), 2);
        // The packed form exists exactly where the layers would use it.
        let packed = run_packed(&GEMM_CASES[0], 0, 2).unwrap();
        assert_eq!(packed.is_some(), packed_kernel_available::<f32>());
        assert!(
            GEMM_CASES[7].m == 1 && run_packed(&GEMM_CASES[7], 0, 2).unwrap().is_none(),
            "batch 1: row kernels"
        );
    }
}
