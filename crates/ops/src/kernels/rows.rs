//! Few-row products: a recurrent step at batch ≤ 4 (or a one-column product turned around),
//! where matrixmultiply would repack the whole weight or pad a register tile on every call.
//! Dot products against the contiguous rows of a weight, or updates by its rows; each kernel
//! compiled per instruction set (`multiversion!`), and the `f32` dot products at the AVX-512
//! and AVX2 levels written with intrinsics (`x86`), giving the same bits as the generic body.

#[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
use super::packed::{as_f32, as_f32_mut};
use super::{madd, multiversion};
use eddy_tape::Float;

/// Lanes of the partial sums in a dot product (a multiple of every SIMD width we target).
const LANES: usize = 16;

/// Below this many weights a few-row product stays on one thread.
const PAR_MIN_WEIGHTS: usize = 1 << 16;

/// Rows of `w` per block when [`gemv_rows_descending`] walks them backwards.
pub(crate) const DESCENDING_BLOCK: usize = 128;

/// `out[n] = α · x · w[n·k .. (n+1)·k] + β · out[n]` for every row of the row-major `w`,
/// four rows at a time so each load of `x` feeds four accumulators. In `f32` at the AVX-512
/// and AVX2 levels, a kernel written with intrinsics (the same sums in the same order, so the
/// same bits); otherwise the compiled-per-level [`gemv_rows_generic`].
pub fn gemv_rows<F: Float>(x: &[F], w: &[F], k: usize, out: &mut [F], alpha: F, beta: F) {
    #[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
    if let (Some(xs), Some(ws), Some(os)) = (as_f32(x), as_f32(w), as_f32_mut(out)) {
        let (alpha, beta) = (alpha.as_f64() as f32, beta.as_f64() as f32);
        match super::level() {
            // SAFETY: the level is at most what the CPU supports (`kernels::level`).
            super::Level::Avx512 => return unsafe { x86::gemv_rows_avx512(xs, ws, k, os, alpha, beta) },
            // SAFETY: as above.
            super::Level::Avx2 => return unsafe { x86::gemv_rows_avx2(xs, ws, k, os, alpha, beta) },
            super::Level::Portable => {}
        }
    }
    gemv_rows_generic(x, w, k, out, alpha, beta)
}

multiversion! {
    /// [`gemv_rows`] as plain Rust compiled for each level: the accumulation in `LANES`
    /// partial sums per row (fused multiply-adds where the level has them), reduced as a tree.
    pub fn gemv_rows_generic<F: Float, const FMA: bool>(x: &[F], w: &[F], k: usize, out: &mut [F], alpha: F, beta: F) {
        gemv_rows_body::<F, FMA>(x, w, k, out, alpha, beta)
    }
}

/// [`gemv_rows`] with the blocks of rows of `w` taken last to first. A recurrence alternates
/// the two from one step to the next, so the rows one step reads last (still in cache) are
/// the next step's first: a weight a little larger than the core's L2 (W6's 1 MiB `W_hh`)
/// is then partly read from L2 instead of all from L3. Each output is the same dot product
/// either way.
pub fn gemv_rows_descending<F: Float>(x: &[F], w: &[F], k: usize, out: &mut [F], alpha: F, beta: F) {
    let blocks = out.len().div_ceil(DESCENDING_BLOCK);
    for b in (0..blocks).rev() {
        let rows = b * DESCENDING_BLOCK..((b + 1) * DESCENDING_BLOCK).min(out.len());
        gemv_rows(
            x,
            &w[rows.start * k..rows.end * k],
            k,
            &mut out[rows],
            alpha,
            beta,
        );
    }
}

/// [`gemv_rows`]'s body, inlined into each level's copy.
#[inline(always)]
fn gemv_rows_body<F: Float, const FMA: bool>(x: &[F], w: &[F], k: usize, out: &mut [F], alpha: F, beta: F) {
    let dots = GenericDots::<F, FMA> { x: &x[..k], w, k };
    walk_rows(&dots, w.len(), k, out, alpha, beta);
}

