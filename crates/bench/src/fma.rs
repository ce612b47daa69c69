//! The machine's peak f32 FMA throughput, for reference: a loop of fused multiply-adds on 12
//! independent vector accumulators (enough to cover FMA latency × FMA ports on current x86
//! cores), one copy per thread, reported in GFLOP/s (an FMA counts as 2 flops).
//!
//! Measured for each instruction set the CPU has: AVX2+FMA (256-bit; what matrixmultiply's
//! f32 kernel uses) and AVX-512F (512-bit; on AMD Zen 4 it issues as two 256-bit halves, so
//! its peak is about the same). Other architectures: a scalar loop.

use std::hint::black_box;
use std::time::Instant;

/// One peak measurement: the instruction set and GFLOP/s over all threads.
#[derive(Debug, Clone)]
pub struct Peak {
    pub isa: &'static str,
    pub lanes: usize,
    pub gflops: f64,
}

const ACCUMULATORS: usize = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); ACCUMULATORS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for v in acc {
        sum = _mm256_add_ps(sum, v);
    }
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 f32s, the width of the vector.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
    out.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); ACCUMULATORS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for v in acc {
        sum = _mm512_add_ps(sum, v);
    }
    _mm512_reduce_add_ps(sum)
}

fn fma_scalar(iters: u64) -> f32 {
    let mut acc = [1.0f32; ACCUMULATORS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = v.mul_add(0.999_999, 1e-7);
        }
    }
    acc.iter().sum()
}

/// An FMA loop: iterations in, a sum out (so the loop is not optimised away).
type Kernel = fn(u64) -> f32;

/// The kernels this CPU can run: (name, f32 lanes, kernel).
fn kernels() -> Vec<(&'static str, usize, Kernel)> {
    let mut out: Vec<(&'static str, usize, Kernel)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            out.push(("avx2+fma", 8, |n| unsafe { fma_avx2(n) }));
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was just detected.
            out.push(("avx512f", 16, |n| unsafe { fma_avx512(n) }));
        }
    }
    if out.is_empty() {
        out.push(("scalar", 1, fma_scalar));
    }
    out
}

/// GFLOP/s of `kernel` run for `iters` iterations on each of `threads` threads at once.
fn rate(kernel: Kernel, lanes: usize, iters: u64, threads: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || kernel(black_box(iters))))
            .collect();
        for h in handles {
            black_box(h.join().expect("the FMA loop does not panic"));
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let flops = 2.0 * (ACCUMULATORS * lanes) as f64 * iters as f64 * threads as f64;
    flops / secs / 1e9
}

/// The best of `samples` runs of about 50 ms each, per instruction set, on `threads` threads.
pub fn peaks(threads: usize, samples: usize) -> Vec<Peak> {
    kernels()
        .into_iter()
        .map(|(isa, lanes, kernel)| {
            // Calibrate to about 50 ms per run on one thread.
            let probe = 100_000u64;
            let start = Instant::now();
            black_box(kernel(black_box(probe)));
            let t = start.elapsed().as_secs_f64().max(1e-6);
            let iters = ((probe as f64) * 0.05 / t).max(1.0) as u64;
            let best = (0..samples.max(1))
                .map(|_| rate(kernel, lanes, iters, threads))
                .fold(0.0f64, f64::max);
            Peak {
                isa,
                lanes,
                gflops: best,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_and_report_a_positive_rate() {
        let ks = kernels();
        let expected = fma_scalar(1000);
        for (isa, lanes, k) in &ks {
            let got = k(1000) / *lanes as f32;
            assert!(
                (got - expected).abs() < 1e-3 * expected.abs(),
                "{isa}: {got} vs {expected}"
            );
        }
        let p = peaks(1, 1);
        assert!(p.iter().all(|p| p.gflops > 0.0));
    }
}
