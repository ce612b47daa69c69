//! Normalising activations along an axis, all stable at ±1000: softmax, log_softmax, logsumexp;
//! and logaddexp, the logsumexp of two tensors.

use crate::reduce::Sum;
use eddy_tape::{Float, Op, Result, Var};
use ndarray::{ArrayD, Axis};

/// Subtracts each lane's max along `axis` (the stabilising shift), returning shifted values
/// and the maxima (keepdim).
fn shifted<F: Float>(x: &ArrayD<F>, axis: usize) -> (ArrayD<F>, ArrayD<F>) {
    let m = x
        .fold_axis(Axis(axis), F::neg_infinity(), |&a, &b| a.max(b))
        .mapv(|v| if v.is_finite() { v } else { F::zero() })
        .insert_axis(Axis(axis));
    (x - &m, m)
}

fn sum_keep<F: Float>(x: &Var<F>, axis: usize) -> Result<Var<F>> {
    x.tape().apply(Sum { axis, keepdim: true }, &[x])
}

/// `softmax(x)ᵢ = eˣⁱ / Σⱼ eˣʲ` along `axis`.
///
/// Gradient: `dx = y ⊙ (g − Σ(g ⊙ y))`, the sum along `axis`.
pub struct Softmax(pub usize);

impl<F: Float> Op<F> for Softmax {
    fn name(&self) -> &str {
        "softmax"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("softmax", inputs, 1)?;
        // The axis counts from the front (`as isize` would turn a huge one into a negative).
        crate::axis::resolve(
            "softmax",
            isize::try_from(self.0).unwrap_or(isize::MAX),
            inputs[0],
        )?;
        Ok(inputs[0].to_vec())
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let (mut e, _) = shifted(inputs[0], self.0);
        e.mapv_inplace(|v| v.exp());
        let s = e.sum_axis(Axis(self.0)).insert_axis(Axis(self.0));
        Ok(e / &s)
    }
    fn backward(&self, _: &[Var<F>], y: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let gy = (g * y)?;
        let dx = (y * (g - sum_keep(&gy, self.0)?)?)?;
        Ok(vec![Some(dx)])
    }
}

/// `log_softmax(x)ᵢ = xᵢ − log Σⱼ eˣʲ` along `axis`.
///
/// Gradient: `dx = g − eʸ ⊙ Σ g`, the sum along `axis`.
pub struct LogSoftmax(pub usize);

impl<F: Float> Op<F> for LogSoftmax {
    fn name(&self) -> &str {
        "log_softmax"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("log_softmax", inputs, 1)?;
        // The axis counts from the front (`as isize` would turn a huge one into a negative).
        crate::axis::resolve(
            "log_softmax",
            isize::try_from(self.0).unwrap_or(isize::MAX),
            inputs[0],
        )?;
        Ok(inputs[0].to_vec())
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let (z, _) = shifted(inputs[0], self.0);
        let lse = z
            .mapv(|v| v.exp())
            .sum_axis(Axis(self.0))
            .mapv(|v| v.ln())
            .insert_axis(Axis(self.0));
        Ok(z - &lse)
    }
    fn backward(&self, _: &[Var<F>], y: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        use crate::VarExt;
        let dx = (g - (y.exp()? * sum_keep(g, self.0)?)?)?;
        Ok(vec![Some(dx)])
    }
}

/// `log Σ eˣ` along `axis`, composed from differentiable ops around a constant shift by the max:
/// `m + log Σ e^(x − m)`, whose gradient (softmax) does not depend on `m`.
pub fn logsumexp<F: Float>(x: &Var<F>, axis: usize, keepdim: bool) -> Result<Var<F>> {
    use crate::VarExt;
    crate::reduce::check_axis("logsumexp", axis, x.shape())?;
    let out = if x.value().is_empty() {
        // No elements, no shift (and folding a huge empty axis for one would never end).
        sum_keep(&x.exp()?, axis)?.log()?
    } else {
        let (_, m) = shifted(x.value(), axis);
        let m = x.tape().constant(m);
        let s = sum_keep(&(x - &m)?.exp()?, axis)?.log()?;
        (s + &m)?
    };
    if keepdim {
        Ok(out)
    } else {
        let mut shape = out.shape().to_vec();
        shape.remove(axis);
        out.reshape(&shape)
    }
}