/// The dot products of one input row with rows of a weight: what each level's few-row
/// product computes its own way, for the walk over the rows they share ([`walk_rows`]). The
/// methods are `#[inline(always)]`, so that the walk, inlined into a function compiled for a
/// level, compiles them for that level too (a closure there was compiled outside the level's
/// target features, and the generic level's multiply-adds became calls into libm).
trait RowDots<F> {
    /// The dot products with rows `r .. r + 4` (which lie within the weight).
    fn four(&self, r: usize) -> [F; 4];
    /// The dot product with row `r` (which lies within the weight).
    fn one(&self, r: usize) -> F;
}

/// `o = α · d + β · o`, with `o` not read when `β = 0` (so a NaN there does not pass through).
#[inline(always)]
fn put<F: Float>(o: &mut F, d: F, alpha: F, beta: F) {
    *o = if beta == F::zero() {
        alpha * d
    } else {
        beta * *o + alpha * d
    };
}

/// The walk of every level's [`gemv_rows`]: `out[r] = α · dots(r) + β · out[r]` for the rows of
/// the weight (`w_len / k` of them; every output when `k = 0`, where the dot product is empty
/// and 0), four rows at a time, then one by one.
#[inline(always)]
fn walk_rows<F: Float>(dots: &impl RowDots<F>, w_len: usize, k: usize, out: &mut [F], alpha: F, beta: F) {
    let Some(rows) = w_len.checked_div(k) else {
        out.iter_mut().for_each(|o| put(o, F::zero(), alpha, beta));
        return;
    };
    let n = out.len().min(rows);
    let quads = n / 4 * 4;
    for r in (0..quads).step_by(4) {
        for (o, d) in out[r..r + 4].iter_mut().zip(dots.four(r)) {
            put(o, d, alpha, beta);
        }
    }
    for (r, o) in out.iter_mut().enumerate().take(n).skip(quads) {
        put(o, dots.one(r), alpha, beta);
    }
}

/// The generic body's dot products ([`dot4`]), fused multiply-adds where `FMA`.
struct GenericDots<'a, F, const FMA: bool> {
    x: &'a [F],
    w: &'a [F],
    k: usize,
}

impl<F: Float, const FMA: bool> RowDots<F> for GenericDots<'_, F, FMA> {
    #[inline(always)]
    fn four(&self, r: usize) -> [F; 4] {
        let k = self.k;
        let rows = &self.w[r * k..(r + 4) * k];
        let (r0, r1, r2, r3) = (&rows[..k], &rows[k..2 * k], &rows[2 * k..3 * k], &rows[3 * k..]);
        dot4::<F, FMA>(self.x, [r0, r1, r2, r3])
    }

    #[inline(always)]
    fn one(&self, r: usize) -> F {
        let row = &self.w[r * self.k..(r + 1) * self.k];
        dot4::<F, FMA>(self.x, [row; 4])[0]
    }
}

/// Four dot products of `x` with rows `w`, each with `LANES` partial sums reduced as a tree.
#[inline(always)]
fn dot4<F: Float, const FMA: bool>(x: &[F], w: [&[F]; 4]) -> [F; 4] {
    let k = x.len();
    let [w0, w1, w2, w3] = w;
    let (w0, w1, w2, w3) = (&w0[..k], &w1[..k], &w2[..k], &w3[..k]);
    let (mut a0, mut a1, mut a2, mut a3) = (
        [F::zero(); LANES],
        [F::zero(); LANES],
        [F::zero(); LANES],
        [F::zero(); LANES],
    );
    let chunks = x
        .chunks_exact(LANES)
        .zip(w0.chunks_exact(LANES))
        .zip(w1.chunks_exact(LANES))
        .zip(w2.chunks_exact(LANES))
        .zip(w3.chunks_exact(LANES));
    for ((((xc, c0), c1), c2), c3) in chunks {
        for l in 0..LANES {
            a0[l] = madd::<F, FMA>(xc[l], c0[l], a0[l]);
            a1[l] = madd::<F, FMA>(xc[l], c1[l], a1[l]);
            a2[l] = madd::<F, FMA>(xc[l], c2[l], a2[l]);
            a3[l] = madd::<F, FMA>(xc[l], c3[l], a3[l]);
        }
    }
    let full = k / LANES * LANES;
    let finish = |mut a: [F; LANES], wr: &[F]| {
        let mut width = LANES / 2;
        while width > 0 {
            for l in 0..width {
                a[l] += a[l + width];
            }
            width /= 2;
        }
        (full..k).fold(a[0], |s, i| s + x[i] * wr[i])
    };
    [finish(a0, w0), finish(a1, w1), finish(a2, w2), finish(a3, w3)]
}

