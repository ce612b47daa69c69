//! A weight's gradient over a sequence at the AVX-512 level: `c (+)= aᵀ·b` for `aᵀ` `[K, M]`
//! and `b` `[K, N]` row-major, `K` deep (steps × batch), `M` wide (a layer's gates) and `N`
//! narrower (its inputs or hidden units): `dW_ih = dGᵀ·x`, `dW_hh = Σₜ dGₜᵀ·hₜ₋₁`.
//!
//! `aᵀ` is the large operand (W9's `dG` is 32 MiB), read once from memory. The product is
//! computed as its transpose, `cᵀ = bᵀ·a`, by the packed kernel's AVX-512 tile
//! ([`super::packed`]): `KC` rows of `aᵀ` at a time are packed into column panels of `NR` (a
//! contiguous read of whole rows; the panels, half of L2, stay there), the same rows of `b`
//! are interleaved into blocks of the tile's 8 rows (`N·KC` values, few), and every panel passes
//! every block while it is in L1. `cᵀ` (`N·M`, small) is transposed into `c` at the end.
//!
//! matrixmultiply, which runs these products at the other levels, and the
//! packed kernel's own transposed path ([`super::packed::PackedMatrix::mul_transposed_into`],
//! kept for `N ≥ 512`, where it measured faster) both copy `aᵀ` in pieces a few values wide
//! out of rows `4·M` bytes apart. Measured on a Zen 4 core, one thread, best of five alternating
//! rounds (docs/performance.md, 2026-12-03), against matrixmultiply in GFLOP/s: W1's
//! `200×1568 · 1568×50` 81.5 against 75.9, W2's `1024×6336 · 6336×256` 102.8 against 97.6,
//! W9's `1024×8192 · 8192×128` 97.7 against 90.8. Where `aᵀ` is not much larger than L2,
//! matrixmultiply is faster ([`super::gemm`] sends only deeper products here).

use super::packed::{tile, Onto, MR_AVX512 as MR, NR};
use super::Level;

/// Rows of `aᵀ` per slice for a product `m` columns wide: the slice's panels take half of an L2
/// of `l2` bytes (a multiple of 8 rows, 16 to 512).
fn slice_rows(m: usize, l2: usize) -> usize {
    let row = 4 * m.div_ceil(NR) * NR;
    (l2 / 2 / row.max(1) / 8 * 8).clamp(16, 512)
}

/// Whether [`mul_tn`] runs here: the AVX-512 level chosen and available.
pub fn available() -> bool {
    super::level() == Level::Avx512 && Level::Avx512.is_available()
}

/// `c = aᵀ·b`, or `c += aᵀ·b` when `accumulate`, for `at` (`aᵀ`) row-major `[K, M]`, `b`
/// row-major `[K, N]` and `c` row-major `[M, N]`, in `f32` through the AVX-512 tile: see
/// [`mul_tn_rows`].
///
/// # Panics
/// If the lengths are not `K·M`, `K·N` and `M·N`, or the AVX-512 level is not
/// [`available`].
pub fn mul_tn(at: &[f32], b: &[f32], c: &mut [f32], (m, k, n): (usize, usize, usize), accumulate: bool) {
    assert!(
        at.len() == k * m && b.len() == k * n && c.len() == m * n,
        "aᵀ is [K, M], b is [K, N] and c is [M, N]"
    );
    assert!(available(), "deep::mul_tn runs at the AVX-512 level only");
    if m == 0 || n == 0 {
        return;
    }
    let at_rows: Vec<&[f32]> = at.chunks_exact(m).collect();
    let b_rows: Vec<&[f32]> = b.chunks_exact(n).collect();
    mul_tn_rows(&at_rows, &b_rows, c, (m, n), accumulate);
}

