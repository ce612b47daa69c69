//! The GEMM every product goes through, by shape:
//! - a few rows (recurrent steps at small batch) or one column (a `Linear(…→1)` head): row
//!   kernels of our own, dot products or axpys on contiguous rows, where matrixmultiply would
//!   repack the whole weight matrix or pad a register tile on every call;
//! - in `f32` at the AVX2 or AVX-512 level, many rows by a weight that fits in cache: the
//!   packed kernel of [`super::packed`], the weight packed for the call;
//! - in `f32` at the AVX-512 level, a deep `aᵀ·b` (a weight's gradient over a sequence's
//!   rows): the packed kernel's transposed path, `b` packed for the call, or for a narrower `b`
//!   the product of [`super::deep`], `aᵀ` packed a slice of rows at a time;
//! - anything else: matrixmultiply (via ndarray's `general_mat_mul`), split across the rayon
//!   pool's threads when large.

use super::packed::{as_f32, as_f32_mut};
use super::rows::{axpy_rows, gemv_rows, gemv_rows_par};
use eddy_tape::{Error, Float, Result};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};

/// Up to this many rows of `a`, products use the row kernels of [`super::rows`].
pub const SMALL_ROWS: usize = 4;

/// `c = α·a·b + β·c` for `a` `[M, K]`, `b` `[K, N]`, `c` `[M, N]`. Transposed operands are
/// strided views, never transposed copies.
///
/// # Errors
/// [`Error::MatmulInner`] if `a`'s columns are not `b`'s rows, [`Error::Shape`] if `c` is not
/// `[M, N]`.
pub fn gemm<F: Float>(
    alpha: F,
    a: &ArrayView2<F>,
    b: &ArrayView2<F>,
    beta: F,
    c: &mut ArrayViewMut2<F>,
) -> Result<()> {
    if a.ncols() != b.nrows() {
        return Err(Error::MatmulInner {
            op: "gemm".into(),
            lhs: a.shape().to_vec(),
            rhs: b.shape().to_vec(),
        });
    }
    if c.dim() != (a.nrows(), b.ncols()) {
        return Err(Error::shape(
            "gemm",
            &[a.shape(), b.shape(), c.shape()],
            "c must be [rows of a, columns of b]",
        ));
    }
    gemm_unchecked(alpha, a, b, beta, c);
    Ok(())
}

/// [`gemm`] for operands whose shapes the caller has checked (an op's shape rule did).
pub(crate) fn gemm_unchecked<F: Float>(
    alpha: F,
    a: &ArrayView2<F>,
    b: &ArrayView2<F>,
    beta: F,
    c: &mut ArrayViewMut2<F>,
) {
    debug_assert!(a.ncols() == b.nrows() && c.dim() == (a.nrows(), b.ncols()));
    if c.ncols() == 1 && c.nrows() > SMALL_ROWS && a.ncols() > 0 {
        // One column (a `Linear(…→1)` head, or a weight gradient against a 1-wide input), where
        // matrixmultiply pads to a full register tile: `cᵀ = bᵀ·aᵀ` has one row, which the row
        // kernels compute as dot products with the rows of `a` (or updates by its columns).
        return gemm_unchecked(alpha, &b.t(), &a.t(), beta, &mut c.view_mut().reversed_axes());
    }
    if a.nrows() <= SMALL_ROWS && a.ncols() > 0 && c.ncols() > 0 {
        let k = a.ncols();
        // b = Wᵀ with W row-major `[N, K]`: c[m, n] = a[m, :] · W[n, :], contiguous dot products.
        let wt = b.t();
        if let Some(w) = wt.as_slice() {
            for m in 0..a.nrows() {
                let ar = a.row(m);
                let ar = ar.as_slice().map_or_else(
                    || std::borrow::Cow::Owned(ar.to_vec()),
                    std::borrow::Cow::Borrowed,
                );
                let mut crow = c.row_mut(m);
                match crow.as_slice_mut() {
                    Some(cs) => gemv_rows_par(&ar, w, k, cs, alpha, beta),
                    None => {
                        let mut tmp = crow.to_vec();
                        gemv_rows(&ar, w, k, &mut tmp, alpha, beta);
                        crow.iter_mut().zip(tmp).for_each(|(d, v)| *d = v);
                    }
                }
            }
            return;
        }
        // b row-major `[K, N]`: c[m, :] = Σ_k a[m, k] · b[k, :], contiguous row updates.
        if let (Some(bs), true) = (b.as_slice(), c.is_standard_layout()) {
            let n = b.ncols();
            for m in 0..a.nrows() {
                let mut crow = c.row_mut(m);
                let cs = crow
                    .as_slice_mut()
                    .expect("rows of a standard-layout matrix are contiguous");
                let ar = a.row(m);
                let ar = ar.as_slice().map_or_else(
                    || std::borrow::Cow::Owned(ar.to_vec()),
                    std::borrow::Cow::Borrowed,
                );
                axpy_rows(alpha, &ar, &bs[..a.ncols() * n], beta, cs);
            }
            return;
        }
    }
    if packed_gemm(alpha, a, b, beta, c) {
        return;
    }
    let threads = rayon::current_num_threads();
    if threads >= 2 && a.nrows() * a.ncols() * b.ncols() >= PAR_MIN_PRODUCT {
        return gemm_par(alpha, a, b, beta, c, threads);
    }
    general_mat_mul(alpha, a, b, beta, c);
}

