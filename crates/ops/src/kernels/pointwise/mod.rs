//! A user's pointwise math, compiled for the cell: the [`Pointwise`] trait, the [`Real`] numbers
//! it is written over, forward-mode [`Dual`] numbers for its derivatives, and the two loops that
//! run it over rows — the values, and the vector–Jacobian product — each compiled per
//! instruction set.
//!
//! A cell's step is a few products and then pointwise math on the gates (`c' = σ(f)c +
//! σ(i)tanh(g)`, …). Written as separate tape ops, that math is a dozen passes over memory and a
//! dozen ops' bookkeeping a step; the built-in cells fuse it by hand into one loop with a
//! hand-written backward. A [`Pointwise`] is the same math written once, generic over the number
//! type: the forward loop instantiates it with `f32`/`f64` and the backward loop with
//! [`Dual`] numbers carrying one tangent per input, so the derivatives come from the same code
//! and nobody writes a backward. Both loops are monomorphised for the user's type, so the
//! compiler sees straight-line code and vectorises it as it does the built-in gate loops.
//!
//! No fused multiply-adds are formed (Rust does not contract `a * b + c`), so a `Pointwise` gives
//! the same values at every kernel level, like the built-in activations.

// Index loops over fixed-size arrays, not iterator chains: the closures of `map`/`from_fn`
// were left out of line (and so compiled without the level's target features), measured.
#![allow(clippy::needless_range_loop)]

mod dual;
mod lanes;
mod memo;
mod real;

pub use dual::Dual;
pub use lanes::Lanes;
pub use memo::{memo_count, Memo};
use memo::{Log, Mode};
pub use real::Real;

use super::Level;
use eddy_tape::Float;
use rayon::prelude::*;
use std::ops::Range;

/// Pointwise math from `I` numbers to `O` numbers, written once over any [`Real`]: the gate
/// math of a cell. eddy runs it over whole arrays in one loop, with its derivatives from the same
/// code ([`Dual`] numbers), through `eddy_ops::pointwise`.
///
/// Write `eval` as straight-line arithmetic (branches as blends with [`Real::step`]) and mark it
/// `#[inline]`, so the loops that call it vectorise.
///
/// ```
/// use eddy_ops::kernels::pointwise::{Pointwise, Real};
///
/// /// An LSTM's gate math: from `i, f, g, o` and `c`, the new `h` and `c`.
/// struct LstmGates;
///
/// impl Pointwise<5, 2> for LstmGates {
///     #[inline]
///     fn eval<R: Real>(&self, [i, f, g, o, c]: [R; 5]) -> [R; 2] {
///         let c = f.sigmoid() * c + i.sigmoid() * g.tanh();
///         [o.sigmoid() * c.tanh(), c]
///     }
/// }
///
/// let [h, c] = LstmGates.eval([0.5f64, 1.0, -0.3, 2.0, 0.1]);
/// assert!((c - (0.1 / (1.0 + (-1.0f64).exp()) + (-0.3f64).tanh() / (1.0 + (-0.5f64).exp()))).abs() < 1e-15);
/// assert!((h - c.tanh() / (1.0 + (-2.0f64).exp())).abs() < 1e-15);
/// ```
pub trait Pointwise<const I: usize, const O: usize>: Sync + 'static {
    /// The outputs from the inputs.
    fn eval<R: Real>(&self, x: [R; I]) -> [R; O];
}

/// One input of a pointwise loop over `rows × n` elements: element `(r, j)` is
/// `data[r·stride + j]` (`stride` 0 broadcasts one row to all).
#[derive(Clone, Copy)]
pub struct Source<'a, F> {
    /// The values, from the input's first element.
    pub data: &'a [F],
    /// The distance between rows (0: the same row for every row).
    pub stride: usize,
}

impl<'a, F> Source<'a, F> {
    /// Row `r`'s `n` values.
    #[inline(always)]
    fn row(&self, r: usize, n: usize) -> &'a [F] {
        &self.data[r * self.stride..r * self.stride + n]
    }
}

