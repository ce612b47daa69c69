//! minGRU's recurrence fused with its gate: `hₜ = (1 − zₜ) ⊙ hₜ₋₁ + zₜ ⊙ cₜ` with `zₜ = σ(kₜ)`,
//! read straight from the input projection, whose rows are `[k | c]` (`[T, B, 2H]`).
//!
//! The same recurrence runs through the general scan ([`super::scan`]) as `a = 1 − z`,
//! `b = z ⊙ c`; fused, neither `z` nor the coefficients are ever stored, and the backward pass
//! writes the projection's gradient `[dk | dc]` in the one reverse loop that carries `dh`:
//!
//! ```text
//! Gₜ = gₜ + carry,   dkₜ = Gₜ ⊙ zₜ(1 − zₜ) ⊙ (cₜ − hₜ₋₁),   dcₜ = Gₜ ⊙ zₜ,   carry = Gₜ ⊙ (1 − zₜ)
//! ```
//!
//! (`z` recomputed from `k`), the carry after the first step being the first state's gradient.
//! For a sequence of `T·B·H` elements that is one read of the projection and one write of the
//! states forward, and one read of each plus the output gradient and one write of the
//! projection's gradient backward, where the unfused ops make a dozen passes.
//!
//! Work splits across the pool's threads by lanes (the `B·H` units, each thread all the steps of
//! its own units) when there are enough of them ([`MIN_LANES`] per thread); otherwise one
//! thread runs it (there is no chunked form over time: a small `B·H` with a long `T` is the
//! general scan's case).

use super::activations::sigmoid;
use super::fresh::written_by;
use super::scan::{MIN_LANES, PAR_MIN};
use super::shared::Shared;
use super::steps::{prev_of, step_at};
use super::{madd, multiversion};
use eddy_tape::Float;
use rayon::prelude::*;

/// The sizes of a gated scan: `steps` (`T`), `batch` (`B`), `hidden` (`H`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatedDims {
    /// `T`, the number of steps.
    pub steps: usize,
    /// `B`, the number of sequences.
    pub batch: usize,
    /// `H`, the state size.
    pub hidden: usize,
}

multiversion! {
    /// One step over a range of units: `out = prev + σ(k) ⊙ (c − prev)`.
    fn gated_row<F: Float, const FMA: bool>(k: &[F], c: &[F], prev: &[F], out: &mut [F]) {
        for (((o, &k), &c), &p) in out.iter_mut().zip(k).zip(c).zip(prev) {
            *o = madd::<F, FMA>(sigmoid(k), c - p, p);
        }
    }
}

multiversion! {
    /// One reverse step over a range of units (see the module doc): reads `k`, `c`, the state
    /// the step read and the output's gradient; writes `dk`, `dc`; updates the carry.
    fn gated_back_row<F: Float, const FMA: bool>(
        k: &[F],
        c: &[F],
        prev: &[F],
        g: &[F],
        carry: &mut [F],
        dk: &mut [F],
        dc: &mut [F],
    ) {
        let n = carry.len();
        let (k, c, prev, g, dk, dc) = (&k[..n], &c[..n], &prev[..n], &g[..n], &mut dk[..n], &mut dc[..n]);
        for j in 0..n {
            let z = sigmoid(k[j]);
            let total = g[j] + carry[j];
            let gz = total * z;
            dc[j] = gz;
            dk[j] = (gz - gz * z) * (c[j] - prev[j]);
            carry[j] = total - gz;
        }
    }
}

/// The parts of the `B·H` lanes in `[l0, l1)` that lie in each sequence: `(b, j0, j1)`, units
/// `j0..j1` of sequence `b`.
fn segments(l0: usize, l1: usize, hidden: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let (b0, b1) = (l0 / hidden, l1.saturating_sub(1) / hidden);
    (b0..=b1).filter(move |_| l1 > l0).map(move |b| {
        let j0 = if b == b0 { l0 - b * hidden } else { 0 };
        let j1 = if b == b1 { l1 - b * hidden } else { hidden };
        (b, j0, j1)
    })
}

/// How many threads share the lanes: one unless each gets [`MIN_LANES`] and there is enough
/// work ([`PAR_MIN`] elements).
fn parts(dims: GatedDims, threads: usize) -> usize {
    let n = dims.batch * dims.hidden;
    if threads < 2 || dims.steps * n < PAR_MIN || n < threads * MIN_LANES {
        1
    } else {
        threads
    }
}