/// From this many rows a product may take the packed kernel (below, packing `b` for the call
/// costs more than the kernel gains: a user cell's 64-row step product measured 77 against
/// matrixmultiply's 82 GFLOP/s).
pub(crate) const PACKED_MIN_ROWS: usize = 128;
/// From this many columns (a `Linear(…→1)` head has one, and the row kernels take it).
const PACKED_MIN_COLS: usize = 16;

/// From this depth `K` and this many columns a product `aᵀ·b` may take the packed kernel's
/// transposed path. Measured on an Intel Xeon in alternating runs (2026-12-02): W4's weight
/// gradients (`N` 512 and 1024) 12–13% faster than matrixmultiply and W4 ~5%; W2's (`N` 128,
/// 256) level, and W8 (`N` 256, `K` 65536) 3–7% slower, hence the bound on `N`.
const TRANSPOSED_MIN_K: usize = 512;
/// See [`TRANSPOSED_MIN_K`].
const TRANSPOSED_MIN_N: usize = 512;
/// From this many columns (and [`DEEP_MIN_K`] deep) a product `aᵀ·b` narrower than
/// [`TRANSPOSED_MIN_N`] takes [`super::deep::mul_tn`] at the AVX-512 level. Measured on a
/// Zen 4 core (docs/performance.md, 2026-12-03): 5–8% faster than matrixmultiply at `N`
/// 50–256 and `K` 1568–8192 on one thread, 3–12% on two, and level to slower below 32
/// columns.
const DEEP_MIN_N: usize = 32;
/// See [`DEEP_MIN_N`]. Less deep, `aᵀ` (`K·M` values) is in L2 or nearly, matrixmultiply's
/// packing of it is cheap and its kernel faster: `256×1024 · 1024×64` at 105 GFLOP/s against
/// 97, `1024×512 · 512×256` at 100 against 88 (sLSTM's chunked `dW_hh` is such products).
const DEEP_MIN_K: usize = 1536;
/// Why a slice is one of `f32` in [`packed_gemm`]: it runs only where the packed kernel does.
const F32: &str = "the packed kernel runs only for f32";

/// `c = a·b` or `c += a·b` in `f32` where the packed kernel runs ([`super::packed`]), `b`
/// packed for this call; returns whether it ran. Only for a row-major `c`, `α = 1`, `β` 0 or 1
/// and at least [`PACKED_MIN_ROWS`] rows, and then:
/// - `a` the transpose of a row-major matrix, at the AVX-512 level, at least
///   [`TRANSPOSED_MIN_N`] columns and [`TRANSPOSED_MIN_K`] deep: a weight's gradient `gᵀ·x`
///   over a sequence's rows, through
///   [`super::packed::PackedMatrix::mul_transposed_into`] (on an Intel Xeon matrixmultiply ran
///   these at 87–107 GFLOP/s, half of the core's FMA peak; docs/performance.md, 2026-12-02);
/// - the same with `b` row-major and [`DEEP_MIN_N`] to [`TRANSPOSED_MIN_N`] columns (`dW_ih`,
///   `dW_hh` of hidden sizes 50–256): through [`super::deep::mul_tn`], which reads `aᵀ` in
///   whole rows;
/// - `a` row-major and a `b` that fits in cache, the rows of `a` read where they are: the
///   layers' input projections and input gradients, 86–109 GFLOP/s against matrixmultiply's
///   60–108 (`gemm` rows of docs/performance.md; W4's 8 MiB input weight measured slower than
///   matrixmultiply, whose blocking is fuller).
fn packed_gemm<F: Float>(
    alpha: F,
    a: &ArrayView2<F>,
    b: &ArrayView2<F>,
    beta: F,
    c: &mut ArrayViewMut2<F>,
) -> bool {
    let plain = alpha == F::one() && (beta == F::zero() || beta == F::one());
    let (m, k, n) = (c.nrows(), a.ncols(), c.ncols());
    if !(plain && m >= PACKED_MIN_ROWS && k > 0 && super::packed::packed_kernel_available::<F>()) {
        return false;
    }
    let accumulate = beta == F::one();
    let Some(c) = c.as_slice_mut() else {
        return false;
    };
    let at = a.t();
    let wide = n >= TRANSPOSED_MIN_N && k >= TRANSPOSED_MIN_K && super::level() == super::Level::Avx512;
    if let (true, Some(at)) = (wide, at.as_slice()) {
        return super::packed::PackedMatrix::new(b).mul_transposed_into(at, c, accumulate);
    }
    if let (true, Some(at), Some(b)) = (takes_deep(m, k, n), at.as_slice(), b.as_slice()) {
        let (at, b, c) = (as_f32(at), as_f32(b), as_f32_mut(c));
        let (at, b, c) = (at.expect(F32), b.expect(F32), c.expect(F32));
        super::deep::mul_tn(at, b, c, (m, k, n), accumulate);
        return true;
    }
    let fits = n >= PACKED_MIN_COLS && 4 * k * n <= super::packed::small_b();
    if let (true, Some(a)) = (fits, a.as_slice()) {
        super::packed::PackedMatrix::new(b).mul_into(a, c, accumulate);
        return true;
    }
    false
}