/// `ln(eᵃ + eᵇ)` elementwise, `a` and `b` broadcast together: the `+` of log-space arithmetic
/// (the log-space scan `log h_t = logaddexp(log a_t + log h_{t−1}, log b_t)`). Composed from
/// differentiable ops around a constant shift by the larger value, `m + ln(e^(a−m) + e^(b−m))`,
/// so it is stable at ±1000 and its gradient (`σ(a − b)` to `a`, `σ(b − a)` to `b`) is smooth,
/// ties included, and differentiates again.
///
/// # Errors
/// [`eddy_tape::Error::Shape`] if `a` and `b` cannot be broadcast together.
pub fn logaddexp<F: Float>(a: &Var<F>, b: &Var<F>) -> Result<Var<F>> {
    use crate::VarExt;
    // The maximum below runs outside the tape, which checks every op's result shape: check the
    // broadcast shape here (it may not fit in memory, or not exist as an array at all).
    match eddy_tape::broadcast_shapes(a.shape(), b.shape()) {
        None => {
            return Err(eddy_tape::Error::shape(
                "logaddexp",
                &[a.shape(), b.shape()],
                "the two inputs cannot be broadcast together",
            ))
        }
        Some(shape) if !crate::fits::<F>(&shape) => {
            return Err(eddy_tape::Error::shape(
                "logaddexp",
                &[a.shape(), b.shape()],
                format!("the broadcast shape {shape:?} is too large to allocate"),
            ))
        }
        Some(_) => {}
    }
    let m = <crate::reduce::Maximum as Op<F>>::forward(&crate::reduce::Maximum, &[a.value(), b.value()])?;
    let m = a
        .tape()
        .constant(m.mapv(|v| if v.is_finite() { v } else { F::zero() }));
    let s = ((a - &m)?.exp()? + (b - &m)?.exp()?)?;
    s.log()? + &m
}

#[cfg(test)]
mod tests {
    //! The kernels against textbook loops on moderate values, and stability at ±1000.
    use super::*;
    use crate::VarExt;
    use eddy_tape::Tape;
    use ndarray::{arr2, Dimension, IxDyn};

    fn seq(shape: &[usize]) -> ArrayD<f64> {
        let mut k = 0.0f64;
        ArrayD::from_shape_simple_fn(shape, || {
            k += 1.0;
            (k * 1.3).sin() * 3.0
        })
    }

    /// The textbook formulas along `axis`, one lane at a time, without the stabilising shift.
    fn reference(x: &ArrayD<f64>, axis: usize) -> (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>) {
        let mut softmax = ArrayD::zeros(x.raw_dim());
        let mut log_softmax = ArrayD::zeros(x.raw_dim());
        let mut lse_shape = x.shape().to_vec();
        lse_shape.remove(axis);
        let mut lse = ArrayD::zeros(IxDyn(&lse_shape));
        for (o, slot) in lse.indexed_iter_mut() {
            let at = |k: usize| {
                let mut i = o.slice().to_vec();
                i.insert(axis, k);
                IxDyn(&i)
            };
            let n = x.shape()[axis];
            let total: f64 = (0..n).map(|k| x[at(k)].exp()).sum();
            *slot = total.ln();
            for k in 0..n {
                softmax[at(k)] = x[at(k)].exp() / total;
                log_softmax[at(k)] = x[at(k)] - total.ln();
            }
        }
        (softmax, log_softmax, lse)
    }

