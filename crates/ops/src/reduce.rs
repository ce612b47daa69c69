//! Reductions along an axis: sum (mean is a scaled sum) and max. Sum of everything is
//! `Var::sum_all` in the tape.

use eddy_tape::{Error, Float, Op, Result, Var};
use ndarray::{ArrayD, Axis, IxDyn};

fn reduced(shape: &[usize], axis: usize, keepdim: bool) -> Vec<usize> {
    let mut out = shape.to_vec();
    if keepdim {
        out[axis] = 1;
    } else {
        out.remove(axis);
    }
    out
}

fn check_axis(op: &str, axis: usize, shape: &[usize]) -> Result<()> {
    if axis < shape.len() {
        Ok(())
    } else {
        Err(Error::Axis {
            op: op.into(),
            axis: axis as isize,
            shape: shape.to_vec(),
        })
    }
}

/// The sum along `axis`, keeping it as size 1 if `keepdim`.
///
/// Gradient: `dx = broadcast_to(g, x.shape)` (with the axis reinserted).
pub struct Sum {
    pub axis: usize,
    pub keepdim: bool,
}

impl<F: Float> Op<F> for Sum {
    fn name(&self) -> &str {
        "sum"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("sum", inputs, 1)?;
        check_axis("sum", self.axis, inputs[0])?;
        Ok(reduced(inputs[0], self.axis, self.keepdim))
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let s = inputs[0].sum_axis(Axis(self.axis));
        Ok(if self.keepdim {
            s.insert_axis(Axis(self.axis))
        } else {
            s
        })
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let x = &inputs[0];
        let kept = g
            .tape()
            .apply(crate::shape::Reshape(reduced(x.shape(), self.axis, true)), &[g])?;
        Ok(vec![Some(kept.broadcast_to(x.shape())?)])
    }
}

/// The maximum along `axis`, keeping it as size 1 if `keepdim`.
///
/// Gradient: `g` flows to the first position of the maximum (as PyTorch's `max(dim)`); the
/// one-hot mask is a constant, so the rule is linear in `g`.
pub struct Max {
    pub axis: usize,
    pub keepdim: bool,
}

impl<F: Float> Op<F> for Max {
    fn name(&self) -> &str {
        "max"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("max", inputs, 1)?;
        check_axis("max", self.axis, inputs[0])?;
        if inputs[0][self.axis] == 0 {
            return Err(Error::shape(
                "max",
                inputs,
                "cannot take the max of an empty axis",
            ));
        }
        Ok(reduced(inputs[0], self.axis, self.keepdim))
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let m = inputs[0].fold_axis(Axis(self.axis), F::neg_infinity(), |&a, &b| {
            if b > a || b.is_nan() {
                b
            } else {
                a
            }
        });
        Ok(if self.keepdim {
            m.insert_axis(Axis(self.axis))
        } else {
            m
        })
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let x = inputs[0].value();
        let mut mask = ArrayD::<F>::zeros(IxDyn(x.shape()));
        for (lane, mut out) in x
            .lanes(Axis(self.axis))
            .into_iter()
            .zip(mask.lanes_mut(Axis(self.axis)))
        {
            let mut best = 0;
            for (i, &v) in lane.iter().enumerate() {
                if v > lane[best] {
                    best = i;
                }
            }
            out[best] = F::one();
        }
        let kept = g
            .tape()
            .apply(crate::shape::Reshape(reduced(x.shape(), self.axis, true)), &[g])?;
        Ok(vec![Some((kept * &g.tape().constant(mask))?)])
    }
}
