//! The kernels' `tanh` and logistic sigmoid: one value at a time (inlined into the fused gate
//! loops) or over a slice (the elementwise ops), dispatched per instruction set.
//!
//! `f32` uses a clamped rational approximation of `tanh` (within a few ulp; libm's `tanhf`
//! does not vectorise and dominated recurrent kernels); `f64`, the checking type, uses `std`'s.
//! The sigmoid is `(1 + tanh(x/2)) / 2` in `f32` and `1/(1 + e⁻ˣ)` (written without overflow)
//! in `f64`. Both are stable for any input and give the same values at every level (no fused
//! multiply-adds: the rounding does not depend on the CPU).

use super::multiversion;
use eddy_tape::Float;

/// Whether `F` is `f32` (decided at compile time for each instantiation).
#[inline(always)]
fn is_f32<F: Float>() -> bool {
    std::mem::size_of::<F>() == 4
}

/// `tanh x`: see the module doc.
#[inline(always)]
pub fn tanh<F: Float>(x: F) -> F {
    if !is_f32::<F>() {
        return x.tanh();
    }
    // An odd degree-13 numerator over an even degree-6 denominator on [-7.9, 7.9] (the
    // coefficients of Eigen's `generic_fast_tanh_float`), clamped outside, where tanh rounds to
    // ±1 in f32. Branch-free, so loops over it vectorise.
    let c = |v: f64| F::of(v);
    let bound = c(7.905_311);
    // Compare-and-select, so NaN passes through (as `f32::clamp` does).
    let x = if x < -bound {
        -bound
    } else if x > bound {
        bound
    } else {
        x
    };
    let x2 = x * x;
    let mut p = x2 * c(-2.760_768_5e-16) + c(2.000_188e-13);
    p = x2 * p + c(-8.604_672e-11);
    p = x2 * p + c(5.122_297e-8);
    p = x2 * p + c(1.485_722_4e-5);
    p = x2 * p + c(6.372_619_3e-4);
    p = x2 * p + c(4.893_524_6e-3);
    p *= x;
    let mut q = x2 * c(1.198_258_4e-6) + c(1.185_347_1e-4);
    q = x2 * q + c(2.268_434_6e-3);
    q = x2 * q + c(4.893_525e-3);
    p / q
}

/// The logistic sigmoid `1/(1 + e⁻ˣ)`: see the module doc.
#[inline(always)]
pub fn sigmoid<F: Float>(x: F) -> F {
    if is_f32::<F>() {
        let half = F::of(0.5);
        return half + half * tanh(x * half);
    }
    if x >= F::zero() {
        F::one() / (F::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (F::one() + e)
    }
}

multiversion! {
    /// `out[i] = tanh(x[i])` over the common length.
    pub fn tanh_slice<F: Float, const FMA: bool>(x: &[F], out: &mut [F]) {
        let n = x.len().min(out.len());
        let (x, out) = (&x[..n], &mut out[..n]);
        for i in 0..n {
            out[i] = tanh(x[i]);
        }
    }
}

multiversion! {
    /// `out[i] = sigmoid(x[i])` over the common length.
    pub fn sigmoid_slice<F: Float, const FMA: bool>(x: &[F], out: &mut [F]) {
        let n = x.len().min(out.len());
        let (x, out) = (&x[..n], &mut out[..n]);
        for i in 0..n {
            out[i] = sigmoid(x[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_and_sigmoid_are_accurate_in_f32_at_the_chosen_level() {
        let xs: Vec<f32> = (-200_000..=200_000).map(|k| k as f32 * 1e-4).collect(); // [-20, 20]
        let (mut t, mut s) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
        tanh_slice(&xs, &mut t);
        sigmoid_slice(&xs, &mut s);
        let mut worst_t = 0.0f64;
        let mut worst_s = 0.0f64;
        for ((&x, &tv), &sv) in xs.iter().zip(&t).zip(&s) {
            let want_t = (x as f64).tanh();
            worst_t = worst_t.max((tv as f64 - want_t).abs() / want_t.abs().clamp(1e-3, 1.0));
            let want_s = 1.0 / (1.0 + (-(x as f64)).exp());
            worst_s = worst_s.max((sv as f64 - want_s).abs());
            // The slice kernels and the one-value forms agree exactly.
            assert_eq!((tv, sv), (tanh(x), sigmoid(x)), "x {x}");
        }
        assert!(worst_t < 1e-6, "tanh error {worst_t}");
        assert!(worst_s < 1e-6, "sigmoid error {worst_s}");
        assert_eq!(tanh(1000f32), 1.0);
        assert_eq!(sigmoid(-1000f32), 0.0);
        assert_eq!(sigmoid(1000f32), 1.0);
        assert!(tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
    }

    #[test]
    fn f64_uses_the_standard_functions() {
        for x in [-800.0, -3.0, -1e-3, 0.0, 0.5, 40.0] {
            assert_eq!(tanh(x), f64::tanh(x));
            let want = 1.0 / (1.0 + (-x).exp());
            assert!((sigmoid(x) - want).abs() <= 1e-16, "{x}");
        }
        assert_eq!(sigmoid(-800.0f64), 0.0);
    }
}
