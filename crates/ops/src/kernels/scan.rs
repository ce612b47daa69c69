//! The linear-recurrence scan `hₜ = aₜ ⊙ hₜ₋₁ + bₜ` over a whole sequence, and its log-space
//! form `sₜ = logaddexp(log aₜ + sₜ₋₁, log bₜ)` (`s = log h`) for positive recurrences.
//!
//! Arrays are row-major `[T, n]` (`n = B·H`, one row per time step) and the first state `[n]`.
//! Each step is a loop over the `n` lanes (vectorised, per instruction set); the steps run in
//! sequence. With more than one thread the work splits one of two ways:
//!
//! - **by lanes** when there are enough of them ([`MIN_LANES`] per thread): each thread runs the
//!   whole sequence on its own columns;
//! - **by time** otherwise (a small `B·H`, a long `T`): the chunked scan. The steps are cut into
//!   one chunk per thread; each chunk runs a local scan from the neutral state (`0`, or `−∞` in
//!   log space) while accumulating the product of its coefficients (`Π a`, or `Σ log a`); a
//!   sequential carry pass gives the state entering each chunk; a fix-up pass adds the carried
//!   state times the running coefficient product to every step of the chunk. The first chunk
//!   starts from the true first state and needs no fix-up.
//!
//! Both give the sequential result up to rounding (the chunked one multiplies coefficients in
//! another order).

use super::shared::Shared;
use super::steps::{prev_of, step_at};
use super::{madd, multiversion};
use eddy_tape::Float;
use rayon::prelude::*;

/// Which recurrence a scan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanForm {
    /// `hₜ = aₜ ⊙ hₜ₋₁ + bₜ`.
    Linear,
    /// `sₜ = logaddexp(αₜ + sₜ₋₁, βₜ)` with `α = log a`, `β = log b`, `s = log h`.
    Log,
}

/// How the work splits across threads; [`scan`] picks one from the shape and the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanSplit {
    /// One thread, step after step.
    Sequential,
    /// Each of `parts` threads runs every step on its own range of lanes.
    Lanes(usize),
    /// The chunked scan over time, in `parts` chunks.
    Chunks(usize),
}

/// The fewest lanes per thread worth a thread of their own.
pub const MIN_LANES: usize = 256;

/// The fewest elements (`T·n`) worth more than one thread.
pub const PAR_MIN: usize = 1 << 15;

/// `ln(eˣ + eʸ)`, exact at `−∞` (both `−∞` give `−∞`, not NaN).
#[inline(always)]
fn lae<F: Float>(x: F, y: F) -> F {
    let m = x.max(y);
    if m == F::neg_infinity() {
        return m;
    }
    m + (-(x - y).abs()).exp().ln_1p()
}

multiversion! {
    /// One linear step over a range of lanes: `out = a ⊙ prev + b`.
    fn linear_row<F: Float, const FMA: bool>(a: &[F], b: &[F], prev: &[F], out: &mut [F]) {
        for (((o, &a), &b), &p) in out.iter_mut().zip(a).zip(b).zip(prev) {
            *o = madd::<F, FMA>(a, p, b);
        }
    }
}

multiversion! {
    /// One log-space step over a range of lanes: `out = logaddexp(α + prev, β)`.
    fn log_row<F: Float, const FMA: bool>(alpha: &[F], beta: &[F], prev: &[F], out: &mut [F]) {
        for (((o, &a), &b), &p) in out.iter_mut().zip(alpha).zip(beta).zip(prev) {
            *o = lae(a + p, b);
        }
    }
}

multiversion! {
    /// The fix-up of one step of a chunk: `acc ⊙= a`, then `out += acc ⊙ carry` (linear), or
    /// `acc += α`, then `out = logaddexp(acc + carry, out)` (log space).
    fn fixup_row<F: Float, const FMA: bool>(form: ScanForm, a: &[F], acc: &mut [F], carry: &[F], out: &mut [F]) {
        match form {
            ScanForm::Linear => {
                for (((o, s), &a), &c) in out.iter_mut().zip(acc.iter_mut()).zip(a).zip(carry) {
                    *s *= a;
                    *o = madd::<F, FMA>(*s, c, *o);
                }
            }
            ScanForm::Log => {
                for (((o, s), &a), &c) in out.iter_mut().zip(acc.iter_mut()).zip(a).zip(carry) {
                    *s += a;
                    *o = lae(*s + c, *o);
                }
            }
        }
    }
}

