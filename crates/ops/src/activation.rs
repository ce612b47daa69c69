//! Normalising activations along an axis, all stable at ±1000: softmax, log_softmax, logsumexp.

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
        crate::axis::resolve("softmax", self.0 as isize, inputs[0])?;
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
        crate::axis::resolve("log_softmax", self.0 as isize, inputs[0])?;
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
    let (_, m) = shifted(x.value(), axis);
    let m = x.tape().constant(m);
    let s = sum_keep(&(x - &m)?.exp()?, axis)?.log()?;
    let out = (s + &m)?;
    if keepdim {
        Ok(out)
    } else {
        let mut shape = out.shape().to_vec();
        shape.remove(axis);
        out.reshape(&shape)
    }
}