/// Where one output of a pointwise loop goes: `k` parts side by side in each row of a buffer
/// (the gradient of an input the step splits in `k`: `chunk(k)` of the gates), part `q` of
/// row `r` at `r·k·n + q·n`.
pub struct Target<'a, F> {
    ptr: *mut F,
    stride: usize,
    rows: usize,
    _buffer: std::marker::PhantomData<&'a mut [F]>,
}

// SAFETY: a `Target` is a `&mut` to its part's rows; the loops hand each row to one thread.
unsafe impl<F: Send> Send for Target<'_, F> {}
// SAFETY: as above: shared between the threads of a split loop, each writes only its own rows.
unsafe impl<F: Send> Sync for Target<'_, F> {}

impl<'a, F> Target<'a, F> {
    /// `buffer` (`rows` rows of `k·n`) as its `k` parts of width `n`, disjoint.
    ///
    /// # Panics
    /// If `buffer` is shorter than `rows·k·n`.
    pub fn parts(buffer: &'a mut [F], rows: usize, k: usize, n: usize) -> Vec<Target<'a, F>> {
        assert!(buffer.len() >= rows * k * n, "a target buffer holds its rows");
        let ptr = buffer.as_mut_ptr();
        (0..k)
            .map(|q| Target {
                // SAFETY: `q·n ≤ k·n ≤` the buffer's length (when `rows > 0`; else an offset of
                // at most the length, never dereferenced).
                ptr: unsafe { ptr.add((q * n).min(buffer.len())) },
                stride: k * n,
                rows,
                _buffer: std::marker::PhantomData,
            })
            .collect()
    }

    /// Row `r`'s `n` elements.
    ///
    /// # Safety
    /// No other live reference may cover them (each row of each part is asked for once).
    #[inline(always)]
    unsafe fn row(&self, r: usize, n: usize) -> &'a mut [F] {
        assert!(r < self.rows);
        // SAFETY: row `r` of part `q` is `[r·k·n + q·n, … + n)` of the buffer `parts` checked;
        // the parts' rows are disjoint, and the caller takes each once.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.stride), n) }
    }
}