multiversion! {
    /// A chunk's coefficient product, one step: `acc ⊙= a` (linear) or `acc += α` (log space).
    fn combine_row<F: Float, const FMA: bool>(form: ScanForm, a: &[F], acc: &mut [F]) {
        match form {
            ScanForm::Linear => acc.iter_mut().zip(a).for_each(|(s, &a)| *s *= a),
            ScanForm::Log => acc.iter_mut().zip(a).for_each(|(s, &a)| *s += a),
        }
    }
}

/// One step of `form` over a range of lanes.
fn step_row<F: Float>(form: ScanForm, a: &[F], b: &[F], prev: &[F], out: &mut [F]) {
    match form {
        ScanForm::Linear => linear_row(a, b, prev, out),
        ScanForm::Log => log_row(a, b, prev, out),
    }
}

/// The state that adds nothing: `0`, or `−∞` in log space.
fn neutral_state<F: Float>(form: ScanForm) -> F {
    match form {
        ScanForm::Linear => F::zero(),
        ScanForm::Log => F::neg_infinity(),
    }
}

/// The coefficient that changes nothing: `1`, or `0` in log space.
fn neutral_coefficient<F: Float>(form: ScanForm) -> F {
    match form {
        ScanForm::Linear => F::one(),
        ScanForm::Log => F::zero(),
    }
}

/// How [`scan`] splits `steps × n` elements across `threads` threads.
pub fn choose_split(steps: usize, n: usize, threads: usize) -> ScanSplit {
    if threads < 2 || steps * n < PAR_MIN {
        ScanSplit::Sequential
    } else if n >= threads * MIN_LANES {
        ScanSplit::Lanes(threads)
    } else if steps >= 4 * threads {
        ScanSplit::Chunks(threads)
    } else {
        ScanSplit::Sequential
    }
}

/// The scan of `form` over `a`, `b` (`[T, n]`) from `first` (`[n]`) into `out` (`[T, n]`), in
/// time order or, when `reverse`, from the last step to the first. Splits across the current
/// rayon pool as [`choose_split`] says.
///
/// # Panics
/// If the slices' lengths do not fit `[T, n]`, `[T, n]`, `[n]`, `[T, n]`.
pub fn scan<F: Float>(form: ScanForm, a: &[F], b: &[F], first: &[F], out: &mut [F], reverse: bool) {
    let n = first.len();
    let steps = out.len().checked_div(n).unwrap_or(0);
    let split = choose_split(steps, n, rayon::current_num_threads());
    scan_split(form, a, b, first, out, reverse, split);
}

/// [`scan`] with the split given (the tests run every split on every shape).
///
/// # Panics
/// As [`scan`], and for a split of 0 parts.
pub fn scan_split<F: Float>(
    form: ScanForm,
    a: &[F],
    b: &[F],
    first: &[F],
    out: &mut [F],
    reverse: bool,
    split: ScanSplit,
) {
    let n = first.len();
    assert!(
        a.len() == out.len() && b.len() == out.len() && (n == 0 || out.len().is_multiple_of(n)),
        "scan: a, b, out must be [T, n] for a first state [n]"
    );
    if n == 0 || out.is_empty() {
        return;
    }
    match split {
        ScanSplit::Sequential => sequential(form, a, b, first, out, reverse),
        ScanSplit::Lanes(parts) => by_lanes(form, a, b, first, out, reverse, parts),
        ScanSplit::Chunks(parts) => chunked(form, a, b, first, out, reverse, parts),
    }
}

/// The steps of `out` (`[T, n]`) one after another, each reading the one before or `first`.
fn sequential<F: Float>(form: ScanForm, a: &[F], b: &[F], first: &[F], out: &mut [F], reverse: bool) {
    let n = first.len();
    let steps = out.len() / n;
    for i in 0..steps {
        let t = step_at(i, steps, reverse);
        let row = t * n..(t + 1) * n;
        match prev_of(t, steps, reverse) {
            None => step_row(form, &a[row.clone()], &b[row.clone()], first, &mut out[row]),
            Some(p) => {
                let (out_t, prev) = block_and_prev(out, t, p, n);
                step_row(form, &a[row.clone()], &b[row], prev, out_t);
            }
        }
    }
}

