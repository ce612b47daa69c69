//! Arrays joined one after another along their first axis, as the reverse pass stacks the
//! rows of deferred gradient terms and the `stack` op stacks a sequence's steps: in row-major
//! order the result is the parts' elements back to back, so each part in standard layout is
//! one copy of its memory, and nothing is zeroed first.

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