multiversion! {
    /// `c = α · a · b + β · c` for one row: `a` `[K]`, `b` row-major `[K, N]`, `c` `[N]`, as
    /// `K` updates of `c` by the rows of `b`.
    pub fn axpy_rows<F: Float, const FMA: bool>(alpha: F, a: &[F], b: &[F], beta: F, c: &mut [F]) {
        let n = c.len();
        if beta == F::zero() {
            c.fill(F::zero());
        } else if beta != F::one() {
            c.iter_mut().for_each(|v| *v *= beta);
        }
        for (&s, br) in a.iter().zip(b.chunks_exact(n.max(1))) {
            let s = alpha * s;
            let br = &br[..n];
            for i in 0..n {
                c[i] = madd::<F, FMA>(s, br[i], c[i]);
            }
        }
    }
}

/// [`gemv_rows`] split across the current rayon pool's threads when the weight matrix is large
/// enough to pay for it: each thread streams its own block of rows, which then stays in its
/// core's cache from one time step to the next. On one thread a large weight is walked in
/// alternate directions from one call to the next ([`gemv_rows_alternating`]).
pub fn gemv_rows_par<F: Float>(x: &[F], w: &[F], k: usize, out: &mut [F], alpha: F, beta: F) {
    let threads = rayon::current_num_threads();
    if w.len() < PAR_MIN_WEIGHTS {
        return gemv_rows(x, w, k, out, alpha, beta);
    }
    if threads < 2 || out.len() < 8 * threads {
        return gemv_rows_alternating(x, w, k, out, alpha, beta);
    }
    gemv_rows_split(x, w, k, out, alpha, beta, threads);
}

/// Weights (by address and length) this thread multiplied last, each with whether its next
/// product walks its rows last to first: a few, for a cell with several recurrent weights.
const REMEMBERED_WEIGHTS: usize = 8;

thread_local! {
    static DIRECTIONS: std::cell::RefCell<Vec<(usize, usize, bool)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`gemv_rows`] or [`gemv_rows_descending`], alternating from one call to the next for the
/// same weight `w` on this thread, so a recurrence's step after step walks `W_hh` forth and
/// back (the rows read last are still in cache when the next step starts) wherever it is
/// called from: a built-in sequence op or a user's cell calling `matmul_t` once per step. The
/// values are the same either way (each output is one dot product); only the order in which
/// the rows are read changes.
pub fn gemv_rows_alternating<F: Float>(x: &[F], w: &[F], k: usize, out: &mut [F], alpha: F, beta: F) {
    match walks_descending((w.as_ptr() as usize, w.len())) {
        true => gemv_rows_descending(x, w, k, out, alpha, beta),
        false => gemv_rows(x, w, k, out, alpha, beta),
    }
}

/// Whether this product by the weight `key` (its address and length) walks the rows last to
/// first on this thread: false the first time, then the opposite of the last time.
fn walks_descending(key: (usize, usize)) -> bool {
    DIRECTIONS.with(|d| {
        let mut d = d.borrow_mut();
        match d.iter().position(|&(p, n, _)| (p, n) == key) {
            Some(i) => {
                let e = d.remove(i);
                d.push((e.0, e.1, !e.2));
                e.2
            }
            None => {
                if d.len() == REMEMBERED_WEIGHTS {
                    d.remove(0);
                }
                d.push((key.0, key.1, true));
                false
            }
        }
    })
}

/// [`gemv_rows`] in `parts` blocks of rows (multiples of 4, for the four-row kernel), halved
/// recursively with `rayon::join`.
fn gemv_rows_split<F: Float>(x: &[F], w: &[F], k: usize, out: &mut [F], alpha: F, beta: F, parts: usize) {
    if parts < 2 {
        return gemv_rows(x, w, k, out, alpha, beta);
    }
    let left = parts / 2;
    let at = (out.len() * left / parts).next_multiple_of(4).min(out.len());
    let (o1, o2) = out.split_at_mut(at);
    let (w1, w2) = w.split_at(at * k);
    rayon::join(
        || gemv_rows_split(x, w1, k, o1, alpha, beta, left),
        || gemv_rows_split(x, w2, k, o2, alpha, beta, parts - left),
    );
}