/// Row `t` of `buf` (rows of `n`), mutable, and row `p`, shared (`p != t`): a step's output
/// and the state it reads (also the sequence ops').
pub(crate) fn block_and_prev<F>(buf: &mut [F], t: usize, p: usize, n: usize) -> (&mut [F], &[F]) {
    if p < t {
        let (before, after) = buf.split_at_mut(t * n);
        (&mut after[..n], &before[p * n..(p + 1) * n])
    } else {
        let (before, after) = buf.split_at_mut(p * n);
        (&mut before[t * n..(t + 1) * n], &after[..n])
    }
}

/// Each of `parts` tasks runs every step on its own range of the `n` lanes.
fn by_lanes<F: Float>(
    form: ScanForm,
    a: &[F],
    b: &[F],
    first: &[F],
    out: &mut [F],
    reverse: bool,
    parts: usize,
) {
    let n = first.len();
    let steps = out.len() / n;
    let shared = Shared::new(out);
    let shared = &shared;
    (0..parts).into_par_iter().for_each(|p| {
        let (c0, c1) = (n * p / parts, n * (p + 1) / parts);
        if c0 == c1 {
            return;
        }
        for i in 0..steps {
            let t = step_at(i, steps, reverse);
            let (lo, hi) = (t * n + c0, t * n + c1);
            // SAFETY: only this task touches columns `c0..c1` of any row; `prev` is another
            // row's columns `c0..c1`, written by this task at an earlier step and not borrowed
            // mutably while it is read. The tasks end before `by_lanes` returns, while `out` is
            // still borrowed. (`Shared` checks that the ranges lie inside `out`.)
            let out_t = unsafe { shared.slice_mut(lo, hi - lo) };
            let prev: &[F] = match prev_of(t, steps, reverse) {
                None => &first[c0..c1],
                // SAFETY: as above; row `q ≠ t`.
                Some(q) => unsafe { shared.slice(q * n + c0, c1 - c0) },
            };
            step_row(form, &a[lo..hi], &b[lo..hi], prev, out_t);
        }
    });
}

/// The chunked scan over time in `parts` chunks: local scans, a carry pass, a fix-up pass.
fn chunked<F: Float>(
    form: ScanForm,
    a: &[F],
    b: &[F],
    first: &[F],
    out: &mut [F],
    reverse: bool,
    parts: usize,
) {
    let n = first.len();
    let steps = out.len() / n;
    let parts = parts.clamp(1, steps);
    // Chunk k (in processing order) covers the time rows `bounds(k)`.
    let bounds = |k: usize| {
        let (i0, i1) = (steps * k / parts, steps * (k + 1) / parts);
        if reverse {
            (steps - i1, steps - i0)
        } else {
            (i0, i1)
        }
    };
    // Split `out` into the chunks' rows, in processing order.
    let mut chunks: Vec<&mut [F]> = Vec::with_capacity(parts);
    let mut rest = out;
    let mut ranges: Vec<(usize, usize)> = (0..parts).map(bounds).collect();
    ranges.sort();
    for &(lo, hi) in &ranges {
        let (head, tail) = rest.split_at_mut((hi - lo) * n);
        chunks.push(head);
        rest = tail;
    }
    if reverse {
        chunks.reverse();
        ranges.reverse();
    }
    let neutral = vec![neutral_state::<F>(form); n];
    // 1. Local scans (chunk 0 from the true first state), with each chunk's coefficient product.
    let products: Vec<Vec<F>> = chunks
        .par_iter_mut()
        .zip(ranges.par_iter())
        .enumerate()
        .map(|(k, (chunk, &(lo, hi)))| {
            let start = if k == 0 { first } else { &neutral[..] };
            let (ca, cb) = (&a[lo * n..hi * n], &b[lo * n..hi * n]);
            sequential(form, ca, cb, start, chunk, reverse);
            let mut acc = vec![neutral_coefficient::<F>(form); n];
            if k > 0 {
                for row in ca.chunks_exact(n) {
                    combine_row(form, row, &mut acc);
                }
            }
            acc
        })
        .collect();
    // 2. The carry pass: the state entering each chunk.
    let last_row = |chunk: &[F]| -> Vec<F> {
        let rows = chunk.len() / n;
        let r = if reverse { 0 } else { rows - 1 };
        chunk[r * n..(r + 1) * n].to_vec()
    };
    let mut carries: Vec<Vec<F>> = vec![Vec::new(); parts];
    let mut state = last_row(chunks[0]);
    for k in 1..parts {
        let local_end = last_row(chunks[k]);
        let mut next = vec![F::zero(); n];
        step_row(form, &products[k], &local_end, &state, &mut next);
        carries[k] = std::mem::replace(&mut state, next);
    }
    // 3. The fix-up: every step of chunks 1.. gains the carried state times the running product.
    chunks
        .par_iter_mut()
        .zip(ranges.par_iter())
        .zip(carries.par_iter())
        .skip(1)
        .for_each(|((chunk, &(lo, hi)), carry)| {
            let rows = hi - lo;
            let mut acc = vec![neutral_coefficient::<F>(form); n];
            for i in 0..rows {
                let r = step_at(i, rows, reverse);
                let coefficient = &a[(lo + r) * n..(lo + r + 1) * n];
                fixup_row(form, coefficient, &mut acc, carry, &mut chunk[r * n..(r + 1) * n]);
            }
        });
}

