//! Output buffers that a kernel writes wholly, allocated without zeroing them first.
//!
//! A large fresh buffer costs a pass over its memory before the kernel starts when it is
//! allocated zeroed (`vec![0.0; n]`: `calloc`, or the kernel clearing fresh pages): a minGRU
//! train step's `[T·B, 2H]` projection gradient is 134 MB. Where the kernel that follows
//! writes every element before reading any (a product with `β = 0`, a scan that writes each
//! state once), that pass is wasted; [`written_by`] skips it.
//!
//! In the crate's own unit tests the buffer starts as NaN instead, so an element a kernel
//! failed to write shows in every comparison against a reference.

use eddy_tape::Float;
use ndarray::{ArrayView2, ArrayViewMut2};

/// A vector of `len` elements, all written by `write`, without zeroing it first.
///
/// # Safety
/// `write` must write every element of the slice it is given, and read none before writing
/// it (the slice's memory is uninitialised until then).
pub(crate) unsafe fn written_by<F: Float>(len: usize, write: impl FnOnce(&mut [F])) -> Vec<F> {
    // SAFETY: the caller's promise, for the one buffer.
    let [v] = unsafe { written_all([len], |[s]| write(s)) };
    v
}

/// `N` vectors of the given lengths, all written by `write` (a kernel with several outputs),
/// without zeroing them first.
///
/// # Safety
/// `write` must write every element of each slice it is given, and read none before writing
/// it (their memory is uninitialised until then).
pub(crate) unsafe fn written_all<F: Float, const N: usize>(
    lens: [usize; N],
    write: impl FnOnce([&mut [F]; N]),
) -> [Vec<F>; N] {
    let mut vs = lens.map(Vec::<F>::with_capacity);
    // In unit tests the elements start as NaN, so the slices below are initialised outright.
    if cfg!(test) {
        for (v, &len) in vs.iter_mut().zip(&lens) {
            // SAFETY: writes only, through raw pointers into the `len` elements allocated.
            (0..len).for_each(|i| unsafe { v.as_mut_ptr().add(i).write(F::nan()) });
        }
    }
    let ptrs = vs.each_mut().map(|v| v.as_mut_ptr());
    let slices = std::array::from_fn(|i| {
        // SAFETY: allocation `i` holds `lens[i]` elements, aligned for `F`, each slice is of a
        // different allocation, and the vectors are not touched while the slices live; the
        // contents are uninitialised (outside tests), which the caller's `write` promises not
        // to read before writing (the construction of ndarray's own `dot`, whose `β = 0`
        // product writes its new output).
        unsafe { std::slice::from_raw_parts_mut(ptrs[i], lens[i]) }
    });
    write(slices);
    for (v, &len) in vs.iter_mut().zip(&lens) {
        // SAFETY: `write` has written all `len` elements (the caller's promise); `F` is
        // `Copy`, so a panic inside `write` leaves vectors of length 0 and nothing to drop.
        unsafe { v.set_len(len) };
    }
    vs
}

/// [`written_all`] for a number of vectors known at run time.
///
/// # Safety
/// As [`written_all`]: `write` must write every element of each slice, reading none first.
pub(crate) unsafe fn written_each<F: Float>(
    lens: &[usize],
    write: impl FnOnce(Vec<&mut [F]>),
) -> Vec<Vec<F>> {
    let mut vs: Vec<Vec<F>> = lens.iter().map(|&len| Vec::with_capacity(len)).collect();
    if cfg!(test) {
        for (v, &len) in vs.iter_mut().zip(lens) {
            // SAFETY: writes only, through raw pointers into the `len` elements allocated.
            (0..len).for_each(|i| unsafe { v.as_mut_ptr().add(i).write(F::nan()) });
        }
    }
    let slices = vs
        .iter_mut()
        .zip(lens)
        // SAFETY: as in `written_all`: each slice is its own allocation of `len` elements, not
        // touched while the slices live, and `write` writes before it reads.
        .map(|(v, &len)| unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr(), len) })
        .collect();
    write(slices);
    for (v, &len) in vs.iter_mut().zip(lens) {
        // SAFETY: `write` has written all `len` elements (the caller's promise).
        unsafe { v.set_len(len) };
    }
    vs
}

/// `a · b` as a new row-major `[M, N]` vector, through [`super::gemm::gemm_unchecked`] with
/// `β = 0`, its memory never zeroed.
pub(crate) fn product_vec<F: Float>(a: &ArrayView2<F>, b: &ArrayView2<F>) -> Vec<F> {
    let (m, n) = (a.nrows(), b.ncols());
    // SAFETY: `gemm_unchecked` with `β = 0` writes every element of `c` and reads none first:
    // matrixmultiply does not read `C` when `β = 0` (and sets it to zero when `K = 0`);
    // ndarray's generic fallback fills `c` with `β`; the row kernels store `α·a·b` when `β = 0`
    // (`axpy_rows` clears `c` first) and see contiguous rows here (a new row-major `c`); the
    // packed kernel (and its transposed path) stores its first `KC` slice without loading `c`
    // when not accumulating.
    // The tests below check every path against a reference at ragged and empty shapes.
    unsafe {
        written_by(m * n, |c| {
            let mut c = ArrayViewMut2::from_shape((m, n), c).expect("[M, N]");
            super::gemm::gemm_unchecked(F::one(), a, b, F::zero(), &mut c);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_matrix as m;
    use ndarray::Array2;

    /// Every path of the GEMM (row kernels, one column, packed, matrixmultiply, `K = 0`, empty)
    /// writes every element of a fresh (NaN in tests) output: the product equals one into zeros.
    fn products_match<F: Float>() {
        let shapes = [
            (0, 3, 4),
            (3, 0, 4),
            (5, 0, 7),
            (3, 4, 0),
            (1, 17, 33),
            (4, 9, 5),
            (37, 13, 1),
            (130, 19, 33),
            (257, 64, 40),
            (129, 300, 17),
        ];
        for (rows, k, n) in shapes {
            let (a, b) = (m::<F>(rows, k, 0.1), m::<F>(k, n, 0.7));
            let bt = m::<F>(n, k, 0.3);
            for (b, label) in [(b.view(), "b"), (bt.t(), "wᵀ")] {
                let got = product_vec(&a.view(), &b);
                let mut want = Array2::<F>::zeros((rows, n));
                super::super::gemm::gemm_unchecked(F::one(), &a.view(), &b, F::zero(), &mut want.view_mut());
                assert_eq!(got.len(), rows * n);
                assert!(
                    got.iter().zip(want.iter()).all(|(g, w)| g == w),
                    "{rows}x{k}·{k}x{n} ({label})"
                );
            }
        }
    }

    #[test]
    fn fresh_products_match_products_into_zeros() {
        products_match::<f32>();
        products_match::<f64>();
    }

    #[test]
    fn unwritten_elements_show_as_nan_in_tests() {
        // SAFETY: the closure writes only some elements: allowed here, where the buffer starts
        // as NaN (in unit tests), to show that a kernel's missed element cannot pass unseen.
        let v = unsafe { written_by::<f32>(5, |s| s[..3].fill(1.0)) };
        assert_eq!(&v[..3], &[1.0; 3]);
        assert!(v[3].is_nan() && v[4].is_nan());
        let empty = unsafe { written_by::<f64>(0, |s| assert!(s.is_empty())) };
        assert!(empty.is_empty());
    }
}