/// The `f32` few-row products of the AVX-512 and AVX2 levels, written with intrinsics: LLVM's
/// code for the generic body reduced each row's 16 partial sums with a long chain of extracts
/// and shuffles (at AVX-512: 30–44 GFLOP/s against 37–48 for these, 4-row products with k 256
/// and a 1 MiB weight, Zen 4; see docs/performance.md, stop 38). Both accumulate and reduce in
/// the generic body's order, so they give the same bits as it does at their level.
#[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
mod x86 {
    use super::LANES;
    use std::arch::x86_64::*;

    /// The generic body's reduction of 16 partial sums, from its two halves (lanes 0–7 and
    /// 8–15): lane `l` plus lane `l + 8`, then `l + 4`, `l + 2`, `l + 1`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn reduce(lo: __m256, hi: __m256) -> f32 {
        let s8 = _mm256_add_ps(lo, hi);
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)))
    }

    /// The last `k % 16` terms of a row's dot product, one by one after the reduction (multiply,
    /// then add), as the generic body.
    #[inline(always)]
    fn tail(sum: f32, x: &[f32], row: &[f32], full: usize) -> f32 {
        (full..x.len()).fold(sum, |s, i| s + x[i] * row[i])
    }

    /// `ROWS` dot products of `x` (`k` long) with the rows starting at `w`, `k` apart, in 16-lane
    /// partial sums.
    ///
    /// # Safety
    /// `w` must hold `ROWS · k` elements; the CPU must have AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn dots_avx512<const ROWS: usize>(x: &[f32], w: *const f32, k: usize) -> [f32; ROWS] {
        let full = k / LANES * LANES;
        let mut acc = [_mm512_setzero_ps(); ROWS];
        for j in (0..full).step_by(LANES) {
            // SAFETY: `j + 16 ≤ k`, within `x` and within each row (the caller's promise).
            let xv = unsafe { _mm512_loadu_ps(x.as_ptr().add(j)) };
            for (q, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(xv, unsafe { _mm512_loadu_ps(w.add(q * k + j)) }, *a);
            }
        }
        std::array::from_fn(|q| {
            let lo = _mm512_castps512_ps256(acc[q]);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[q])));
            // SAFETY: row `q` holds `k` elements (the caller's promise).
            tail(
                reduce(lo, hi),
                x,
                unsafe { std::slice::from_raw_parts(w.add(q * k), k) },
                full,
            )
        })
    }

    /// [`dots_avx512`] with each row's 16 partial sums in two 8-lane registers.
    ///
    /// # Safety
    /// `w` must hold `ROWS · k` elements; the CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dots_avx2<const ROWS: usize>(x: &[f32], w: *const f32, k: usize) -> [f32; ROWS] {
        let full = k / LANES * LANES;
        let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
        for j in (0..full).step_by(LANES) {
            // SAFETY: `j + 16 ≤ k`, within `x` and within each row (the caller's promise).
            let (x0, x1) = unsafe {
                (
                    _mm256_loadu_ps(x.as_ptr().add(j)),
                    _mm256_loadu_ps(x.as_ptr().add(j + 8)),
                )
            };
            for (q, [a0, a1]) in acc.iter_mut().enumerate() {
                let r = unsafe { w.add(q * k + j) };
                *a0 = _mm256_fmadd_ps(x0, unsafe { _mm256_loadu_ps(r) }, *a0);
                *a1 = _mm256_fmadd_ps(x1, unsafe { _mm256_loadu_ps(r.add(8)) }, *a1);
            }
        }
        std::array::from_fn(|q| {
            // SAFETY: row `q` holds `k` elements (the caller's promise).
            tail(
                reduce(acc[q][0], acc[q][1]),
                x,
                unsafe { std::slice::from_raw_parts(w.add(q * k), k) },
                full,
            )
        })
    }

    /// The dot products of one level: [`dots_avx512`] where `AVX512`, else [`dots_avx2`]. Made
    /// only by `gemv_rows_avx512` and `gemv_rows_avx2`, whose callers promise the features.
    struct Dots<'a, const AVX512: bool> {
        x: &'a [f32],
        w: &'a [f32],
        k: usize,
    }

    impl<const AVX512: bool> Dots<'_, AVX512> {
        /// The dot products with rows `r .. r + ROWS` (which lie within `w`), by the level's
        /// kernel.
        #[inline(always)]
        fn rows<const ROWS: usize>(&self, r: usize) -> [f32; ROWS] {
            let p = self.w[r * self.k..(r + ROWS) * self.k].as_ptr();
            // SAFETY: `p` starts `ROWS` rows of `k` within `w`; the CPU has the level's
            // features (the promise of `gemv_rows_avx512` or `gemv_rows_avx2`, the only
            // callers).
            unsafe {
                match AVX512 {
                    true => dots_avx512::<ROWS>(self.x, p, self.k),
                    false => dots_avx2::<ROWS>(self.x, p, self.k),
                }
            }
        }
    }

    impl<const AVX512: bool> super::RowDots<f32> for Dots<'_, AVX512> {
        #[inline(always)]
        fn four(&self, r: usize) -> [f32; 4] {
            self.rows::<4>(r)
        }

        #[inline(always)]
        fn one(&self, r: usize) -> f32 {
            let [d] = self.rows::<1>(r);
            d
        }
    }

    /// [`super::gemv_rows`] for `f32` at the AVX-512 level.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn gemv_rows_avx512(
        x: &[f32],
        w: &[f32],
        k: usize,
        out: &mut [f32],
        alpha: f32,
        beta: f32,
    ) {
        let dots = Dots::<true> { x: &x[..k], w, k };
        super::walk_rows(&dots, w.len(), k, out, alpha, beta)
    }

    /// [`super::gemv_rows`] for `f32` at the AVX2 level.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemv_rows_avx2(
        x: &[f32],
        w: &[f32],
        k: usize,
        out: &mut [f32],
        alpha: f32,
        beta: f32,
    ) {
        let dots = Dots::<false> { x: &x[..k], w, k };
        super::walk_rows(&dots, w.len(), k, out, alpha, beta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|i| (i as f64 * 0.37 + seed).sin()).collect()
    }

    #[test]
    fn rows_walked_last_to_first_give_the_same_values_exactly() {
        for n in [
            1,
            5,
            DESCENDING_BLOCK,
            DESCENDING_BLOCK + 3,
            3 * DESCENDING_BLOCK - 1,
        ] {
            let (x, w) = (v(37, 0.1), v(n * 37, 0.2));
            for beta in [0.0, 1.0] {
                let c0 = v(n, 0.3);
                let (mut up, mut down) = (c0.clone(), c0.clone());
                gemv_rows(&x, &w, 37, &mut up, 1.5, beta);
                gemv_rows_descending(&x, &w, 37, &mut down, 1.5, beta);
                assert_eq!(up, down, "n {n} beta {beta}");
            }
        }
    }

    #[test]
    fn the_intrinsic_rows_give_the_generic_bodys_values_exactly() {
        // At the level this run is forced to (CI runs the suite once per level): AVX-512 and
        // AVX2 have intrinsic `f32` kernels, the portable level has none to compare.
        let level = crate::kernels::level();
        if level == crate::kernels::Level::Portable {
            eprintln!("skipped: the portable level has no intrinsic few-row kernel");
            return;
        }
        let f =
            |n: usize, seed: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect() };
        for (n, k) in [(1, 16), (4, 256), (7, 37), (1024, 256), (13, 5), (9, 0), (6, 300)] {
            let (x, w) = (f(k, 0.1), f(n * k, 0.2));
            for (alpha, beta) in [(1.0, 0.0), (1.5, 1.0), (0.5, -2.0)] {
                let c0 = f(n, 0.3);
                let (mut fast, mut generic) = (c0.clone(), c0.clone());
                gemv_rows(&x, &w, k, &mut fast, alpha, beta);
                gemv_rows_generic(&x, &w, k, &mut generic, alpha, beta);
                assert_eq!(fast, generic, "{level:?}: n {n} k {k} alpha {alpha} beta {beta}");
                if k == 0 {
                    let want: Vec<f32> = c0
                        .iter()
                        .map(|&c| if beta == 0.0 { 0.0 } else { beta * c })
                        .collect();
                    assert_eq!(fast, want, "an empty dot product is 0 (k 0, beta {beta})");
                }
            }
        }
    }

    #[test]
    fn every_level_walks_the_rows_the_weight_has() {
        // One walk for every level (`walk_rows`): with fewer rows in `w` than outputs, each row
        // `w` holds gets its dot product (quads, then single rows) and the outputs past them
        // keep their values, at whatever level this run is forced to.
        let k = 37;
        for rows in [0, 3, 6, 9] {
            let (x, w) = (v(k, 0.1), v(rows * k, 0.2));
            let mut out = vec![7.0; 11];
            gemv_rows(&x, &w, k, &mut out, 2.0, 0.0);
            for (r, o) in out.iter().enumerate() {
                let want = match r < rows {
                    true => 2.0 * (0..k).map(|i| x[i] * w[r * k + i]).sum::<f64>(),
                    false => 7.0,
                };
                assert!(
                    (o - want).abs() < 1e-12,
                    "rows {rows}, output {r}: {o} against {want}"
                );
            }
            // In `f32` (the intrinsic kernels at AVX-512 and AVX2): the generic body's bits.
            let (x32, w32): (Vec<f32>, Vec<f32>) = (
                x.iter().map(|&a| a as f32).collect(),
                w.iter().map(|&a| a as f32).collect(),
            );
            let (mut fast, mut generic) = (vec![7f32; 11], vec![7f32; 11]);
            gemv_rows(&x32, &w32, k, &mut fast, 2.0, 0.0);
            gemv_rows_generic(&x32, &w32, k, &mut generic, 2.0, 0.0);
            assert_eq!(fast, generic, "rows {rows}");
            assert!(fast[rows..].iter().all(|&o| o == 7.0), "rows {rows}");
        }
    }

    #[test]
    fn each_weight_alternates_its_own_direction() {
        // Two weights interleaved (a cell with two recurrent products), then more weights than
        // are remembered: the first one is forgotten and starts again ascending.
        let (a, b) = ((1, 10), (2, 10));
        let walks: Vec<bool> = [a, b, a, b, a].into_iter().map(walks_descending).collect();
        assert_eq!(walks, [false, false, true, true, false]);
        for i in 0..REMEMBERED_WEIGHTS {
            walks_descending((100 + i, 10));
        }
        assert!(!walks_descending(a), "forgotten, so ascending again");
        // The values do not depend on the direction: a weight above `PAR_MIN_WEIGHTS` on one
        // thread, so `gemv_rows_par` alternates.
        let (x, w) = (v(300, 0.1), v(300 * 300, 0.2));
        assert!(w.len() >= PAR_MIN_WEIGHTS);
        let mut want = vec![0.0; 300];
        gemv_rows(&x, &w, 300, &mut want, 1.0, 0.0);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        for _ in 0..3 {
            let mut got = vec![f64::NAN; 300];
            one.install(|| gemv_rows_par(&x, &w, 300, &mut got, 1.0, 0.0));
            assert_eq!(got, want);
        }
    }

    #[test]
    fn dot_products_and_row_updates_match_a_plain_loop() {
        for (k, n) in [(1, 1), (3, 5), (16, 4), (40, 33), (70, 9)] {
            let (x, w, c0) = (v(k, 0.1), v(n * k, 0.2), v(n, 0.3));
            for beta in [0.0, 1.0, 0.5] {
                let want: Vec<f64> = (0..n)
                    .map(|j| 1.5 * (0..k).map(|i| x[i] * w[j * k + i]).sum::<f64>() + beta * c0[j])
                    .collect();
                let mut dot = c0.clone();
                gemv_rows(&x, &w, k, &mut dot, 1.5, beta);
                // The same product as updates: w read as `[K, N]` is wᵀ's layout of another w.
                let wt: Vec<f64> = (0..k * n).map(|p| w[(p % n) * k + p / n]).collect();
                let mut upd = c0.clone();
                axpy_rows(1.5, &x, &wt, beta, &mut upd);
                for j in 0..n {
                    assert!((dot[j] - want[j]).abs() < 1e-12, "dot k {k} n {n} beta {beta}");
                    assert!((upd[j] - want[j]).abs() < 1e-12, "axpy k {k} n {n} beta {beta}");
                }
            }
        }
    }
}