/// `y[o][r·n + j] = p.eval(x[·](r, j))[o]` for every row `r < rows` and `j < n`.
///
/// # Panics
/// If a source is shorter than its rows need or an output is not `rows·n` long (the op checks
/// the shapes first).
pub fn forward<F, P, const I: usize, const O: usize>(
    p: &P,
    rows: usize,
    n: usize,
    x: [Source<'_, F>; I],
    y: [&mut [F]; O],
    saved: Option<&mut [F]>,
) where
    F: Float + Real,
    P: Pointwise<I, O>,
{
    #[inline(always)]
    fn body<F: Float + Real, P: Pointwise<I, O>, const I: usize, const O: usize, const L: usize>(
        p: &P,
        rows: Range<usize>,
        n: usize,
        x: &[Source<'_, F>; I],
        y: &[Target<'_, F>; O],
        saved: Option<(&Target<'_, F>, usize)>,
    ) {
        for r in rows {
            let xr: [&[F]; I] = std::array::from_fn(|i| x[i].row(r, n));
            // SAFETY: the targets are disjoint, and each row is taken once (`split_rows`).
            let yr: [&mut [F]; O] = std::array::from_fn(|o| unsafe { y[o].row(r, n) });
            match saved {
                None => blocks::<L>(
                    n,
                    #[inline(always)]
                    |j, m| {
                        let mut xs = [Lanes([F::zero(); L]); I];
                        for i in 0..I {
                            xs[i] = Lanes::load(&xr[i][j..j + m]);
                        }
                        let v = p.eval(xs);
                        for o in 0..O {
                            v[o].store(&mut yr[o][j..j + m]);
                        }
                    },
                ),
                Some((saved, count)) => {
                    // SAFETY: as above; the row holds `count` parts of `n`.
                    let row = unsafe { saved.row(r, count * n) };
                    blocks::<L>(
                        n,
                        #[inline(always)]
                        |j, m| {
                            let log = Log::new(Mode::Record, row.as_mut_ptr(), n, j, m);
                            let mut xs = [<Dual<Memo<F, L>, 0> as Real>::of(0.0); I];
                            for i in 0..I {
                                xs[i] = Dual {
                                    v: Memo::logged(Lanes::load(&xr[i][j..j + m]), &log),
                                    d: [],
                                };
                            }
                            let v = p.eval(xs);
                            for o in 0..O {
                                v[o].v.v.store(&mut yr[o][j..j + m]);
                            }
                        },
                    )
                }
            }
        }
    }
    let count = saved.as_ref().map(|_| memo_count(p));
    let y: [Target<F>; O] = y.map(|y| Target::parts(y, rows, 1, n).pop().expect("one part"));
    let saved = saved.map(|s| {
        Target::parts(s, rows, 1, count.unwrap_or(0) * n)
            .pop()
            .expect("one part")
    });
    let saved = saved.as_ref().zip(count);
    let wide = lanes(false) == 16;
    split_rows(rows, n, |range| match wide {
        true => dispatch(
            #[inline(always)]
            || body::<F, P, I, O, 16>(p, range, n, &x, &y, saved),
        ),
        false => dispatch(
            #[inline(always)]
            || body::<F, P, I, O, 8>(p, range, n, &x, &y, saved),
        ),
    })
}

/// The vector–Jacobian product: `dx[i][r·n + j] = Σₒ g[o](r, j) · ∂yₒ/∂xᵢ` at `x(r, j)`, with the
/// Jacobian from [`Dual`] numbers (the forward evaluated once per element with `I` tangents).
/// `g[o]` with stride 0 and all zeros stands for an output that received no gradient.
///
/// # Panics
/// As [`forward`].
pub fn vjp<F, P, const I: usize, const O: usize>(
    p: &P,
    rows: usize,
    n: usize,
    x: [Source<'_, F>; I],
    g: [Source<'_, F>; O],
    saved: &[F],
    dx: [Target<'_, F>; I],
) where
    F: Float + Real,
    P: Pointwise<I, O>,
{
    #[inline(always)]
    fn body<F: Float + Real, P: Pointwise<I, O>, const I: usize, const O: usize, const L: usize>(
        p: &P,
        rows: Range<usize>,
        n: usize,
        x: &[Source<'_, F>; I],
        g: &[Source<'_, F>; O],
        saved: (&[F], usize),
        dx: &[Target<'_, F>; I],
    ) {
        let (saved, count) = saved;
        for r in rows {
            let row = &saved[r * count * n..(r + 1) * count * n];
            let xr: [&[F]; I] = std::array::from_fn(|i| x[i].row(r, n));
            let gr: [&[F]; O] = std::array::from_fn(|o| g[o].row(r, n));
            // SAFETY: the targets are disjoint (`Target::parts`), and row `r` of each lies in
            // its buffer (`rows` rows of `n`).
            let dr: [&mut [F]; I] = std::array::from_fn(|i| unsafe { dx[i].row(r, n) });
            blocks::<L>(
                n,
                #[inline(always)]
                |j, m| {
                    // Read only (`Mode::Replay`): the pointer is never written through.
                    let log = Log::new(Mode::Replay, row.as_ptr() as *mut F, n, j, m);
                    let mut x = [<Dual<Memo<F, L>, I> as Real>::of(0.0); I];
                    for i in 0..I {
                        x[i] = Dual::variable(Memo::logged(Lanes::load(&xr[i][j..j + m]), &log), i);
                    }
                    let v = p.eval::<Dual<Memo<F, L>, I>>(x);
                    let mut g = [Lanes([F::zero(); L]); O];
                    for o in 0..O {
                        g[o] = Lanes::load(&gr[o][j..j + m]);
                    }
                    for i in 0..I {
                        let mut s = g[0] * v[0].d[i].v;
                        for o in 1..O {
                            s = s + g[o] * v[o].d[i].v;
                        }
                        s.store(&mut dr[i][j..j + m]);
                    }
                },
            );
        }
    }
    let count = memo_count(p);
    assert!(
        saved.len() >= rows * count * n,
        "the saved values hold their rows"
    );
    let wide = lanes(true) == 16;
    split_rows(rows, n, |range| match wide {
        true => dispatch(
            #[inline(always)]
            || body::<F, P, I, O, 16>(p, range, n, &x, &g, (saved, count), &dx),
        ),
        false => dispatch(
            #[inline(always)]
            || body::<F, P, I, O, 8>(p, range, n, &x, &g, (saved, count), &dx),
        ),
    })
}

/// Fewest elements a thread takes in a split loop: below it, waking a thread costs more than
/// the half it would run (a few µs).
const MIN_PER_THREAD: usize = 4096;

/// `run` over `0..rows`, in contiguous parts on the rayon pool's threads when there are enough
/// elements (`rows·n`) for each; deterministic, as every element is computed alone.
fn split_rows(rows: usize, n: usize, run: impl Fn(Range<usize>) + Sync) {
    let threads = rayon::current_num_threads();
    let parts = threads.min(rows).min(rows * n / MIN_PER_THREAD).max(1);
    if parts == 1 {
        return run(0..rows);
    }
    (0..parts)
        .into_par_iter()
        .for_each(|k| run(k * rows / parts..(k + 1) * rows / parts));
}

/// The block width of the loops (the `L` of [`Lanes`]), by level and direction: the widths that
/// ran fastest for an LSTM's gate math (`[64, 256]`, in cache) on a Zen 4, timed by
/// `crates/bench/examples/pointwise_kernels.rs` (docs/performance.md has the figures): the
/// forward 16 wide at AVX-512 and 8 at AVX2; the vector–Jacobian product, whose dual numbers
/// hold `I + 1` vectors each, 8.
fn lanes(backward: bool) -> usize {
    match (super::level(), backward) {
        (Level::Avx512, false) => 16,
        _ => 8,
    }
}

/// Calls `f(j, m)` for the blocks `[j, j + m)` of `0..n`, `m = L` but for the last.
#[inline(always)]
fn blocks<const L: usize>(n: usize, mut f: impl FnMut(usize, usize)) {
    let mut j = 0;
    while j < n {
        let m = L.min(n - j);
        f(j, m);
        j += m;
    }
}

/// Runs `f` compiled for the kernel level in use: the closure is inlined into a
/// `#[target_feature]` copy per level, so the user's math is compiled for each.
#[inline(always)]
fn dispatch(f: impl FnOnce()) {
    #[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn avx512(f: impl FnOnce()) {
        f()
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
    #[target_feature(enable = "avx2,fma")]
    fn avx2(f: impl FnOnce()) {
        f()
    }
    match super::level() {
        #[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
        // SAFETY: the level is at most what the CPU supports (`kernels::level`).
        Level::Avx512 => unsafe { avx512(f) },
        #[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
        // SAFETY: as above.
        Level::Avx2 => unsafe { avx2(f) },
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct LstmGates;
    impl Pointwise<5, 2> for LstmGates {
        #[inline]
        fn eval<R: Real>(&self, [i, f, g, o, c]: [R; 5]) -> [R; 2] {
            let c = f.sigmoid() * c + i.sigmoid() * g.tanh();
            [o.sigmoid() * c.tanh(), c]
        }
    }

    /// Every function's dual derivative against a central difference, in `f64`.
    #[test]
    fn dual_derivatives_match_differences() {
        type Fun = fn(Dual<f64, 1>) -> Dual<f64, 1>;
        let fs: [(&str, Fun); 9] = [
            ("sigmoid", |x| x.sigmoid()),
            ("tanh", |x| x.tanh()),
            ("exp", |x| x.exp()),
            ("ln", |x| (x * x + Real::of(0.5)).ln()),
            ("log_sigmoid", |x| x.log_sigmoid()),
            ("softplus", |x| x.softplus()),
            ("sqrt", |x| (x * x + Real::of(0.5)).sqrt()),
            ("relu", |x| x.relu() * x),
            ("quotient", |x| (x - Real::of(3.0)) / (x * x + Real::of(1.0))),
        ];
        for (name, f) in fs {
            for x in [-2.5, -0.7, 0.3, 1.9] {
                let d = f(Dual::variable(x, 0)).d[0];
                let h = 1e-6;
                let num = (f(Dual::of(x + h)).v - f(Dual::of(x - h)).v) / (2.0 * h);
                assert!(
                    (d - num).abs() < 1e-8 * (1.0 + num.abs()),
                    "{name} at {x}: {d} against {num}"
                );
            }
        }
        assert_eq!(Dual::<f64, 1>::variable(0.3, 0).step().d[0], 0.0);
    }

    /// The loops give what `eval` gives element by element (broadcast source included), and
    /// the VJP what the hand-written LSTM backward gives.
    #[test]
    fn forward_and_vjp_over_rows() {
        let (rows, n) = (3, 37);
        let val = |k: usize, s: f64| ((k as f64) * 0.61 + s).sin() * 2.0;
        let gates: Vec<f64> = (0..rows * 4 * n).map(|k| val(k, 0.2)).collect();
        let c0: Vec<f64> = (0..n).map(|k| val(k, 1.3)).collect(); // broadcast over rows
        let src = |i: usize| Source {
            data: &gates[i * n..],
            stride: 4 * n,
        };
        let c_src = Source {
            data: &c0[..],
            stride: 0,
        };
        let x = [src(0), src(1), src(2), src(3), c_src];
        let (mut h, mut c) = (vec![f64::NAN; rows * n], vec![f64::NAN; rows * n]);
        let count = memo_count(&LstmGates);
        assert_eq!(count, 5, "σi, σf, tanh g, σo, tanh c");
        let mut saved = vec![f64::NAN; rows * count * n];
        forward(&LstmGates, rows, n, x, [&mut h, &mut c], Some(&mut saved));
        let (mut h2, mut c2) = (vec![f64::NAN; rows * n], vec![f64::NAN; rows * n]);
        forward(&LstmGates, rows, n, x, [&mut h2, &mut c2], None);
        assert_eq!((&h, &c), (&h2, &c2), "saving changes no value");
        assert!(saved.iter().all(|v| v.is_finite()), "every saved value written");
        for r in 0..rows {
            for j in 0..n {
                let g = |i: usize| gates[r * 4 * n + i * n + j];
                let want = LstmGates.eval([g(0), g(1), g(2), g(3), c0[j]]);
                assert_eq!([h[r * n + j], c[r * n + j]], want);
            }
        }
        let dh: Vec<f64> = (0..rows * n).map(|k| val(k, 2.7)).collect();
        let dc: Vec<f64> = (0..rows * n).map(|k| val(k, 0.9)).collect();
        let gs = [
            Source {
                data: &dh[..],
                stride: n,
            },
            Source {
                data: &dc[..],
                stride: n,
            },
        ];
        let mut dgates = vec![f64::NAN; rows * 4 * n];
        let mut dc0 = vec![f64::NAN; rows * n]; // the broadcast input's per-row terms
        let mut targets = Target::parts(&mut dgates, rows, 4, n);
        targets.extend(Target::parts(&mut dc0, rows, 1, n));
        let targets: [Target<f64>; 5] = targets.try_into().unwrap_or_else(|_| unreachable!("five"));
        vjp(&LstmGates, rows, n, x, gs, &saved, targets);
        let dx = |i: usize, r: usize, j: usize| match i {
            4 => dc0[r * n + j],
            _ => dgates[r * 4 * n + i * n + j],
        };
        for r in 0..rows {
            for j in 0..n {
                let k = r * n + j;
                let g = |i: usize| gates[r * 4 * n + i * n + j];
                let s = |v: f64| 1.0 / (1.0 + (-v).exp());
                let (si, sf, tg, so) = (s(g(0)), s(g(1)), g(2).tanh(), s(g(3)));
                let c1 = sf * c0[j] + si * tg;
                let tc = c1.tanh();
                let dct = dc[k] + dh[k] * so * (1.0 - tc * tc);
                let want = [
                    dct * tg * si * (1.0 - si),
                    dct * c0[j] * sf * (1.0 - sf),
                    dct * si * (1.0 - tg * tg),
                    dh[k] * tc * so * (1.0 - so),
                    dct * sf,
                ];
                for i in 0..5 {
                    let got = dx(i, r, j);
                    assert!(
                        (got - want[i]).abs() < 1e-14,
                        "input {i} at {k}: {got} against {}",
                        want[i]
                    );
                }
            }
        }
    }
}
