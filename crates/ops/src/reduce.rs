//! Reductions along an axis: sum (mean is a scaled sum) and max; and [`Maximum`], the larger
//! of two tensors, max's elementwise twin. Sum of everything is `Var::sum_all` in the tape.

use eddy_tape::{Error, Float, Op, Result, Saves, Var};
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

pub(crate) fn check_axis(op: &str, axis: usize, shape: &[usize]) -> Result<()> {
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
    /// The axis summed over.
    pub axis: usize,
    /// Keep the axis as size 1.
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
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// The maximum along `axis`, keeping it as size 1 if `keepdim`.
///
/// Gradient: `g` flows to the first position of the maximum (as PyTorch's `max(dim)`); the
/// one-hot mask is a constant, so the rule is linear in `g`.
pub struct Max {
    /// The axis the maximum is taken over.
    pub axis: usize,
    /// Keep the axis as size 1.
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
                // The first NaN is the maximum, as in the forward pass.
                if v > lane[best] || (v.is_nan() && !lane[best].is_nan()) {
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

/// The larger of two tensors elementwise, `a` and `b` broadcast together (NumPy's and
/// PyTorch's `maximum`).
///
/// Gradient: to the larger argument, `da = sum_to(a ≥ b ? g : 0)`, `db = sum_to(a ≥ b ? 0 : g)`;
/// at a tie all of it goes to `a` (PyTorch splits a tie in halves). The mask is a constant, so
/// the rule is linear in `g` and differentiates again. This is the `max` of xLSTM's stabiliser
/// `m_t = max(log f + m_{t−1}, ĩ)`, differentiated as is rather than detached.
pub struct Maximum;

impl Maximum {
    /// Where `a` is taken: `a ≥ b` or `a` is NaN, at every position of the broadcast shape. A NaN
    /// in either input is the result there (as PyTorch's `maximum`), so anomaly detection sees it.
    fn mask<F: Float>(a: &ArrayD<F>, b: &ArrayD<F>, shape: &[usize]) -> ArrayD<bool> {
        let sh = IxDyn(shape);
        let (a, b) = (
            a.broadcast(sh.clone()).expect("checked by the shape rule"),
            b.broadcast(sh).expect("checked by the shape rule"),
        );
        ndarray::Zip::from(&a)
            .and(&b)
            .map_collect(|&a, &b| a >= b || a.is_nan())
    }
}

impl<F: Float> Op<F> for Maximum {
    fn name(&self) -> &str {
        "maximum"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("maximum", inputs, 2)?;
        eddy_tape::broadcast_shapes(inputs[0], inputs[1])
            .ok_or_else(|| Error::shape("maximum", inputs, "the two inputs cannot be broadcast together"))
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let (a, b) = (inputs[0], inputs[1]);
        let shape = <Self as Op<F>>::shape(self, &[a.shape(), b.shape()])?;
        let mask = Self::mask(a, b, &shape);
        let sh = IxDyn(&shape);
        let (av, bv) = (
            a.broadcast(sh.clone()).expect("checked"),
            b.broadcast(sh).expect("checked"),
        );
        Ok(ndarray::Zip::from(&mask)
            .and(&av)
            .and(&bv)
            .map_collect(|&m, &a, &b| if m { a } else { b }))
    }
    fn backward(&self, inputs: &[Var<F>], out: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let mask = Self::mask(a.value(), b.value(), out.shape());
        let zeros = g.tape().constant(ArrayD::zeros(g.shape()));
        let pick = |first: bool, x: &Var<F>| -> Result<Option<Var<F>>> {
            if !x.requires_grad() {
                return Ok(None);
            }
            let (on, off) = if first { (g, &zeros) } else { (&zeros, g) };
            let routed = crate::where_(&mask, on, off)?;
            Ok(Some(routed.sum_to(x.shape())?))
        };
        Ok(vec![pick(true, a)?, pick(false, b)?])
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
}

#[cfg(test)]
mod tests {
    //! The kernels against slow references that walk each lane by index.
    use super::*;
    use ndarray::Dimension;

    fn seq(shape: &[usize]) -> ArrayD<f64> {
        let mut k = 0u32;
        // Distinct values in a scrambled order, so that maxima sit anywhere in a lane.
        ArrayD::from_shape_simple_fn(shape, || {
            k += 1;
            ((k * 7919) % 97) as f64 * 0.25 - 10.0
        })
    }

    /// For each output index (the axis removed), the input indices of its lane.
    fn lanes(shape: &[usize], axis: usize) -> Vec<(Vec<usize>, Vec<Vec<usize>>)> {
        let mut out_shape = shape.to_vec();
        out_shape.remove(axis);
        ArrayD::<u8>::zeros(IxDyn(&out_shape))
            .indexed_iter()
            .map(|(o, _)| {
                let lane = (0..shape[axis])
                    .map(|k| {
                        let mut i = o.slice().to_vec();
                        i.insert(axis, k);
                        i
                    })
                    .collect();
                (o.slice().to_vec(), lane)
            })
            .collect()
    }

    #[test]
    fn sum_and_max_match_loops_along_every_axis() {
        let x = seq(&[3, 4, 2]);
        for axis in 0..3 {
            for keepdim in [false, true] {
                let s = Sum { axis, keepdim };
                let m = Max { axis, keepdim };
                let ys = <Sum as Op<f64>>::forward(&s, &[&x]).unwrap();
                let ym = <Max as Op<f64>>::forward(&m, &[&x]).unwrap();
                let want_shape = <Sum as Op<f64>>::shape(&s, &[x.shape()]).unwrap();
                assert_eq!(ys.shape(), want_shape.as_slice());
                assert_eq!(ym.shape(), want_shape.as_slice());
                for (o, lane) in lanes(x.shape(), axis) {
                    let mut oi = o.clone();
                    if keepdim {
                        oi.insert(axis, 0);
                    }
                    let sum: f64 = lane.iter().map(|i| x[IxDyn(i)]).sum();
                    let max = lane.iter().map(|i| x[IxDyn(i)]).fold(f64::NEG_INFINITY, f64::max);
                    assert!((ys[IxDyn(&oi)] - sum).abs() < 1e-12);
                    assert_eq!(ym[IxDyn(&oi)], max);
                }
            }
        }
    }

    #[test]
    fn max_gradient_goes_to_the_first_maximum() -> Result<()> {
        use eddy_tape::Tape;
        let t = Tape::<f64>::new();
        // Ties in every lane along axis 1: [1, 3, 3] and [2, 2, 0].
        let x = t.input(ndarray::arr2(&[[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]).into_dyn());
        let y = t.apply(
            Max {
                axis: 1,
                keepdim: false,
            },
            &[&x],
        )?;
        assert_eq!(y.value().as_slice().unwrap(), &[3.0, 2.0]);
        let g = y.sum_all()?.backward()?;
        let want = ndarray::arr2(&[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]).into_dyn();
        assert_eq!(g.var(&x).unwrap(), &want);
        Ok(())
    }

    #[test]
    fn sum_gradient_is_the_broadcast_of_g() -> Result<()> {
        use eddy_tape::Tape;
        let t = Tape::<f32>::new();
        let x = t.input(ArrayD::zeros(IxDyn(&[2, 3])));
        let w = t.constant(ndarray::arr1(&[1.0f32, 2.0]).into_dyn());
        let y = (t.apply(
            Sum {
                axis: 1,
                keepdim: false,
            },
            &[&x],
        )? * &w)?
            .sum_all()?;
        let g = y.backward()?;
        let want = ndarray::arr2(&[[1.0f32, 1.0, 1.0], [2.0, 2.0, 2.0]]).into_dyn();
        assert_eq!(g.var(&x).unwrap(), &want);
        Ok(())
    }

    #[test]
    fn max_propagates_nan_and_handles_infinities() {
        let x =
            ndarray::arr2(&[[1.0f32, f32::NAN, 0.0], [f32::NEG_INFINITY, -1.0, f32::INFINITY]]).into_dyn();
        let y = <Max as Op<f32>>::forward(
            &Max {
                axis: 1,
                keepdim: false,
            },
            &[&x],
        )
        .unwrap();
        assert!(y[[0]].is_nan());
        assert_eq!(y[[1]], f32::INFINITY);
    }

    #[test]
    fn maximum_broadcasts_and_routes_the_gradient_to_the_larger_argument() -> Result<()> {
        use crate::VarExt;
        let t = eddy_tape::Tape::<f64>::new();
        let a = t.input(ndarray::arr2(&[[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]]).into_dyn());
        let b = t.input(ndarray::arr1(&[0.0, -2.0, 5.0]).into_dyn());
        let y = a.maximum(&b)?;
        let want = ndarray::arr2(&[[1.0, -2.0, 5.0], [0.5, 4.0, 5.0]]).into_dyn();
        assert_eq!(y.value(), &want);
        let g = y.sum_all()?.backward()?;
        // The tie at column 1, row 0 goes to `a`.
        let ga = ndarray::arr2(&[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]).into_dyn();
        assert_eq!(g.var(&a).unwrap(), &ga);
        assert_eq!(g.var(&b).unwrap(), &ndarray::arr1(&[0.0, 0.0, 2.0]).into_dyn());
        let err = a.maximum(&t.input(ArrayD::zeros(vec![2]))).unwrap_err();
        assert!(err.to_string().contains("maximum"), "{err}");
        Ok(())
    }
}
