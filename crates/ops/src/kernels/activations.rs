//! The kernels' `tanh` and logistic sigmoid: one value at a time (inlined into the fused gate
//! loops) or over a slice (the elementwise ops), dispatched per instruction set; and `exp` and
//! `logsigmoid`, one value at a time, for the sLSTM gates.
//!
//! `f32` uses a clamped rational approximation of `tanh` (within a few ulp; libm's `tanhf`
//! does not vectorise and dominated recurrent kernels); `f64`, the checking type, uses `std`'s.
//! The sigmoid is `(1 + tanh(x/2)) / 2` in `f32` and `1/(1 + e⁻ˣ)` (written without overflow)
//! in `f64`. `exp` in `f32` is a range reduction and a polynomial (Cephes' `expf`, within 2 ulp;
//! libm's `expf` does not vectorise), `logsigmoid` in `f32` builds on it; in `f64` both are the
//! standard library's. All are stable for any input and give the same values at every level (no fused
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

/// `F` as `f32`, or `f32` as `F`, when both are `f32` (a no-op).
#[inline(always)]
fn same<A: Copy + 'static, B: Copy + 'static>(a: A) -> B {
    assert_eq!(std::mem::size_of::<A>(), std::mem::size_of::<B>());
    // SAFETY: called only with `A`, `B` both `f32` (`Float` is sealed to `f32` and `f64`, and
    // the callers check `is_f32`); the sizes are asserted equal.
    unsafe { std::mem::transmute_copy(&a) }
}

/// `eˣ`: see the module doc. Below −87.34 (where `f32` turns subnormal) `f32` gives 0.
#[inline(always)]
pub fn exp<F: Float>(x: F) -> F {
    if !is_f32::<F>() {
        return x.exp();
    }
    let x: f32 = same(x);
    let (lo, hi) = (-87.336_55f32, 88.376_26f32);
    // Compare-and-select, so NaN passes through.
    let c = if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    };
    // x = n ln 2 + r, |r| ≤ ln 2 / 2, with ln 2 split in two for an exact reduction.
    let n = (c * std::f32::consts::LOG2_E + 0.5).floor();
    let r = c - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
    // 2ⁿ from its exponent bits (n is an integer in [−126, 128] after the clamp): n + 127 read
    // from the low mantissa bits of n + 2²³ + 127, exact below 2²⁴. Not `n as i32`, whose
    // saturating conversion LLVM does lane by lane (a compare and a NaN check per lane: the
    // sLSTM gate loop ran scalar through it). A NaN `n` gives a NaN `p` and so a NaN `y`.
    let scale = f32::from_bits((n + 8_388_735.0).to_bits() << 23);
    let y = if x < lo {
        0.0
    } else if x > hi {
        f32::INFINITY
    } else {
        p * scale
    };
    same(y)
}

/// `ln σ(x) = min(x, 0) − ln(1 + e^−|x|)`: see the module doc.
#[inline(always)]
pub fn log_sigmoid<F: Float>(x: F) -> F {
    log_sigmoid_and_complement(x).0
}

