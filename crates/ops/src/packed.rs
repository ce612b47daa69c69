//! Products by a bound parameter with the weight packed once per tape: the op a user's cell
//! gets from `h.matmul_t(&tape.param(&w))`, on top of [`crate::kernels::packed`].

use crate::kernels::packed::{packed_kernel_available, PackedMatrix};
use eddy_tape::Float;

/// `a · wᵀ` with `w` packed once per tape: what [`VarExt::matmul_t`](crate::VarExt::matmul_t)
/// applies when `w` is a bound parameter, the element type `f32` with the AVX-512 kernel, and
/// `a` has more than a few rows (a user's cell multiplying its weight by the state at every
/// step). The same op as `MatMul { ta: false, tb: true }` for every shape rule and gradient.
pub struct PackedMatMulT<F> {
    /// `wᵀ`, packed.
    pub packed: std::rc::Rc<PackedMatrix<F>>,
}

impl<F: Float> eddy_tape::Op<F> for PackedMatMulT<F> {
    fn name(&self) -> &str {
        "matmul"
    }
    fn shape(&self, inputs: &[&[usize]]) -> eddy_tape::Result<Vec<usize>> {
        let shape = eddy_tape::Op::<F>::shape(&crate::MatMul { ta: false, tb: true }, inputs)?;
        let (k, n) = self.packed.dim();
        if inputs[1] != [n, k] || shape.len() != 2 {
            return Err(eddy_tape::Error::shape(
                "matmul",
                inputs,
                "the packed weight is not this one",
            ));
        }
        Ok(shape)
    }
    fn forward(&self, inputs: &[&ndarray::ArrayD<F>]) -> eddy_tape::Result<ndarray::ArrayD<F>> {
        Ok(self.packed.product(inputs[0]))
    }
    /// `MatMul`'s rule; without `create_graph`, `da = g·w` runs through `w` packed once per tape
    /// too (a user's cell makes this product at every step of its backward).
    fn backward(
        &self,
        inputs: &[eddy_tape::Var<F>],
        output: &eddy_tape::Var<F>,
        grad: &eddy_tape::Var<F>,
    ) -> eddy_tape::Result<Vec<Option<eddy_tape::Var<F>>>> {
        let (a, w) = (&inputs[0], &inputs[1]);
        let tape = grad.tape();
        let param = tape.param_of(w);
        let (true, false, Some(id)) = (a.requires_grad(), tape.is_recording(), param) else {
            return crate::MatMul { ta: false, tb: true }.backward(inputs, output, grad);
        };
        let da = tape.constant(packed_param(w, id, false).product(grad.value()));
        let dw = w
            .requires_grad()
            .then(|| crate::matmul_t(grad, a, true, false))
            .transpose()?;
        Ok(vec![Some(da), dw])
    }
}

/// [`PackedMatMulT`] for `a · wᵀ` where it applies (see there), with `wᵀ` packed once per tape.
pub(crate) fn packed_matmul_t<F: Float>(
    a: &eddy_tape::Var<F>,
    w: &eddy_tape::Var<F>,
) -> Option<PackedMatMulT<F>> {
    let (sa, sw) = (a.shape(), w.shape());
    let fits = sa.len() == 2 && sw.len() == 2 && sa[1] == sw[1] && sa[0] > crate::kernels::gemm::SMALL_ROWS;
    if !fits || !packed_kernel_available::<F>() {
        return None;
    }
    let id = a.tape().param_of(w)?;
    Some(PackedMatMulT {
        packed: packed_param(w, id, true),
    })
}

/// The bound parameter `w` (`[N, K]`, parameter `id`) packed once per tape: as `wᵀ` for
/// `a·wᵀ` (the forward product), or as `w` for `g·w` (its backward).
fn packed_param<F: Float>(
    w: &eddy_tape::Var<F>,
    id: eddy_tape::ParamId,
    transposed: bool,
) -> std::rc::Rc<PackedMatrix<F>> {
    let name = if transposed {
        "packed_matmul_t"
    } else {
        "packed_matmul"
    };
    w.tape().memo(id, name, || {
        let w2 = w
            .value()
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .expect("2-D");
        PackedMatrix::new(&if transposed { w2.t() } else { w2 })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn m<F: Float>(r: usize, c: usize, seed: f64) -> Array2<F> {
        Array2::from_shape_fn((r, c), |(i, j)| {
            F::of(((i * 7 + j * 3) as f64 * 0.37 + seed).sin())
        })
    }

    #[test]
    fn matmul_t_by_a_bound_parameter_packs_it_once_per_tape_forward_and_backward_and_matches_matmul() {
        use crate::VarExt;
        use eddy_tape::{GradOptions, Param, Tape};
        let w = Param::new("w", m::<f32>(40, 24, 0.2).into_dyn());
        let tape = Tape::new();
        let wv = tape.param(&w);
        let (h1, h2) = (
            tape.input(m::<f32>(9, 24, 0.1).into_dyn()),
            tape.input(m::<f32>(9, 24, 0.5).into_dyn()),
        );
        let y = (&h1.matmul_t(&wv).unwrap() + &h2.matmul_t(&wv).unwrap()).unwrap();
        let loss = (&y * &y).unwrap().sum_all().unwrap();
        let got = tape
            .grad(&[&loss], None, &[&h1, &wv], GradOptions::default())
            .unwrap();
        // The same through the plain MatMul op.
        let plain = Tape::new();
        let (pw, p1, p2) = (
            plain.param(&w),
            plain.input(h1.value().clone()),
            plain.input(h2.value().clone()),
        );
        let mm = |a: &eddy_tape::Var<f32>| {
            plain
                .apply(crate::MatMul { ta: false, tb: true }, &[a, &pw])
                .unwrap()
        };
        let py = (&mm(&p1) + &mm(&p2)).unwrap();
        let ploss = (&py * &py).unwrap().sum_all().unwrap();
        let want = plain
            .grad(&[&ploss], None, &[&p1, &pw], GradOptions::default())
            .unwrap();
        let close = |a: &ndarray::ArrayD<f32>, b: &ndarray::ArrayD<f32>| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()))
        };
        assert!(close(y.value(), py.value()));
        for (g, w) in got.iter().zip(&want) {
            assert!(close(g.as_ref().unwrap().value(), w.as_ref().unwrap().value()));
        }
        // Packed once: both products share it (where the kernel runs).
        if packed_kernel_available::<f32>() {
            let id = tape.param_of(&wv).expect("a bound parameter");
            // `wᵀ` made by the first matmul_t, `w` by the backward (for g·w).
            for (name, dim) in [("packed_matmul_t", (24, 40)), ("packed_matmul", (40, 24))] {
                let calls = std::cell::Cell::new(0);
                let packed = tape.memo(id, name, || {
                    calls.set(calls.get() + 1);
                    PackedMatrix::<f32>::new(&m::<f32>(1, 1, 0.0).view())
                });
                assert_eq!((calls.get(), packed.dim()), (0, dim), "{name}");
            }
        }
    }
}
