//! Ops that draw random numbers from a caller's seeded [`Rng`]: dropout.

use eddy_tape::{Error, Float, Result, Rng, Var};
use ndarray::ArrayD;

/// Inverted dropout: zeroes each element with probability `p` and scales the rest by
/// `1/(1−p)`, so the expectation is unchanged; the identity when not `training` or `p = 0`.
///
/// Gradient: the same constant mask times `g`.
///
/// # Errors
/// [`Error::Invalid`] unless `0 ≤ p < 1`.
pub fn dropout<F: Float>(x: &Var<F>, p: f64, training: bool, rng: &mut Rng) -> Result<Var<F>> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid("dropout", format!("p must be in [0, 1), got {p}")));
    }
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    let keep = F::of(1.0 / (1.0 - p));
    let mask = ArrayD::from_shape_simple_fn(x.shape(), || if rng.uniform() < p { F::zero() } else { keep });
    x * &x.tape().constant(mask)
}

/// A dropout mask of the given shape (values `0` or `1/(1−p)`), for variational dropout that
/// reuses one mask at every time step.
///
/// # Errors
/// [`Error::Invalid`] unless `0 ≤ p < 1`.
pub fn dropout_mask<F: Float>(shape: &[usize], p: f64, rng: &mut Rng) -> Result<ArrayD<F>> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid("dropout", format!("p must be in [0, 1), got {p}")));
    }
    let keep = F::of(1.0 / (1.0 - p));
    Ok(ArrayD::from_shape_simple_fn(shape, || {
        if rng.uniform() < p {
            F::zero()
        } else {
            keep
        }
    }))
}
