//! Matrix products through matrixmultiply (via ndarray's `general_mat_mul`), with transposed
//! operands passed as strided views: no transposed copies, in the forward or the backward.

use crate::kernels::fresh::{product_vec, written_by};
use eddy_tape::{Error, Float, Op, Result, Saves, Var};
use ndarray::{ArrayD, ArrayView2, ArrayViewMut2, Axis, Ix2, IxDyn};

/// `op(a) · op(b)` where `op` transposes the last two axes when its flag is set.
///
/// Shapes: `a` is `[m, k]` or `[batch, m, k]` (before `op`), `b` is `[k, n]` or `[batch, k, n]`;
/// a 2-D operand is shared across the other's batch. The result is `[m, n]` or `[batch, m, n]`.
/// Gradient: `d op(a) = g · op(b)ᵀ`, `d op(b) = op(a)ᵀ · g`, each written as another `MatMul` with
/// flipped flags, summed over the batch for a shared operand.
///
/// # Errors
/// [`Error::MatmulInner`] if the inner dimensions differ; [`Error::Shape`] for ranks other than 2
/// or 3, or batch sizes that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatMul {
    /// Transpose the last two axes of `a`.
    pub ta: bool,
    /// Transpose the last two axes of `b`.
    pub tb: bool,
}

impl MatMul {
    fn dims(shape: &[usize], t: bool) -> (usize, usize) {
        let n = shape.len();
        let (r, c) = (shape[n - 2], shape[n - 1]);
        if t {
            (c, r)
        } else {
            (r, c)
        }
    }
}

fn view2<'a, F: Float>(x: &'a ArrayD<F>, batch: Option<usize>, t: bool) -> ArrayView2<'a, F> {
    let v = match batch {
        Some(i) if x.ndim() == 3 => x.index_axis(Axis(0), i),
        _ => x.view(),
    };
    let v = v
        .into_dimensionality::<Ix2>()
        .expect("the shape rule checked the rank");
    if t {
        v.reversed_axes()
    } else {
        v
    }
}

/// `c = a · b` into a 2-D view, through matrixmultiply.
fn gemm<F: Float>(a: &ArrayView2<F>, b: &ArrayView2<F>, c: &mut ArrayViewMut2<F>) {
    crate::kernels::gemm::gemm_unchecked(F::one(), a, b, F::zero(), c);
}

/// `Σᵢ lhsᵢᵀ · rhsᵢ` of 2-D views (`[rᵢ, m]ᵀ · [rᵢ, n]`): a weight's gradient over the rows of
/// its uses' products ([`OuterProduct`](eddy_tape::OuterProduct)), computed as
/// `MatMul { ta: true, tb: false }` computes it on the stacked rows, or where the deep kernel
/// runs ([`crate::kernels::deep`]) on the rows where they are, without stacking them.
pub(crate) fn outer<F: Float>(lhs: &[ArrayView2<'_, F>], rhs: &[ArrayView2<'_, F>]) -> ArrayD<F> {
    let shape = [lhs[0].ncols(), rhs[0].ncols()];
    let c = match crate::kernels::gemm::tn_terms(lhs, rhs) {
        Some(c) => c,
        None if lhs.len() == 1 => product_vec(&lhs[0].t(), &rhs[0]),
        None => {
            let stack = |views: &[ArrayView2<'_, F>]| {
                let rows = views.iter().map(|v| v.nrows()).sum();
                eddy_tape::join_rows(views, &[rows, views[0].ncols()])
                    .into_dimensionality::<ndarray::Ix2>()
                    .expect("2-D")
            };
            let (lhs, rhs) = (stack(lhs), stack(rhs));
            product_vec(&lhs.t(), &rhs.view())
        }
    };
    ArrayD::from_shape_vec(IxDyn(&shape), c).expect("[m, n]")
}

