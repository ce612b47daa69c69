//! The GEMM every product goes through: matrixmultiply (via ndarray's `general_mat_mul`), plus
//! kernels of our own for the few-row products of recurrent steps at small batch, where
//! matrixmultiply repacks the whole weight matrix on every call.

use eddy_tape::Float;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};

/// Up to this many rows of `a`, products use the row kernels below.
const SMALL_ROWS: usize = 4;

/// Lanes of the partial sums in a dot product (a multiple of every SIMD width we target).
const LANES: usize = 16;

/// `c = α·a·b + β·c`. Transposed operands are strided views; nothing is copied.
pub fn gemm<F: Float>(alpha: F, a: &ArrayView2<F>, b: &ArrayView2<F>, beta: F, c: &mut ArrayViewMut2<F>) {
    if a.nrows() <= SMALL_ROWS && a.ncols() > 0 {
        if let Some(a_rows) = rows(a) {
            // b = Wᵀ with W row-major: c[m, n] = a[m, :] · W[n, :], contiguous dot products.
            if let (Some(w), true) = (rows(&b.t()), c.ncols() > 0) {
                for (m, ar) in a_rows.iter().enumerate() {
                    for (n, wr) in w.iter().enumerate() {
                        let v = alpha * dot(ar, wr);
                        let cv = &mut c[[m, n]];
                        *cv = if beta == F::zero() { v } else { beta * *cv + v };
                    }
                }
                return;
            }
            // b row-major: c[m, :] = Σ_k a[m, k] · b[k, :], contiguous row updates.
            if let Some(b_rows) = rows(b) {
                for (m, ar) in a_rows.iter().enumerate() {
                    let mut crow = c.index_axis_mut(Axis(0), m);
                    if let Some(cs) = crow.as_slice_mut() {
                        if beta == F::zero() {
                            cs.fill(F::zero());
                        } else if beta != F::one() {
                            cs.iter_mut().for_each(|v| *v *= beta);
                        }
                        for (&s, br) in ar.iter().zip(&b_rows) {
                            axpy(alpha * s, br, cs);
                        }
                        continue;
                    }
                    // A strided output row: fall back for the whole product.
                    general_mat_mul(alpha, a, b, beta, c);
                    return;
                }
                return;
            }
        }
    }
    general_mat_mul(alpha, a, b, beta, c);
}

/// The rows of a matrix as contiguous slices, if each row is contiguous.
fn rows<'a, F: Float>(x: &ArrayView2<'a, F>) -> Option<Vec<&'a [F]>> {
    if x.ncols() > 1 && x.strides()[1] != 1 {
        return None;
    }
    (0..x.nrows())
        .map(|i| (*x).index_axis_move(Axis(0), i).to_slice())
        .collect()
}

/// `a · b` with `LANES` independent partial sums, so the loop vectorises without reassociating.
#[inline(never)]
fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [F::zero(); LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = F::zero();
    for (x, y) in ar.iter().zip(br) {
        s += *x * *y;
    }
    acc.iter().fold(s, |t, &v| t + v)
}

/// `y += s · x`.
#[inline(never)]
fn axpy<F: Float>(s: F, x: &[F], y: &mut [F]) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    for i in 0..n {
        y[i] += s * x[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn m(r: usize, c: usize, seed: f64) -> Array2<f64> {
        Array2::from_shape_fn((r, c), |(i, j)| ((i * 7 + j * 3) as f64 * 0.37 + seed).sin())
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