/// [`mul_tn`] with the `K` rows of `aᵀ` (`M` values each) and of `b` (`N` each) wherever they
/// are: a weight's gradient summed over a recurrence's steps, `Σₜ gₜᵀ·hₜ₋₁`, reads each step's
/// rows where the step left them, with no stacked copy.
///
/// A product of at least [`PAR_MIN_PRODUCT`](super::gemm::PAR_MIN_PRODUCT) multiply-adds is
/// split by rows of `K` across the current rayon pool's threads, each part summing into its
/// own `cᵀ` and the parts added in order: deterministic for a thread count, and a split that
/// costs little when the other threads are busy (a data-parallel shard's products). Split by
/// panels instead, each part interleaving all of `b` again, W2 and W9 measured 1–3% slower on
/// two threads than matrixmultiply's split.
///
/// # Panics
/// If `aᵀ` and `b` have different numbers of rows, a row of `aᵀ` is not `M` long or one of `b`
/// not `N`, `c` is not `M·N` long, or the AVX-512 level is not [`available`].
pub fn mul_tn_rows(at: &[&[f32]], b: &[&[f32]], c: &mut [f32], (m, n): (usize, usize), accumulate: bool) {
    let k = at.len();
    assert!(
        b.len() == k && c.len() == m * n && at.iter().all(|r| r.len() == m) && b.iter().all(|r| r.len() == n),
        "aᵀ is K rows of M, b is K rows of N and c is [M, N]"
    );
    assert!(available(), "deep::mul_tn runs at the AVX-512 level only");
    if m == 0 || n == 0 {
        return;
    }
    // cᵀ, `[N, M]` with rows `ld` apart, every value written by the first slice (all of them
    // zero when `K = 0`), one per part of `K`. The 16 extra columns keep the rows of a 16 × 16
    // block of the transpose below in different L1 sets when `4·M` is a multiple of 4 KiB.
    let ld = m + 16;
    let parts = match m * k * n >= super::gemm::PAR_MIN_PRODUCT {
        true => rayon::current_num_threads().clamp(1, k.max(1)),
        false => 1,
    };
    let part = |p: usize| {
        let rows = k * p / parts..k * (p + 1) / parts;
        let mut ct = vec![0f32; n * ld];
        // SAFETY: `ct` holds `N` rows of `ld ≥ M` values; the AVX-512 level is available
        // (asserted above).
        unsafe { tn_panels(&at[rows.clone()], &b[rows], &mut ct, ld, (m, n)) };
        ct
    };
    let cts: Vec<Vec<f32>> = match parts {
        1 => vec![part(0)],
        _ => {
            use rayon::prelude::*;
            (0..parts).into_par_iter().map(part).collect()
        }
    };
    // `c = Σ cᵀᵀ` in blocks of 16 × 16, so that neither side is read a column at a time.
    const B: usize = 16;
    for i0 in (0..m).step_by(B) {
        for j0 in (0..n).step_by(B) {
            for i in i0..(i0 + B).min(m) {
                let row = &mut c[i * n + j0..i * n + (j0 + B).min(n)];
                for (v, j) in row.iter_mut().zip(j0..) {
                    let s = cts.iter().fold(0.0, |s, ct| s + ct[j * ld + i]);
                    *v = if accumulate { *v + s } else { s };
                }
            }
        }
    }
}