/// The gradient of the weight `w` of `a · op(w)` (`a` and `w` 2-D, `g` the output's
/// gradient): `aᵀ · g`, or `gᵀ · a` for `a · wᵀ`. When `w` is a weight of the tape the
/// reverse pass takes it as a deferred term ([`Tape::defer_outer`](eddy_tape::Tape::defer_outer)),
/// so a weight used at every step of a recurrence gets one product over all the steps' rows
/// instead of one per step; `None` then, as the pass supplies the gradient.
pub(crate) fn weight_grad<F: Float>(a: &Var<F>, w: &Var<F>, g: &Var<F>, tb: bool) -> Result<Option<Var<F>>> {
    let (lhs, rhs) = if tb { (g, a) } else { (a, g) };
    let tape = g.tape();
    if tape.weight_of(w).is_some() && tape.defer_outer(w, lhs, rhs, outer) {
        return Ok(None);
    }
    matmul_t(lhs, rhs, true, false).map(Some)
}

impl<F: Float> Op<F> for MatMul {
    fn name(&self) -> &str {
        "matmul"
    }

    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("matmul", inputs, 2)?;
        let (a, b) = (inputs[0], inputs[1]);
        let ranks_ok = (2..=3).contains(&a.len()) && (2..=3).contains(&b.len());
        if !ranks_ok {
            return Err(Error::shape("matmul", &[a, b], "operands must be 2-D or 3-D"));
        }
        if a.len() == 3 && b.len() == 3 && a[0] != b[0] {
            return Err(Error::shape("matmul", &[a, b], "batch sizes differ"));
        }
        let (m, k) = MatMul::dims(a, self.ta);
        let (k2, n) = MatMul::dims(b, self.tb);
        if k != k2 {
            return Err(Error::MatmulInner {
                op: "matmul".into(),
                lhs: a.to_vec(),
                rhs: b.to_vec(),
            });
        }
        Ok(match (a.len(), b.len()) {
            (2, 2) => vec![m, n],
            (3, _) => vec![a[0], m, n],
            _ => vec![b[0], m, n],
        })
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let (a, b) = (inputs[0], inputs[1]);
        let shape = <Self as Op<F>>::shape(self, &[a.shape(), b.shape()])?;
        let c = match shape.len() {
            2 => product_vec(&view2(a, None, self.ta), &view2(b, None, self.tb)),
            _ => {
                let (m, n) = (shape[1], shape[2]);
                // SAFETY: each batch's `gemm` with `β = 0` writes every element of its own
                // `[m, n]` block and reads none first (see `kernels::fresh::product_vec`), and
                // the blocks of `0..batches` tile the whole buffer.
                unsafe {
                    written_by(shape.iter().product(), |c| {
                        for (i, block) in c.chunks_exact_mut((m * n).max(1)).enumerate() {
                            let mut cv = ArrayViewMut2::from_shape((m, n), block).expect("[m, n]");
                            gemm(&view2(a, Some(i), self.ta), &view2(b, Some(i), self.tb), &mut cv);
                        }
                    })
                }
            }
        };
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), c).expect("the shape rule's shape"))
    }

    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let da = if !a.requires_grad() {
            None
        } else if !self.ta {
            Some(matmul_t(g, b, false, !self.tb)?)
        } else {
            Some(matmul_t(b, g, self.tb, true)?)
        };
        let db = if !b.requires_grad() {
            None
        } else if !self.ta && a.ndim() == 2 && b.ndim() == 2 {
            // `x · op(W)`: the weight's gradient, deferred across uses where it can be.
            weight_grad(a, b, g, self.tb)?
        } else if !self.tb {
            Some(matmul_t(a, g, !self.ta, false)?)
        } else {
            Some(matmul_t(g, a, true, self.ta)?)
        };
        // A 2-D operand shared across a batch gets the sum of its per-batch gradients.
        Ok(vec![
            da.map(|d| d.sum_to(a.shape())).transpose()?,
            db.map(|d| d.sum_to(b.shape())).transpose()?,
        ])
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
}

