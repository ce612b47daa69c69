//! [`Lanes`]: a block of numbers operated on together, what the loops run a
//! [`Pointwise`](super::Pointwise) over.

// Index loops over fixed-size arrays (see the parent module).
#![allow(clippy::needless_range_loop)]

use super::Real;
use eddy_tape::Float;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// `L` numbers side by side, operated on together: what the loops run a [`Pointwise`](super::Pointwise) over,
/// so that each of its operations is a fixed-size loop the compiler turns into vector
/// instructions (whatever the user's `eval` looks like, and whether or not it is inlined).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lanes<F, const L: usize>(pub [F; L]);

impl<F: Float, const L: usize> Lanes<F, L> {
    /// The first `m ≤ L` lanes from `x` (`m` long), the rest zero.
    #[inline(always)]
    pub(super) fn load(x: &[F]) -> Self {
        match x.try_into() {
            Ok(full) => Lanes(full),
            Err(_) => {
                let mut l = [F::zero(); L];
                l[..x.len()].copy_from_slice(x);
                Lanes(l)
            }
        }
    }
    /// The first `y.len() ≤ L` lanes into `y`.
    #[inline(always)]
    pub(super) fn store(&self, y: &mut [F]) {
        match <&mut [F; L]>::try_from(&mut *y) {
            Ok(full) => *full = self.0,
            Err(_) => {
                let m = y.len();
                y.copy_from_slice(&self.0[..m]);
            }
        }
    }
}

macro_rules! lanes_binary {
    ($tr:ident, $f:ident, $op:tt) => {
        impl<F: Float + Real, const L: usize> $tr for Lanes<F, L> {
            type Output = Self;
            #[inline(always)]
            fn $f(self, o: Self) -> Self {
                let mut out = self.0;
                for k in 0..L {
                    out[k] = self.0[k] $op o.0[k];
                }
                Lanes(out)
            }
        }
    };
}
lanes_binary!(Add, add, +);
lanes_binary!(Sub, sub, -);
lanes_binary!(Mul, mul, *);
lanes_binary!(Div, div, /);

impl<F: Float + Real, const L: usize> Neg for Lanes<F, L> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        let mut out = self.0;
        for k in 0..L {
            out[k] = -self.0[k];
        }
        Lanes(out)
    }
}

macro_rules! lanes_map {
    ($($f:ident),*) => {
        $(
            #[inline(always)]
            fn $f(self) -> Self {
                let mut out = self.0;
                for k in 0..L {
                    out[k] = <F as Real>::$f(self.0[k]);
                }
                Lanes(out)
            }
        )*
    };
}

impl<F: Float + Real, const L: usize> Real for Lanes<F, L> {
    #[inline(always)]
    fn of(v: f64) -> Self {
        Lanes([<F as Real>::of(v); L])
    }
    lanes_map!(sigmoid, tanh, exp, ln, log_sigmoid, sqrt, relu, step);
}
