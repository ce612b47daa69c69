//! Forward-mode [`Dual`] numbers over any [`Real`]: the derivatives of a
//! [`Pointwise`](super::Pointwise), from the same code as its values.

// Index loops over fixed-size arrays (see the parent module).
#![allow(clippy::needless_range_loop)]

use super::Real;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A forward-mode dual number: a value and its derivatives along `N` directions (one per input
/// of a [`Pointwise`](super::Pointwise), seeded with the unit vectors, gives a row of the Jacobian per output).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dual<R, const N: usize> {
    /// The value.
    pub v: R,
    /// `∂v/∂xₖ` for each direction `k`.
    pub d: [R; N],
}

impl<R: Real, const N: usize> Dual<R, N> {
    /// The `k`-th of `N` independent variables, with value `v` (tangent: the unit vector `eₖ`).
    #[inline(always)]
    pub fn variable(v: R, k: usize) -> Self {
        let mut d = [R::of(0.0); N];
        d[k] = R::of(1.0);
        Dual { v, d }
    }
    /// `f(self)` given `f(v)` and `f'(v)`: the chain rule.
    #[inline(always)]
    fn chain(self, value: R, slope: R) -> Self {
        let mut d = self.d;
        for k in 0..N {
            d[k] = self.d[k] * slope;
        }
        Dual { v: value, d }
    }
}

impl<R: Real, const N: usize> Add for Dual<R, N> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        let mut d = self.d;
        for k in 0..N {
            d[k] = self.d[k] + o.d[k];
        }
        Dual { v: self.v + o.v, d }
    }
}

impl<R: Real, const N: usize> Sub for Dual<R, N> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        let mut d = self.d;
        for k in 0..N {
            d[k] = self.d[k] - o.d[k];
        }
        Dual { v: self.v - o.v, d }
    }
}

impl<R: Real, const N: usize> Mul for Dual<R, N> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        let mut d = self.d;
        for k in 0..N {
            d[k] = self.d[k] * o.v + self.v * o.d[k];
        }
        Dual { v: self.v * o.v, d }
    }
}

impl<R: Real, const N: usize> Div for Dual<R, N> {
    type Output = Self;
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        let q = self.v / o.v;
        let mut d = self.d;
        for k in 0..N {
            d[k] = (self.d[k] - q * o.d[k]) / o.v;
        }
        Dual { v: q, d }
    }
}

impl<R: Real, const N: usize> Neg for Dual<R, N> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        let mut d = self.d;
        for k in 0..N {
            d[k] = -self.d[k];
        }
        Dual { v: -self.v, d }
    }
}

impl<R: Real, const N: usize> Real for Dual<R, N> {
    #[inline(always)]
    fn of(v: f64) -> Self {
        Dual {
            v: R::of(v),
            d: [R::of(0.0); N],
        }
    }
    #[inline(always)]
    fn sigmoid(self) -> Self {
        let s = self.v.sigmoid();
        self.chain(s, s * (R::of(1.0) - s))
    }
    #[inline(always)]
    fn tanh(self) -> Self {
        let t = self.v.tanh();
        self.chain(t, R::of(1.0) - t * t)
    }
    #[inline(always)]
    fn exp(self) -> Self {
        let e = self.v.exp();
        self.chain(e, e)
    }
    #[inline(always)]
    fn ln(self) -> Self {
        self.chain(self.v.ln(), R::of(1.0) / self.v)
    }
    #[inline(always)]
    fn log_sigmoid(self) -> Self {
        // d ln σ(x) = σ(−x).
        self.chain(self.v.log_sigmoid(), (-self.v).sigmoid())
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        let r = self.v.sqrt();
        self.chain(r, R::of(0.5) / r)
    }
    #[inline(always)]
    fn relu(self) -> Self {
        self.chain(self.v.relu(), self.v.step())
    }
    #[inline(always)]
    fn step(self) -> Self {
        Dual {
            v: self.v.step(),
            d: [R::of(0.0); N],
        }
    }
}