/// Every state `hₜ` (`out`, `[T, B, H]`) from the projection `kc` (`[T, B, 2H]`, rows `[k | c]`)
/// and the first state (`[B, H]`), in time order or from the last step backwards (`reverse`).
///
/// # Panics
/// If the slices' lengths do not fit `dims`.
pub fn gated_scan<F: Float>(kc: &[F], first: &[F], out: &mut [F], dims: GatedDims, reverse: bool) {
    let GatedDims { steps, batch, hidden } = dims;
    let n = batch * hidden;
    assert!(
        kc.len() == 2 * steps * n && first.len() == n && out.len() == steps * n,
        "gated_scan: kc must be [T, B, 2H], first [B, H], out [T, B, H]"
    );
    if n == 0 {
        return;
    }
    let parts = parts(dims, rayon::current_num_threads());
    let shared = Shared::new(out);
    let run = |p: usize| {
        let (l0, l1) = (n * p / parts, n * (p + 1) / parts);
        for i in 0..steps {
            let t = step_at(i, steps, reverse);
            for (b, j0, j1) in segments(l0, l1, hidden) {
                let row = (t * batch + b) * 2 * hidden;
                let lane = b * hidden + j0;
                // SAFETY: lanes `l0..l1` of every step belong to this task alone; `prev` is
                // the same lanes of another step (`q ≠ t`), written earlier by this task.
                let out_t = unsafe { shared.slice_mut(t * n + lane, j1 - j0) };
                let prev: &[F] = match prev_of(t, steps, reverse) {
                    None => &first[lane..lane + j1 - j0],
                    Some(q) => unsafe { shared.slice(q * n + lane, j1 - j0) },
                };
                gated_row(
                    &kc[row + j0..row + j1],
                    &kc[row + hidden + j0..row + hidden + j1],
                    prev,
                    out_t,
                );
            }
        }
    };
    match parts {
        1 => run(0),
        _ => (0..parts).into_par_iter().for_each(run),
    }
}