/// Whether an `f32` product `aᵀ·b` (`[M, K]·[K, N]`, `aᵀ` and `b` row-major, `α = 1`, `β` 0
/// or 1) runs through [`super::deep`]: at the AVX-512 level, at least [`PACKED_MIN_ROWS`] rows,
/// [`DEEP_MIN_N`] up to [`TRANSPOSED_MIN_N`] columns and [`DEEP_MIN_K`] deep.
pub(crate) fn takes_deep(m: usize, k: usize, n: usize) -> bool {
    m >= PACKED_MIN_ROWS
        && (DEEP_MIN_N..TRANSPOSED_MIN_N).contains(&n)
        && k >= DEEP_MIN_K
        && super::deep::available()
}

/// `Σᵢ lhsᵢᵀ·rhsᵢ` (`[rᵢ, M]ᵀ·[rᵢ, N]`, a weight's gradient summed over a recurrence's steps)
/// through [`super::deep::mul_tn_rows`], each term's rows read where they are, when the
/// stacked product would take [`super::deep`] ([`takes_deep`]) and every term is in standard
/// layout; else `None` (stack the rows and call [`gemm`]).
pub(crate) fn tn_terms<F: Float>(lhs: &[ArrayView2<'_, F>], rhs: &[ArrayView2<'_, F>]) -> Option<Vec<F>> {
    let (m, n) = (lhs.first()?.ncols(), rhs.first()?.ncols());
    let k: usize = lhs.iter().map(|v| v.nrows()).sum();
    if lhs.len() != rhs.len() || !takes_deep(m, k, n) || !super::packed::packed_kernel_available::<F>() {
        return None;
    }
    let (at, b) = (term_rows(lhs, m, k)?, term_rows(rhs, n, k)?);
    if at.len() != b.len() {
        return None;
    }
    let mut c = vec![F::zero(); m * n];
    super::deep::mul_tn_rows(&at, &b, as_f32_mut(&mut c)?, (m, n), false);
    Some(c)
}

/// The rows (`width` values each, `k` in all) of `views` in standard layout, as `f32` slices;
/// `None` if a view is strided or `F` is not `f32`.
fn term_rows<'a, F: Float>(views: &[ArrayView2<'a, F>], width: usize, k: usize) -> Option<Vec<&'a [f32]>> {
    let mut out = Vec::with_capacity(k);
    for v in views {
        let s: &'a [F] = v.to_slice()?;
        out.extend(as_f32(s)?.chunks_exact(width.max(1)));
    }
    Some(out)
}

/// From this many multiply-adds (`m·k·n`, ~50 µs on one core) a product is split across the
/// current rayon pool's threads.
pub const PAR_MIN_PRODUCT: usize = 1 << 22;

