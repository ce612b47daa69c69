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
/// [`Error::Invalid`] unless `0 ≤ p < 1`; [`Error::Shape`] for a shape that cannot be allocated.
pub fn dropout_mask<F: Float>(shape: &[usize], p: f64, rng: &mut Rng) -> Result<ArrayD<F>> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid("dropout", format!("p must be in [0, 1), got {p}")));
    }
    if !crate::fits::<F>(shape) {
        return Err(Error::shape(
            "dropout",
            &[shape],
            "a mask of this shape has more elements than memory can hold",
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_tape::Tape;

    /// The slow reference: one uniform draw per element in row-major order.
    fn reference(x: &ArrayD<f64>, p: f64, rng: &mut Rng) -> ArrayD<f64> {
        let mut out = x.clone();
        for v in out.iter_mut() {
            *v = if rng.uniform() < p { 0.0 } else { *v / (1.0 - p) };
        }
        out
    }

    #[test]
    fn dropout_matches_the_reference_and_its_gradient_is_the_mask() -> Result<()> {
        let t = Tape::<f64>::new();
        let x0 = ArrayD::from_shape_fn(vec![4, 5], |i| 1.0 + i[0] as f64 + 0.1 * i[1] as f64);
        let x = t.input(x0.clone());
        let y = dropout(&x, 0.3, true, &mut Rng::seed(42))?;
        let want = reference(&x0, 0.3, &mut Rng::seed(42));
        assert!(y.value().iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12));
        let g = y.sum_all()?.backward()?;
        let mask = dropout_mask::<f64>(&[4, 5], 0.3, &mut Rng::seed(42))?;
        assert_eq!(g.var(&x).unwrap(), &mask);
        Ok(())
    }

    #[test]
    fn dropout_is_the_identity_in_eval_and_at_zero() -> Result<()> {
        let t = Tape::<f32>::new();
        let x = t.input(ArrayD::from_elem(vec![3], 2.0));
        let mut rng = Rng::seed(1);
        let before = rng.clone();
        for y in [
            dropout(&x, 0.5, false, &mut rng)?,
            dropout(&x, 0.0, true, &mut rng)?,
        ] {
            assert!(std::sync::Arc::ptr_eq(y.value_arc(), x.value_arc()));
        }
        assert_eq!(rng, before, "no random numbers drawn");
        Ok(())
    }

    #[test]
    fn masks_keep_the_expectation_and_repeat_with_the_seed() -> Result<()> {
        let p = 0.25;
        let m = dropout_mask::<f32>(&[100, 100], p, &mut Rng::seed(7))?;
        let zeros = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((zeros - p).abs() < 0.02, "{zeros}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        let mean = m.iter().map(|&v| v as f64).sum::<f64>() / m.len() as f64;
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
        assert_eq!(m, dropout_mask::<f32>(&[100, 100], p, &mut Rng::seed(7))?);
        assert_ne!(m, dropout_mask::<f32>(&[100, 100], p, &mut Rng::seed(8))?);
        Ok(())
    }
}
