//! [`Memo`] lanes: the function values a recorded forward saves and its backward reads back,
//! and [`memo_count`], how many there are per element.

use super::{Dual, Lanes, Pointwise, Real};
use eddy_tape::Float;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// What a [`Log`] does with the results of the functions (`σ`, `tanh`, `exp`, …) it sees.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Counts them ([`memo_count`]).
    Count,
    /// Computes them and writes each to its place (the forward of a recorded op).
    Record,
    /// Reads each from its place instead of computing it (the backward).
    Replay,
}

/// The saved function values of one block of `width` lanes at column `at` of a row: value `t`
/// of the block is at `ptr + t·stride + at`. `next` counts the values seen so far.
pub(super) struct Log<F> {
    mode: Mode,
    ptr: *mut F,
    stride: usize,
    at: usize,
    width: usize,
    next: std::cell::Cell<usize>,
}

impl<F: Float> Log<F> {
    #[inline(always)]
    pub(super) fn new(mode: Mode, ptr: *mut F, stride: usize, at: usize, width: usize) -> Self {
        Log {
            mode,
            ptr,
            stride,
            at,
            width,
            next: std::cell::Cell::new(0),
        }
    }

    /// The next function value: `f()` computed (and written, recording), or read back.
    #[inline(always)]
    fn value<const L: usize>(&self, f: impl FnOnce() -> Lanes<F, L>) -> Lanes<F, L> {
        let t = self.next.get();
        self.next.set(t + 1);
        // SAFETY (both arms): value `t < memo_count` of a block lies in its row of the saved
        // buffer (`count · stride` long, `at + width ≤ stride`), which the caller sized; recording
        // writes each place once, from the one thread that owns the row.
        match self.mode {
            Mode::Count => f(),
            Mode::Record => {
                let v = f();
                v.store(unsafe {
                    std::slice::from_raw_parts_mut(self.ptr.add(t * self.stride + self.at), self.width)
                });
                v
            }
            Mode::Replay => Lanes::load(unsafe {
                std::slice::from_raw_parts(self.ptr.add(t * self.stride + self.at), self.width)
            }),
        }
    }
}

/// Lanes that remember: in the loops of a recorded [`pointwise`](fn@crate::pointwise) op, every
/// function value computed from the inputs (`σ`, `tanh`, `exp`, `ln`, `logsigmoid`, `√`) is
/// written by the forward and read back by the backward, as the built-in cells save their
/// activations, so the backward does only the dual numbers' arithmetic. Constants (`log`
/// `None`) are computed, in both passes alike.
#[derive(Clone, Copy)]
pub struct Memo<'a, F, const L: usize> {
    pub(super) v: Lanes<F, L>,
    log: Option<&'a Log<F>>,
}

impl<'a, F: Float + Real, const L: usize> Memo<'a, F, L> {
    #[inline(always)]
    pub(super) fn logged(v: Lanes<F, L>, log: &'a Log<F>) -> Self {
        Memo { v, log: Some(log) }
    }
    #[inline(always)]
    fn function(self, f: impl FnOnce(Lanes<F, L>) -> Lanes<F, L>) -> Self {
        match self.log {
            None => Memo {
                v: f(self.v),
                log: None,
            },
            Some(log) => Memo {
                v: log.value(
                    #[inline(always)]
                    || f(self.v),
                ),
                log: Some(log),
            },
        }
    }
}

macro_rules! memo_binary {
    ($tr:ident, $f:ident, $op:tt) => {
        impl<F: Float + Real, const L: usize> $tr for Memo<'_, F, L> {
            type Output = Self;
            #[inline(always)]
            fn $f(self, o: Self) -> Self {
                Memo { v: self.v $op o.v, log: self.log.or(o.log) }
            }
        }
    };
}
memo_binary!(Add, add, +);
memo_binary!(Sub, sub, -);
memo_binary!(Mul, mul, *);
memo_binary!(Div, div, /);

impl<F: Float + Real, const L: usize> Neg for Memo<'_, F, L> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        Memo {
            v: -self.v,
            log: self.log,
        }
    }
}

macro_rules! memo_function {
    ($($f:ident),*) => {
        $(
            #[inline(always)]
            fn $f(self) -> Self {
                self.function(
                    #[inline(always)]
                    |v| Real::$f(v),
                )
            }
        )*
    };
}

impl<F: Float + Real, const L: usize> Real for Memo<'_, F, L> {
    #[inline(always)]
    fn of(v: f64) -> Self {
        Memo {
            v: Lanes::of(v),
            log: None,
        }
    }
    memo_function!(sigmoid, tanh, exp, ln, log_sigmoid, sqrt);
    #[inline(always)]
    fn relu(self) -> Self {
        Memo {
            v: self.v.relu(),
            log: self.log,
        }
    }
    #[inline(always)]
    fn step(self) -> Self {
        Memo {
            v: self.v.step(),
            log: self.log,
        }
    }
}

/// How many function values per element the forward of a recorded `p` saves for its backward:
/// `p` evaluated once over dual numbers that count them. The same count for every element and
/// both passes (`eval` is straight-line code; the dual numbers' rules call the same functions
/// whatever their number of tangents).
pub fn memo_count<P: Pointwise<I, O>, const I: usize, const O: usize>(p: &P) -> usize {
    let log = Log::<f32>::new(Mode::Count, std::ptr::null_mut(), 0, 0, 1);
    let x: [Dual<Memo<f32, 1>, 0>; I] = std::array::from_fn(|_| Dual {
        v: Memo::logged(Lanes([0.5]), &log),
        d: [],
    });
    let _ = p.eval(x);
    log.next.get()
}