    #[test]
    fn softmax_log_softmax_and_logsumexp_match_the_textbook() -> Result<()> {
        let t = Tape::<f64>::new();
        let x0 = seq(&[2, 3, 4]);
        let x = t.constant(x0.clone());
        for axis in 0..3 {
            let (sm, lsm, lse) = reference(&x0, axis);
            let close = |a: &ArrayD<f64>, b: &ArrayD<f64>| {
                assert_eq!(a.shape(), b.shape());
                assert!(a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-12), "{a} vs {b}");
            };
            close(x.softmax(axis as isize)?.value(), &sm);
            close(x.log_softmax(axis as isize)?.value(), &lsm);
            close(x.logsumexp(axis as isize, false)?.value(), &lse);
            let kept = x.logsumexp(axis as isize, true)?;
            close(kept.value(), &lse.clone().insert_axis(Axis(axis)));
        }
        Ok(())
    }

    #[test]
    fn softmax_gradient_matches_the_jacobian_by_hand() -> Result<()> {
        // For one lane, dx_i = Σ_j g_j · y_j (δ_ij − y_i).
        let t = Tape::<f64>::new();
        let x = t.input(ndarray::arr1(&[0.5, -1.0, 2.0]).into_dyn());
        let g0 = ndarray::arr1(&[1.0, -2.0, 0.5]).into_dyn();
        let y = x.softmax(0)?;
        let grads = (&y * &t.constant(g0.clone()))?.sum_all()?.backward()?;
        let yv = y.value();
        for i in 0..3 {
            let want: f64 = (0..3)
                .map(|j| g0[j] * yv[j] * (if i == j { 1.0 } else { 0.0 } - yv[i]))
                .sum();
            assert!((grads.var(&x).unwrap()[i] - want).abs() < 1e-14);
        }
        Ok(())
    }

    /// Forward and backward of every stable op at ±1000, on a tape that rejects any NaN or
    /// infinity in any forward value or gradient (including those inside the backward rules).
    fn stable_at_a_thousand<F: Float>() -> Result<()> {
        let t = Tape::<F>::with_anomaly_detection();
        let big = F::of(1000.0);
        let x0 = arr2(&[[-big, big], [big, big], [-big, -big], [-big, F::zero()]]).into_dyn();
        let x = t.input(x0.clone());
        let w = t.constant(arr2(&[[F::one(), F::of(-2.0)]; 4]).into_dyn());
        let outputs = [
            ("sigmoid", x.sigmoid()?),
            ("softplus", x.softplus()?),
            ("softmax", x.softmax(1)?),
            ("log_softmax", x.log_softmax(-1)?),
            ("logsumexp", x.logsumexp(1, true)?.broadcast_to(&[4, 2])?),
            ("logaddexp", x.logaddexp(&w)?),
        ];
        for (name, y) in &outputs {
            assert!(
                y.value().iter().all(|v| v.is_finite()),
                "{name} {}: {}",
                F::NAME,
                y.value()
            );
            let g = (y * &w)?
                .sum_all()?
                .backward_with(eddy_tape::GradOptions::retain_graph())?;
            let gx = g.var(&x).unwrap();
            assert!(
                gx.iter().all(|v| v.is_finite()),
                "{name} {} gradient: {gx}",
                F::NAME
            );
        }
        let v = |k: usize| outputs[k].1.value().mapv(|e| e.as_f64());
        let (s, sp, sm, lsm, lse) = (v(0), v(1), v(2), v(3), v(4));
        assert_eq!(s.row(0).to_vec(), [0.0, 1.0]);
        assert_eq!(sp.row(0).to_vec(), [0.0, 1000.0]);
        assert_eq!(sm.row(0).to_vec(), [0.0, 1.0]);
        assert_eq!(sm.row(1).to_vec(), [0.5, 0.5]);
        assert_eq!(lsm.row(0).to_vec(), [-2000.0, 0.0]);
        assert!((lsm[[3, 0]] + 1000.0).abs() < 1e-3 && lsm[[3, 1]] == 0.0);
        assert!((lse[[1, 0]] - (1000.0 + 2f64.ln())).abs() < 1e-3);
        assert!((lse[[2, 0]] - (-1000.0 + 2f64.ln())).abs() < 1e-3);
        Ok(())
    }

    #[test]
    fn logaddexp_matches_the_textbook_and_is_stable_at_a_thousand() -> Result<()> {
        let t = Tape::<f64>::with_anomaly_detection();
        let a = t.input(ndarray::arr1(&[0.5, -1.0, 1000.0, -1000.0, 3.0]).into_dyn());
        let b = t.input(ndarray::arr1(&[-2.0, -1.0, 999.0, -1000.0, 3.0 - 1e-9]).into_dyn());
        let y = a.logaddexp(&b)?;
        let want = [
            (0.5f64.exp() + (-2.0f64).exp()).ln(),
            -1.0 + 2f64.ln(),
            1000.0 + (1.0 + (-1.0f64).exp()).ln(),
            -1000.0 + 2f64.ln(),
            3.0 + 2f64.ln(),
        ];
        for (got, want) in y.value().iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
        // d/da = σ(a − b): a half at a tie, not the whole.
        let g = y.sum_all()?.backward()?;
        let ga = g.var(&a).unwrap();
        assert!((ga[1] - 0.5).abs() < 1e-12 && (ga[3] - 0.5).abs() < 1e-12);
        assert!((ga[2] - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);
        let err = a.logaddexp(&t.input(ArrayD::zeros(vec![2]))).unwrap_err();
        assert!(err.to_string().contains("logaddexp"), "{err}");
        Ok(())
    }

    #[test]
    fn stable_at_a_thousand_in_f32_and_f64() -> Result<()> {
        stable_at_a_thousand::<f32>()?;
        stable_at_a_thousand::<f64>()
    }

    /// Access to a row of a 2-D dynamic array.
    trait Row {
        fn row(&self, i: usize) -> ndarray::ArrayView1<'_, f64>;
    }
    impl Row for ArrayD<f64> {
        fn row(&self, i: usize) -> ndarray::ArrayView1<'_, f64> {
            self.index_axis(Axis(0), i).into_dimensionality().unwrap()
        }
    }
}
