//! The one numeric bound: [`Float`], implemented for `f32` (speed) and `f64` (checking).

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: `f32` for speed, `f64` for gradient checking.
///
/// Sealed: the kernels are written for exactly these two types.
pub trait Float:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + 'static
    + sealed::Sealed
{
    /// The type's name, `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// Converts from `f64`, rounding to nearest.
    fn of(x: f64) -> Self;
    /// Converts to `f64` exactly.
    fn as_f64(self) -> f64;
    /// The kernels' `tanh`: `std`'s for `f64`; for `f32` a clamped rational approximation
    /// (within a few ulp) that vectorises, since libm's `tanhf` dominates recurrent kernels.
    fn fast_tanh(self) -> Self;
    /// The kernels' logistic sigmoid, `(1 + tanh(x/2)) / 2`: stable for any `x`, no overflow.
    #[inline]
    fn fast_sigmoid(self) -> Self {
        let half = Self::of(0.5);
        half + half * (self * half).fast_tanh()
    }
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn fast_tanh(self) -> Self {
        tanh_f32(self)
    }
}

/// A rational approximation of `tanh` on `[-7.9, 7.9]` (clamped outside, where `tanh` rounds to
/// ±1 in `f32`): an odd degree-13 numerator over an even degree-6 denominator (the coefficients
/// of Eigen's `generic_fast_tanh_float`). Branch-free, so loops over it vectorise.
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = x2 * -2.760_768_5e-16 + 2.000_188e-13;
    p = x2 * p + -8.604_672e-11;
    p = x2 * p + 5.122_297e-8;
    p = x2 * p + 1.485_722_4e-5;
    p = x2 * p + 6.372_619_3e-4;
    p = x2 * p + 4.893_524_6e-3;
    p *= x;
    let mut q = x2 * 1.198_258_4e-6 + 1.185_347_1e-4;
    q = x2 * q + 2.268_434_6e-3;
    q = x2 * q + 4.893_525e-3;
    p / q
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline]
    fn fast_tanh(self) -> Self {
        self.tanh()
    }
    #[inline]
    fn fast_sigmoid(self) -> Self {
        if self >= 0.0 {
            1.0 / (1.0 + (-self).exp())
        } else {
            let e = self.exp();
            e / (1.0 + e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_tanh_and_sigmoid_are_accurate_in_f32() {
        let mut worst_t = 0.0f64;
        let mut worst_s = 0.0f64;
        for k in -200_000..=200_000 {
            let x = k as f32 * 1e-4; // [-20, 20]
            let t = (x as f64).tanh();
            worst_t = worst_t.max((x.fast_tanh() as f64 - t).abs() / t.abs().clamp(1e-3, 1.0));
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            worst_s = worst_s.max((x.fast_sigmoid() as f64 - s).abs());
        }
        assert!(worst_t < 1e-6, "tanh error {worst_t}");
        assert!(worst_s < 1e-6, "sigmoid error {worst_s}");
        assert_eq!(1000f32.fast_tanh(), 1.0);
        assert_eq!((-1000f32).fast_sigmoid(), 0.0);
        assert_eq!(1000f32.fast_sigmoid(), 1.0);
    }
}
