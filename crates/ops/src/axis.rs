//! Axis arguments: negative axes count from the end, as in NumPy and PyTorch.

use eddy_tape::{Error, Result};

/// Resolves `axis` (possibly negative) against a rank, or names the op and shape in an error.
pub fn resolve(op: &str, axis: isize, shape: &[usize]) -> Result<usize> {
    let n = shape.len() as isize;
    let a = if axis < 0 { axis + n } else { axis };
    if (0..n).contains(&a) {
        Ok(a as usize)
    } else {
        Err(Error::Axis {
            op: op.to_string(),
            axis,
            shape: shape.to_vec(),
        })
    }
}