/// The gradients of a scan from the gradient `g` of its outputs (`[T, n]`), by the reverse
/// scan `Gₜ = gₜ + cₙₑₓₜ₍ₜ₎ ⊙ Gₙₑₓₜ₍ₜ₎` (the step after `t` in the scan's order), where the
/// coefficient `c` is `a` (linear) or the weight `w = exp(α + sₜ₋₁ − sₜ)` of the carried term
/// (log space). Returns `(da, db, dfirst)`:
///
/// - linear: `daₜ = Gₜ ⊙ hₜ₋₁`, `dbₜ = Gₜ`, `dfirst = a₁ ⊙ G₁`;
/// - log space: `dαₜ = Gₜ ⊙ wₜ`, `dβₜ = Gₜ ⊙ exp(βₜ − sₜ)`, `dfirst = w₁ ⊙ G₁`.
///
/// `out` is the scan's output (`h`, or `s`). The reverse scan splits across threads as the
/// forward one does.
pub fn scan_backward<F: Float>(
    form: ScanForm,
    a: &[F],
    b: &[F],
    first: &[F],
    out: &[F],
    g: &[F],
    reverse: bool,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let n = first.len();
    let steps = out.len().checked_div(n).unwrap_or(0);
    if steps == 0 {
        return (
            vec![F::zero(); a.len()],
            vec![F::zero(); b.len()],
            vec![F::zero(); n],
        );
    }
    let prev_row = |t: usize| match prev_of(t, steps, reverse) {
        None => first,
        Some(p) => &out[p * n..(p + 1) * n],
    };
    // The coefficient of the carried term at every step.
    let coefficient: Vec<F> = match form {
        ScanForm::Linear => a.to_vec(),
        ScanForm::Log => {
            let mut w = vec![F::zero(); a.len()];
            for t in 0..steps {
                let row = t * n..(t + 1) * n;
                let prev = prev_row(t);
                for (((w, &al), &s), &p) in w[row.clone()]
                    .iter_mut()
                    .zip(&a[row.clone()])
                    .zip(&out[row])
                    .zip(prev)
                {
                    *w = (al + p - s).exp();
                }
            }
            w
        }
    };
    // Step t's coefficient in the reverse scan is that of the step after it (none: 0).
    let mut shifted = vec![F::zero(); a.len()];
    for t in 0..steps {
        if let Some(next) = prev_of(t, steps, !reverse) {
            shifted[t * n..(t + 1) * n].copy_from_slice(&coefficient[next * n..(next + 1) * n]);
        }
    }
    let mut grad = vec![F::zero(); out.len()];
    scan(
        ScanForm::Linear,
        &shifted,
        g,
        &vec![F::zero(); n],
        &mut grad,
        !reverse,
    );
    let t0 = step_at(0, steps, reverse);
    let dfirst: Vec<F> = (0..n)
        .map(|i| coefficient[t0 * n + i] * grad[t0 * n + i])
        .collect();
    match form {
        ScanForm::Linear => {
            let mut da = vec![F::zero(); a.len()];
            for t in 0..steps {
                let row = t * n..(t + 1) * n;
                for ((d, &gr), &p) in da[row.clone()].iter_mut().zip(&grad[row]).zip(prev_row(t)) {
                    *d = gr * p;
                }
            }
            (da, grad, dfirst)
        }
        ScanForm::Log => {
            let da: Vec<F> = grad.iter().zip(&coefficient).map(|(&gr, &w)| gr * w).collect();
            let db: Vec<F> = grad
                .iter()
                .zip(b)
                .zip(out)
                .map(|((&gr, &be), &s)| gr * (be - s).exp())
                .collect();
            (da, db, dfirst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook loop, in f64.
    #[allow(clippy::needless_range_loop)]
    fn reference(form: ScanForm, a: &[f64], b: &[f64], first: &[f64], reverse: bool) -> Vec<f64> {
        let n = first.len();
        let steps = a.len() / n;
        let mut out = vec![0.0; a.len()];
        let mut h = first.to_vec();
        for i in 0..steps {
            let t = step_at(i, steps, reverse);
            for j in 0..n {
                let k = t * n + j;
                h[j] = match form {
                    ScanForm::Linear => a[k] * h[j] + b[k],
                    ScanForm::Log => {
                        let (x, y) = (a[k] + h[j], b[k]);
                        x.max(y) + (-(x - y).abs()).exp().ln_1p()
                    }
                };
                out[k] = h[j];
            }
        }
        out
    }

    fn values(len: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
        let mut rng = eddy_tape::Rng::seed(seed);
        (0..len).map(|_| rng.uniform_in(lo, hi)).collect()
    }

    #[test]
    fn every_split_gives_the_textbook_loop() {
        for (steps, n) in [(1, 1), (7, 3), (64, 5), (33, 600), (5, 1024)] {
            for form in [ScanForm::Linear, ScanForm::Log] {
                let (lo, hi) = match form {
                    ScanForm::Linear => (-1.0, 1.0),
                    ScanForm::Log => (-2.0, 0.5),
                };
                let a = values(steps * n, 1, lo, hi);
                let b = values(steps * n, 2, -1.0, 1.0);
                let first = values(n, 3, -1.0, 1.0);
                for reverse in [false, true] {
                    let want = reference(form, &a, &b, &first, reverse);
                    for split in [
                        ScanSplit::Sequential,
                        ScanSplit::Lanes(2),
                        ScanSplit::Lanes(3),
                        ScanSplit::Chunks(2),
                        ScanSplit::Chunks(5),
                    ] {
                        let mut out = vec![0.0; steps * n];
                        scan_split(form, &a, &b, &first, &mut out, reverse, split);
                        for (k, (g, w)) in out.iter().zip(&want).enumerate() {
                            assert!(
                                (g - w).abs() < 1e-12 * w.abs().max(1.0),
                                "{form:?} {split:?} T={steps} n={n} reverse={reverse} at {k}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_log_form_keeps_minus_infinity_finite_where_it_should() {
        // A −∞ first state and a −∞ β: the first steps are −∞, then β takes over; no NaN.
        let a = [0.0, 0.0, 0.0];
        let b = [f64::NEG_INFINITY, f64::NEG_INFINITY, 1.0];
        let mut out = [0.0; 3];
        scan(ScanForm::Log, &a, &b, &[f64::NEG_INFINITY], &mut out, false);
        assert_eq!(out, [f64::NEG_INFINITY, f64::NEG_INFINITY, 1.0]);
    }

    #[test]
    fn the_split_follows_the_shape_and_the_pool() {
        assert_eq!(choose_split(4096, 4096, 1), ScanSplit::Sequential);
        assert_eq!(choose_split(4096, 4096, 2), ScanSplit::Lanes(2));
        assert_eq!(choose_split(4096, 16, 2), ScanSplit::Chunks(2));
        assert_eq!(choose_split(10, 16, 2), ScanSplit::Sequential);
    }
}