/// The gradients of [`gated_scan`]: from the projection `kc`, the first state, the states `out`
/// it computed and their gradient `g` (`[T, B, H]`), the projection's gradient `[dk | dc]`
/// (`[T, B, 2H]`) and the first state's (`[B, H]`).
///
/// # Panics
/// If the slices' lengths do not fit `dims`.
pub fn gated_scan_backward<F: Float>(
    kc: &[F],
    first: &[F],
    out: &[F],
    g: &[F],
    dims: GatedDims,
    reverse: bool,
) -> (Vec<F>, Vec<F>) {
    let GatedDims { steps, batch, hidden } = dims;
    let n = batch * hidden;
    assert!(
        kc.len() == 2 * steps * n && first.len() == n && out.len() == steps * n && g.len() == out.len(),
        "gated_scan_backward: kc must be [T, B, 2H], first [B, H], out and g [T, B, H]"
    );
    if n == 0 {
        return (vec![F::zero(); kc.len()], Vec::new());
    }
    let parts = parts(dims, rayon::current_num_threads());
    let mut dfirst = Vec::new();
    let write = |dkc: &mut [F]| {
        let shared = Shared::new(dkc);
        let run = |p: usize| -> Vec<F> {
            let (l0, l1) = (n * p / parts, n * (p + 1) / parts);
            let mut carry = vec![F::zero(); l1 - l0];
            for i in (0..steps).rev() {
                let t = step_at(i, steps, reverse);
                for (b, j0, j1) in segments(l0, l1, hidden) {
                    let (row, lane, len) = ((t * batch + b) * 2 * hidden, b * hidden + j0, j1 - j0);
                    let prev = match prev_of(t, steps, reverse) {
                        None => &first[lane..lane + len],
                        Some(q) => &out[q * n + lane..q * n + lane + len],
                    };
                    // SAFETY: this task alone writes its lanes' `dk` and `dc` (units `j0..j1` of
                    // each half of row `(t, b)`); the two ranges do not overlap (`j1 ≤ H`).
                    let (dk, dc) = unsafe {
                        (
                            shared.slice_mut(row + j0, len),
                            shared.slice_mut(row + hidden + j0, len),
                        )
                    };
                    gated_back_row(
                        &kc[row + j0..row + j1],
                        &kc[row + hidden + j0..row + hidden + j1],
                        prev,
                        &g[t * n + lane..t * n + lane + len],
                        &mut carry[lane - l0..lane - l0 + len],
                        dk,
                        dc,
                    );
                }
            }
            carry
        };
        dfirst = match parts {
            1 => run(0),
            _ => (0..parts).into_par_iter().map(run).collect::<Vec<_>>().concat(),
        };
    };
    // SAFETY: `write` writes `dk` and `dc` (both halves of each row) of every step and every
    // lane, the lanes of the tasks together covering `0..B·H` once (`segments`), and never
    // reads them.
    let dkc = unsafe { written_by(kc.len(), write) };
    (dkc, dfirst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut rng = eddy_tape::Rng::seed(seed);
        (0..len).map(|_| rng.uniform_in(-2.0, 2.0)).collect()
    }

    #[test]
    fn segments_cover_the_lanes_once() {
        let hidden = 5;
        for (l0, l1) in [(0, 0), (4, 4), (0, 5), (3, 12), (7, 8), (0, 20)] {
            let lanes: Vec<usize> = segments(l0, l1, hidden)
                .flat_map(|(b, j0, j1)| (j0..j1).map(move |j| b * hidden + j))
                .collect();
            assert_eq!(lanes, (l0..l1).collect::<Vec<_>>(), "{l0}..{l1}");
        }
    }

    /// The fused loop against the textbook recurrence, and its backward pass against the chain
    /// rule through the same loop written out, with one and two threads' worth of lanes.
    #[test]
    fn the_fused_scan_and_its_gradient_match_the_textbook_loop() {
        for (steps, batch, hidden) in [(1, 1, 1), (7, 3, 5), (40, 3, 500)] {
            let dims = GatedDims { steps, batch, hidden };
            let n = batch * hidden;
            let (kc, first, g) = (values(2 * steps * n, 1), values(n, 2), values(steps * n, 3));
            for reverse in [false, true] {
                let mut want = vec![0.0; steps * n];
                let mut h = first.clone();
                for i in 0..steps {
                    let t = step_at(i, steps, reverse);
                    for l in 0..n {
                        let (b, j) = (l / hidden, l % hidden);
                        let row = (t * batch + b) * 2 * hidden;
                        let z = 1.0 / (1.0 + (-kc[row + j]).exp());
                        h[l] = (1.0 - z) * h[l] + z * kc[row + hidden + j];
                        want[t * n + l] = h[l];
                    }
                }
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let (out, (dkc, dfirst)) = pool.install(|| {
                        let mut out = vec![0.0; steps * n];
                        gated_scan(&kc, &first, &mut out, dims, reverse);
                        let grads = gated_scan_backward(&kc, &first, &out, &g, dims, reverse);
                        (out, grads)
                    });
                    for (a, b) in out.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
                    }
                    // Finite differences of Σ g·h in one projection element and one first state.
                    let loss = |kc: &[f64], first: &[f64]| {
                        let mut out = vec![0.0; steps * n];
                        gated_scan(kc, first, &mut out, dims, reverse);
                        out.iter().zip(&g).map(|(h, g)| h * g).sum::<f64>()
                    };
                    let eps = 1e-6;
                    for e in [0, kc.len() / 2 + hidden / 2, kc.len() - 1] {
                        let (mut up, mut down) = (kc.clone(), kc.clone());
                        up[e] += eps;
                        down[e] -= eps;
                        let fd = (loss(&up, &first) - loss(&down, &first)) / (2.0 * eps);
                        assert!((fd - dkc[e]).abs() < 1e-6, "dkc[{e}] {} vs {fd}", dkc[e]);
                    }
                    let (mut up, mut down) = (first.clone(), first.clone());
                    up[n - 1] += eps;
                    down[n - 1] -= eps;
                    let fd = (loss(&kc, &up) - loss(&kc, &down)) / (2.0 * eps);
                    assert!(
                        (fd - dfirst[n - 1]).abs() < 1e-6,
                        "dfirst {} vs {fd}",
                        dfirst[n - 1]
                    );
                }
            }
        }
    }

    #[test]
    fn the_lanes_split_only_when_each_thread_gets_enough() {
        let dims = |steps, batch, hidden| GatedDims { steps, batch, hidden };
        assert_eq!(parts(dims(4096, 16, 256), 2), 2);
        assert_eq!(parts(dims(4096, 16, 256), 1), 1);
        assert_eq!(parts(dims(4096, 1, 16), 2), 1);
        assert_eq!(parts(dims(2, 16, 256), 2), 1);
    }
}
