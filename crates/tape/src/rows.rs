//! Arrays joined one after another along an axis, as the reverse pass stacks the rows of
//! deferred gradient terms, the `stack` op stacks a sequence's steps and `concat` joins a
//! cell's gate gradients: in row-major order the result is runs of the parts' elements back to
//! back, so each part in standard layout is copied run by run from its memory, and nothing is
//! zeroed first.

use crate::Float;
use ndarray::{ArrayD, ArrayView, Dimension, IxDyn};

/// The elements of `parts`, each in row-major order, one part after another, as an array of
/// `shape`: the concatenation of the parts along their first axis (`shape[0]` the sum of
/// their first dimensions), or their stack along a new first axis (`shape` = `[parts, ..]`).
///
/// # Panics
/// If the parts do not hold `shape`'s number of elements between them.
///
/// ```
/// use eddy_tape::join_rows;
/// use ndarray::{arr2, IxDyn};
/// let (a, b) = (arr2(&[[1.0_f64, 2.0]]), arr2(&[[3.0, 4.0], [5.0, 6.0]]));
/// let joined = join_rows(&[a.view(), b.t()], &[3, 2]);
/// assert_eq!(joined, arr2(&[[1.0, 2.0], [3.0, 5.0], [4.0, 6.0]]).into_dyn());
/// ```
pub fn join_rows<F: Float, D: Dimension>(parts: &[ArrayView<'_, F, D>], shape: &[usize]) -> ArrayD<F> {
    let len = shape.iter().product();
    let mut out = Vec::with_capacity(len);
    for part in parts {
        match part.as_slice() {
            Some(s) => out.extend_from_slice(s),
            None => out.extend(part.iter().copied()),
        }
    }
    ArrayD::from_shape_vec(IxDyn(shape), out).expect("the parts hold the shape's elements")
}

/// The parts joined along `axis`, as an array of `shape`: the concatenation along `axis`
/// (`shape[axis]` the sum of the parts' sizes there) or the stack along a new axis `axis`
/// (`shape[axis]` the number of parts). In row-major order every part is `outer` runs of equal
/// length, `outer` the product of `shape[..axis]`, and the result takes each part's first run,
/// then each part's second, and so on. [`join_rows`] is the case `axis` 0 (one run a part).
///
/// # Panics
/// If `axis` exceeds `shape`'s rank, or the parts do not hold `shape`'s number of elements
/// between them, in runs of whole elements.
///
/// ```
/// use eddy_tape::join_along;
/// use ndarray::arr2;
/// let (a, b) = (arr2(&[[1.0_f64], [2.0]]), arr2(&[[3.0, 4.0], [5.0, 6.0]]));
/// let joined = join_along(&[a.view(), b.view()], 1, &[2, 3]);
/// assert_eq!(joined, arr2(&[[1.0, 3.0, 4.0], [2.0, 5.0, 6.0]]).into_dyn());
/// ```
pub fn join_along<F: Float, D: Dimension>(
    parts: &[ArrayView<'_, F, D>],
    axis: usize,
    shape: &[usize],
) -> ArrayD<F> {
    let outer: usize = shape[..axis].iter().product();
    let len: usize = shape.iter().product();
    if outer <= 1 || len == 0 {
        return join_rows(parts, shape);
    }
    let parts: Vec<_> = parts.iter().map(|p| p.as_standard_layout()).collect();
    let runs: Vec<&[F]> = parts
        .iter()
        .map(|p| p.as_slice().expect("a standard-layout array is one slice"))
        .collect();
    let mut out = Vec::with_capacity(len);
    for o in 0..outer {
        for run in &runs {
            let n = run.len() / outer;
            out.extend_from_slice(&run[o * n..(o + 1) * n]);
        }
    }
    ArrayD::from_shape_vec(IxDyn(shape), out).expect("the parts hold the shape's elements")
}