/// `cᵀ = bᵀ·a` into `ct` (`[N, M]`, rows `ld` apart) for the rows of `aᵀ` (`M` long) and `b`
/// (`N` long), `KC` of them at a time.
///
/// # Safety
/// AVX-512F is available.
unsafe fn tn_panels(at: &[&[f32]], b: &[&[f32]], ct: &mut [f32], ld: usize, (m, n): (usize, usize)) {
    let k = at.len();
    let blocks = n.div_ceil(MR);
    let panel_count = m.div_ceil(NR);
    let kc_max = slice_rows(m, super::packed::small_b());
    let mut panels = vec![0f32; panel_count * kc_max * NR];
    let mut rows = vec![0f32; blocks * MR * kc_max];
    for k0 in (0..k).step_by(kc_max) {
        let kc = kc_max.min(k - k0);
        // Rows k0 .. k0 + kc of `aᵀ` into panels of `NR`, `kc·NR` each (a contiguous read); a
        // ragged last panel zero-padded.
        for kk in 0..kc {
            let row = at[k0 + kk];
            for (p, piece) in row.chunks(NR).enumerate() {
                let to = &mut panels[(p * kc + kk) * NR..][..NR];
                match <&[f32; NR]>::try_from(piece) {
                    // A whole piece: one fixed-size move, which the compiler inlines.
                    Ok(whole) => *<&mut [f32; NR]>::try_from(to).expect("NR long") = *whole,
                    Err(_) => {
                        to[..piece.len()].copy_from_slice(piece);
                        to[piece.len()..].fill(0.0);
                    }
                }
            }
        }
        // The same rows of `b` by blocks of `MR` columns, interleaved as the tile reads them
        // (each step's `MR` values together); past `N`, zeros.
        for kk in 0..kc {
            let row = b[k0 + kk];
            let mut pieces = row.chunks_exact(MR);
            for (blk, piece) in pieces.by_ref().enumerate() {
                let to = &mut rows[(blk * kc + kk) * MR..][..MR];
                *<&mut [f32; MR]>::try_from(to).expect("MR long") =
                    *<&[f32; MR]>::try_from(piece).expect("MR long");
            }
            let rest = pieces.remainder();
            if !rest.is_empty() {
                let to = &mut rows[((blocks - 1) * kc + kk) * MR..][..MR];
                to[..rest.len()].copy_from_slice(rest);
                to[rest.len()..].fill(0.0);
            }
        }
        let onto = if k0 == 0 { Onto::Zero } else { Onto::C };
        for p in 0..panel_count {
            let col = p * NR;
            let cols = NR.min(m - col);
            let panel = &panels[p * kc * NR..(p + 1) * kc * NR];
            for blk in 0..blocks {
                let here = MR.min(n - blk * MR);
                let a = &rows[blk * MR * kc..(blk + 1) * MR * kc];
                let start = blk * MR * ld + col;
                assert!(
                    start + (here - 1) * ld + cols <= ct.len(),
                    "the block lies inside cᵀ"
                );
                // SAFETY: AVX-512F is available (the caller's contract), so is the level's
                // tile; `a` holds `MR·kc` interleaved values and `panel` `kc·NR`; the tile's
                // block of `cᵀ` (rows blk·MR .. + here, columns col .. col + cols, rows `ld`
                // apart) lies inside `ct` (checked above).
                unsafe {
                    let c = ct.as_mut_ptr().add(start);
                    tile(Level::Avx512, (kc, 0), a, panel, c, ld, here, cols, onto)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_matrix;
    use ndarray::linalg::general_mat_mul;
    use ndarray::Array2;

    /// Every edge: `M` or `N` 0, `M` not a multiple of `NR` (a ragged last panel), `N` not a
    /// multiple of 8 (a ragged last block) or below it, `K` shorter than a slice, not a
    /// multiple of one, and 0; overwriting and accumulating.
    #[test]
    fn deep_products_match_matrixmultiply_at_every_edge() {
        if !available() {
            eprintln!("skipped: the AVX-512 level is not available on this CPU (or is forced lower)");
            return;
        }
        for (m, k, n) in [
            (0, 5, 3),
            (4, 5, 0),
            (1, 1, 1),
            (31, 5, 3),
            (40, 700, 9),
            (200, 1600, 50),
            (97, 1100, 64),
            (256, 300, 130),
            (64, 0, 8),
        ] {
            let at: Array2<f32> = test_matrix(k, m, 0.3);
            let b: Array2<f32> = test_matrix(k, n, 0.7);
            let c0: Array2<f32> = test_matrix(m, n, 0.1);
            for accumulate in [false, true] {
                let mut want = c0.mapv(f64::from);
                let beta = if accumulate { 1.0 } else { 0.0 };
                general_mat_mul(1.0, &at.mapv(f64::from).t(), &b.mapv(f64::from), beta, &mut want);
                let mut got = c0.clone();
                let (at, b) = (at.as_slice().unwrap(), b.as_slice().unwrap());
                mul_tn(at, b, got.as_slice_mut().unwrap(), (m, k, n), accumulate);
                let err = got
                    .iter()
                    .zip(want.iter())
                    .map(|(g, w)| (f64::from(*g) - w).abs() / (1.0 + w.abs()))
                    .fold(0.0, f64::max);
                assert!(err < 1e-5, "{m}x{k}x{n}, accumulate {accumulate}: {err}");
            }
        }
    }

    #[test]
    fn slices_take_half_of_l2() {
        // W9's dG (1024 columns) on a 1 MiB L2: 128 rows of 4 KiB; narrow parts cap at 512.
        assert_eq!(slice_rows(1024, 1 << 20), 128);
        assert_eq!(slice_rows(32, 1 << 20), 512);
        assert_eq!(slice_rows(100_000, 1 << 20), 16);
    }
}