/// `(ln σ(x), σ(−x))` from one `e^−|x|`: the sLSTM forget gate needs both (the second for the
/// derivative of the first, `σ(−x)`). `σ(−x)` is `e/(1 + e)` for `x ≥ 0` and `1/(1 + e)`
/// below, within a few ulp of [`sigmoid`]`(−x)` (a different formula, so not bit-equal).
#[inline(always)]
pub fn log_sigmoid_and_complement<F: Float>(x: F) -> (F, F) {
    if !is_f32::<F>() {
        let e = (-x.abs()).exp();
        let top = if x >= F::zero() { e } else { F::one() };
        return (x.min(F::zero()) - e.ln_1p(), top / (F::one() + e));
    }
    let x: f32 = same(x);
    let e = exp(-x.abs()); // in (0, 1]
    let u = 1.0 + e;
    // NaN fails the comparison and takes 1: u is NaN then, and so is the quotient.
    let complement = if x >= 0.0 { e } else { 1.0 } / u;
    // ln u for u in [1, 2]: 2 atanh(s), s = (u − 1)/(u + 1) ≤ 1/3, to s¹³.
    let s = (u - 1.0) / (u + 1.0);
    let s2 = s * s;
    let mut q = 1.0f32 / 13.0;
    for k in [11.0f32, 9.0, 7.0, 5.0, 3.0] {
        q = q * s2 + 1.0 / k;
    }
    let ln_u = 2.0 * s * (q * s2 + 1.0);
    // ln(1 + e) from the rounded u (Goldberg's correction), exact where u rounds to 1.
    let ln1p = if u == 1.0 { e } else { ln_u * e / (u - 1.0) };
    (same(x.min(0.0) - ln1p), same(complement))
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
    fn exp_and_log_sigmoid_are_accurate_in_f32() {
        let mut worst_e = 0.0f64;
        let mut worst_l = 0.0f64;
        for k in -1_000_000..=1_000_000 {
            let x = k as f32 * 1e-4; // [-100, 100]
            let (e, want_e) = (exp(x) as f64, (x as f64).exp());
            if want_e > 1e-37 && want_e < 1e38 {
                worst_e = worst_e.max((e - want_e).abs() / want_e);
            }
            let want_l = (x as f64).min(0.0) - (-(x as f64).abs()).exp().ln_1p();
            let l = log_sigmoid(x) as f64;
            worst_l = worst_l.max((l - want_l).abs() / want_l.abs().max(1e-30));
        }
        assert!(worst_e < 3e-7, "exp error {worst_e}");
        assert!(worst_l < 1e-6, "log_sigmoid error {worst_l}");
        let mut worst_c = 0.0f64;
        for k in -1_000_000..=1_000_000 {
            let x = k as f32 * 1e-4;
            let (l, c) = log_sigmoid_and_complement(x);
            assert_eq!(l.to_bits(), log_sigmoid(x).to_bits());
            let want = 1.0 / (1.0 + (x as f64).exp());
            if want > 1e-37 {
                worst_c = worst_c.max((c as f64 - want).abs() / want);
            }
        }
        assert!(worst_c < 1e-6, "σ(−x) error {worst_c}");
        let (l, c) = log_sigmoid_and_complement(f32::NAN);
        assert!(l.is_nan() && c.is_nan());
        assert_eq!(log_sigmoid_and_complement(-200f32).1, 1.0);
        assert_eq!(log_sigmoid_and_complement(200f32).1, 0.0);
        assert_eq!(exp(-200f32), 0.0);
        assert_eq!(exp(200f32), f32::INFINITY);
        assert_eq!(exp(0f32), 1.0);
        assert!(exp(f32::NAN).is_nan() && log_sigmoid(f32::NAN).is_nan());
        assert_eq!(log_sigmoid(-200f32), -200.0);
        // The clamp's upper end (n = 128 there): still finite.
        assert!(exp(88.376_26f32).is_finite() && exp(88.376_26f32) > 2e38);
    }

    #[test]
    fn the_power_of_two_from_mantissa_bits_is_the_integer_conversion() {
        // `exp` builds 2ⁿ from the bits of n + 2²³ + 127: the same bits as from `n as i32`, for
        // every n the clamp lets through.
        for n in -126..=128 {
            let from_float = f32::from_bits((n as f32 + 8_388_735.0).to_bits() << 23);
            assert_eq!(from_float.to_bits(), ((n + 127) as u32) << 23, "n = {n}");
        }
    }

    #[test]
    fn f64_uses_the_standard_functions() {
        for x in [-800.0, -3.0, 0.0, 2.5, 700.0] {
            assert_eq!(exp(x), f64::exp(x));
            assert_eq!(log_sigmoid(x), x.min(0.0) - (-x.abs()).exp().ln_1p());
            let (l, c) = log_sigmoid_and_complement(x);
            assert_eq!(l, log_sigmoid(x));
            let want = 1.0 / (1.0 + x.exp());
            assert!((c - want).abs() <= 1e-15 * want, "σ(−{x}) = {c}, want {want}");
        }
        for x in [-800.0, -3.0, -1e-3, 0.0, 0.5, 40.0] {
            assert_eq!(tanh(x), f64::tanh(x));
            let want = 1.0 / (1.0 + (-x).exp());
            assert!((sigmoid(x) - want).abs() <= 1e-16, "{x}");
        }
        assert_eq!(sigmoid(-800.0f64), 0.0);
    }
}