/// `c = α·a·b + β·c` split into `parts` blocks run on the rayon pool: by rows of `a` and `c`
/// when `c` is taller than wide, else by columns of `b` and `c` (so no operand is packed twice
/// over). Each block is an ordinary matrixmultiply call; the blocks write disjoint parts of `c`.
fn gemm_par<F: Float>(
    alpha: F,
    a: &ArrayView2<F>,
    b: &ArrayView2<F>,
    beta: F,
    c: &mut ArrayViewMut2<F>,
    parts: usize,
) {
    let (m, n) = (c.nrows(), c.ncols());
    if parts < 2 || (m < 2 && n < 2) {
        return general_mat_mul(alpha, a, b, beta, c);
    }
    let (left, right) = (parts / 2, parts - parts / 2);
    let c2 = c.view_mut();
    if m >= n {
        let at = m * left / parts;
        let (a1, a2) = a.view().split_at(Axis(0), at);
        let (mut c1, mut c2) = c2.split_at(Axis(0), at);
        rayon::join(
            || gemm_par(alpha, &a1, b, beta, &mut c1, left),
            || gemm_par(alpha, &a2, b, beta, &mut c2, right),
        );
    } else {
        let at = n * left / parts;
        let (b1, b2) = b.view().split_at(Axis(1), at);
        let (mut c1, mut c2) = c2.split_at(Axis(1), at);
        rayon::join(
            || gemm_par(alpha, a, &b1, beta, &mut c1, left),
            || gemm_par(alpha, a, &b2, beta, &mut c2, right),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_matrix;
    use ndarray::Array2;

    /// The shared test matrix in `f64`, the type of most tests here.
    fn m(r: usize, c: usize, seed: f64) -> Array2<f64> {
        test_matrix(r, c, seed)
    }

    fn gemm<F: Float>(alpha: F, a: &ArrayView2<F>, b: &ArrayView2<F>, beta: F, c: &mut ArrayViewMut2<F>) {
        super::gemm(alpha, a, b, beta, c).unwrap()
    }

    #[test]
    fn the_threaded_row_kernel_matches_on_one_and_two_threads() {
        let (k, n) = (300, 301); // above PAR_MIN_WEIGHTS, and n not a multiple of the blocks
        let a = m(1, k, 0.5);
        let w = m(n, k, 0.6);
        let mut slow = Array2::<f64>::zeros((1, n));
        general_mat_mul(1.0, &a.view(), &w.t(), 0.0, &mut slow.view_mut());
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut fast = Array2::<f64>::zeros((1, n));
            pool.install(|| gemm(1.0, &a.view(), &w.t(), 0.0, &mut fast.view_mut()));
            let err = (&fast - &slow).iter().fold(0.0f64, |e, v| e.max(v.abs()));
            assert!(err < 1e-12, "{threads} threads: {err}");
        }
    }

    #[test]
    fn large_products_split_across_threads_match_one_thread() {
        // Taller than wide (split by rows), wider than tall (split by columns), transposed views.
        for (mm, k, n) in [(300, 120, 130), (70, 150, 410)] {
            let a = m(mm, k, 0.1);
            let b = m(n, k, 0.2);
            for threads in [2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let c0 = m(mm, n, 0.3);
                let mut slow = c0.clone();
                general_mat_mul(1.5, &a.view(), &b.t(), 0.5, &mut slow.view_mut());
                let mut fast = c0.clone();
                pool.install(|| gemm(1.5, &a.view(), &b.t(), 0.5, &mut fast.view_mut()));
                assert!(mm * k * n >= PAR_MIN_PRODUCT);
                let err = (&fast - &slow).iter().fold(0.0f64, |e, v| e.max(v.abs()));
                assert!(err < 1e-12, "{mm}x{k}x{n} on {threads} threads: {err}");
            }
        }
    }

    #[test]
    fn f32_products_with_many_rows_match_matrixmultiply_in_every_layout() {
        let f = test_matrix::<f32>;
        // Through the packed kernel where it runs (rows ≥ PACKED_MIN_ROWS, ragged panels and
        // row blocks, more rows than one chunk of `a`), else through matrixmultiply.
        for (rows, k, n) in [(PACKED_MIN_ROWS, 50, 200), (1003, 70, 33), (300, 257, 17)] {
            let a = f(rows, k, 0.1);
            let (w, b) = (f(n, k, 0.2), f(k, n, 0.3));
            for bv in [w.t(), b.view()] {
                for beta in [0.0f32, 1.0] {
                    let c0 = f(rows, n, 0.4);
                    let mut fast = c0.clone();
                    gemm(1.0, &a.view(), &bv, beta, &mut fast.view_mut());
                    let mut slow = c0.clone();
                    general_mat_mul(1.0, &a.view(), &bv, beta, &mut slow.view_mut());
                    let err = (&fast - &slow)
                        .iter()
                        .zip(&slow)
                        .fold(0.0f32, |e, (d, s)| e.max(d.abs() / (1.0 + s.abs())));
                    assert!(err < 1e-5, "{rows}x{k}·{k}x{n} beta {beta}: {err}");
                }
            }
        }
    }

    #[test]
    fn deep_transposed_f32_products_match_matrixmultiply() {
        // `aᵀ·b` with `aᵀ` row-major (a weight's gradient): at AVX-512 (deep enough) the
        // transposed packed path (wide), `deep::mul_tn` (narrower), else matrixmultiply; on one
        // and two threads.
        if super::super::level() != super::super::Level::Avx512 {
            println!(
                "skipped: the transposed packed path and deep::mul_tn (the kernel level is not AVX-512)"
            );
        }
        let f = test_matrix::<f32>;
        let (rows, k) = (PACKED_MIN_ROWS + 3, DEEP_MIN_K.max(TRANSPOSED_MIN_K) + 77);
        for n in [TRANSPOSED_MIN_N + 5, DEEP_MIN_N + 3, DEEP_MIN_N - 1] {
            let at = f(k, rows, 0.1);
            let b = f(k, n, 0.2);
            for (beta, threads) in [(0.0f32, 1), (1.0, 1), (0.0, 2), (1.0, 2)] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let c0 = f(rows, n, 0.4);
                let mut fast = c0.clone();
                pool.install(|| gemm(1.0, &at.t(), &b.view(), beta, &mut fast.view_mut()));
                let mut slow = c0.clone();
                general_mat_mul(1.0, &at.t(), &b.view(), beta, &mut slow.view_mut());
                let err = (&fast - &slow)
                    .iter()
                    .zip(&slow)
                    .fold(0.0f32, |e, (d, s)| e.max(d.abs() / (1.0 + s.abs())));
                assert!(err < 1e-4, "n {n}, beta {beta}, {threads} threads: {err}");
            }
        }
    }

    #[test]
    fn one_column_products_match_matrixmultiply_in_every_layout() {
        for (rows, k) in [(5, 3), (37, 40), (300, 17)] {
            let a = m(rows, k, 0.1);
            let at = m(k, rows, 0.2); // used as atᵀ (a weight gradient's gᵀ)
            let w = m(1, k, 0.3); // used as wᵀ (a Linear(k→1) head)
            let b = m(k, 1, 0.4);
            for (av, bv) in [
                (a.view(), w.t()),
                (a.view(), b.view()),
                (at.t(), w.t()),
                (at.t(), b.view()),
            ] {
                for beta in [0.0, 1.0, 0.5] {
                    let c0 = m(rows, 1, 0.5);
                    let mut fast = c0.clone();
                    gemm(1.5, &av, &bv, beta, &mut fast.view_mut());
                    let mut slow = c0.clone();
                    general_mat_mul(1.5, &av, &bv, beta, &mut slow.view_mut());
                    let err = (&fast - &slow).iter().fold(0.0f64, |e, v| e.max(v.abs()));
                    assert!(err < 1e-12, "rows {rows} k {k} beta {beta}: {err}");
                }
            }
        }
    }

    #[test]
    fn small_row_kernels_match_matrixmultiply_in_every_layout() {
        for rows in [1, 2, 4, 5] {
            for (k, n) in [(3, 5), (40, 33), (17, 1)] {
                let a = m(rows, k, 0.1);
                let w = m(n, k, 0.2); // used as wᵀ
                let b = m(k, n, 0.3); // used as is
                for (bv, name) in [(w.t(), "dot"), (b.view(), "axpy")] {
                    for beta in [0.0, 1.0, 0.5] {
                        let c0 = m(rows, n, 0.4);
                        let mut fast = c0.clone();
                        gemm(1.5, &a.view(), &bv, beta, &mut fast.view_mut());
                        let mut slow = c0.clone();
                        general_mat_mul(1.5, &a.view(), &bv, beta, &mut slow.view_mut());
                        let err = (&fast - &slow).iter().fold(0.0f64, |e, v| e.max(v.abs()));
                        assert!(err < 1e-12, "{name} rows {rows} k {k} n {n} beta {beta}: {err}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod checks {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn mismatched_dimensions_are_errors_naming_the_shapes() {
        let (a, b) = (Array2::<f32>::zeros((2, 3)), Array2::<f32>::zeros((4, 5)));
        let mut c = Array2::<f32>::zeros((2, 5));
        let e = gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut()).unwrap_err();
        assert!(
            e.to_string().contains("[2, 3]") && e.to_string().contains("[4, 5]"),
            "{e}"
        );
        let b = Array2::<f32>::zeros((3, 5));
        let mut c = Array2::<f32>::zeros((2, 4));
        let e = gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut()).unwrap_err();
        assert!(
            e.to_string().contains("gemm") && e.to_string().contains("[2, 4]"),
            "{e}"
        );
    }
}
