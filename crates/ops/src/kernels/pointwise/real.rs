//! The numbers a [`Pointwise`](super::Pointwise) is written over: the [`Real`] trait, and its
//! `f32`/`f64` values through eddy's activation kernels.

use super::super::activations;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// The numbers a [`Pointwise`](super::Pointwise) is written over: `f32` and `f64` for values, [`Dual`](super::Dual) numbers for
/// derivatives, and (in the recorded reverse pass) tape values. Arithmetic and the functions a
/// gate needs; constants through [`Real::of`].
pub trait Real:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + Neg<Output = Self>
{
    /// The constant `v`.
    fn of(v: f64) -> Self;
    /// The logistic sigmoid `1/(1 + e⁻ˣ)` (eddy's kernel: the same values as the `sigmoid` op).
    fn sigmoid(self) -> Self;
    /// `tanh x` (eddy's kernel: the same values as the `tanh` op).
    fn tanh(self) -> Self;
    /// `eˣ`.
    fn exp(self) -> Self;
    /// The natural logarithm.
    fn ln(self) -> Self;
    /// `ln σ(x)`, stable for any `x`.
    fn log_sigmoid(self) -> Self;
    /// `√x`.
    fn sqrt(self) -> Self;
    /// `max(x, 0)` (derivative 0 at 0, as PyTorch's).
    fn relu(self) -> Self;
    /// `1` where `x > 0`, else `0`; its derivative is zero. With it a branch is a blend:
    /// `s·a + (1 − s)·b` (minGRU's `g(x)`, a `max` as `b + relu(a − b)`).
    fn step(self) -> Self;
    /// `ln(1 + eˣ)`, stable for any `x`.
    fn softplus(self) -> Self {
        -(-self).log_sigmoid()
    }
}

macro_rules! real_for_float {
    ($t:ty) => {
        impl Real for $t {
            #[inline(always)]
            fn of(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn sigmoid(self) -> Self {
                activations::sigmoid(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                activations::tanh(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                activations::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn log_sigmoid(self) -> Self {
                activations::log_sigmoid(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn relu(self) -> Self {
                // Compare-and-select (vectorises); NaN passes through as NaN.
                if self > 0.0 {
                    self
                } else if self <= 0.0 {
                    0.0
                } else {
                    self
                }
            }
            #[inline(always)]
            fn step(self) -> Self {
                if self > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    };
}
real_for_float!(f32);
real_for_float!(f64);