/// `op(a) · op(b)` with the given transpose flags. When `b` is a weight of the tape (a bound
/// parameter or a value derived from parameters alone) and `a` is not transposed, `op(b)` is
/// packed once per tape where the kernel runs ([`crate::packed::PackedMatMul`]).
pub fn matmul_t<F: Float>(a: &Var<F>, b: &Var<F>, ta: bool, tb: bool) -> Result<Var<F>> {
    if !ta {
        if let Some(op) = crate::packed::packed_matmul(a, b, tb) {
            return a.tape().apply(op, &[a, b]);
        }
    }
    a.tape().apply(MatMul { ta, tb }, &[a, b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_tape::Tape;
    use ndarray::Array;

    /// The slow reference: three nested loops.
    fn reference(a: &ArrayD<f64>, b: &ArrayD<f64>, ta: bool, tb: bool) -> ArrayD<f64> {
        let a = view2(a, None, ta);
        let b = view2(b, None, tb);
        let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
        let mut c = ArrayD::zeros(IxDyn(&[m, n]));
        for i in 0..m {
            for j in 0..n {
                c[[i, j]] = (0..k).map(|p| a[[i, p]] * b[[p, j]]).sum();
            }
        }
        c
    }

    fn seq(shape: &[usize]) -> ArrayD<f64> {
        let n: usize = shape.iter().product();
        Array::from_iter((0..n).map(|i| (i as f64 * 0.37).sin()))
            .into_shape_with_order(IxDyn(shape))
            .unwrap()
    }

    #[test]
    fn every_transpose_layout_matches_the_reference() {
        let t = Tape::<f64>::new();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = seq(if ta { &[4, 3] } else { &[3, 4] });
            let b = seq(if tb { &[5, 4] } else { &[4, 5] });
            let c = matmul_t(&t.constant(a.clone()), &t.constant(b.clone()), ta, tb).unwrap();
            let r = reference(&a, &b, ta, tb);
            assert!(c.value().iter().zip(r.iter()).all(|(x, y)| (x - y).abs() < 1e-12));
        }
    }

    #[test]
    fn strided_inputs_and_zero_sizes_work() {
        let t = Tape::<f64>::new();
        let a = seq(&[4, 3]).reversed_axes(); // a non-standard layout
        let b = seq(&[4, 2]);
        let c = matmul_t(&t.constant(a.clone()), &t.constant(b.clone()), false, false).unwrap();
        assert!(c
            .value()
            .iter()
            .zip(reference(&a, &b, false, false).iter())
            .all(|(x, y)| (x - y).abs() < 1e-12));
        let z = matmul_t(&t.constant(seq(&[0, 3])), &t.constant(seq(&[3, 2])), false, false).unwrap();
        assert_eq!(z.shape(), &[0, 2]);
        let k0 = matmul_t(&t.constant(seq(&[2, 0])), &t.constant(seq(&[0, 2])), false, false).unwrap();
        assert!(k0.value().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn batched_products_match_per_batch_products() {
        let t = Tape::<f64>::new();
        let a = seq(&[2, 3, 4]);
        let b = seq(&[4, 5]);
        let c = matmul_t(&t.constant(a.clone()), &t.constant(b.clone()), false, false).unwrap();
        for i in 0..2 {
            let ai = a.index_axis(Axis(0), i).to_owned().into_dyn();
            let r = reference(&ai, &b, false, false);
            let ci = c.value().index_axis(Axis(0), i).to_owned();
            assert!(ci.iter().zip(r.iter()).all(|(x, y)| (x - y).abs() < 1e-12));
        }
    }

    #[test]
    fn inner_mismatch_names_the_shapes() {
        let t = Tape::<f32>::new();
        let e = matmul_t(
            &t.constant(ArrayD::zeros(vec![32, 10])),
            &t.constant(ArrayD::zeros(vec![12, 64])),
            false,
            false,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "matmul: inner dimensions differ: [32, 10] · [12, 64]"
        );
    }
}
