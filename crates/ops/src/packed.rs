//! Products by a weight with the weight packed once per tape, whatever the spelling: the
//! ops `matmul`, `matmul_t` (the method and the free function) and `linear` apply when their
//! right operand is a weight of the tape ([`Tape::weight_of`](eddy_tape::Tape::weight_of): a
//! bound parameter, on a recording or a no-grad tape, or a value derived from parameters alone,
//! such as `w.transpose(0, 1)` or `w * mask`), on top of [`crate::kernels::packed`].
//!
//! The rule, in one place ([`takes_packed`]): `f32` at the AVX2 or AVX-512 kernel level, a 2-D
//! weight, more than [`SMALL_ROWS`] rows (fewer take the row kernels, which read the weight
//! where it is), and, from `PACKED_MIN_ROWS` (128) rows on, a weight that `gemm` would pack for the
//! call anyway (a larger one is left to matrixmultiply's blocking). `f64` and the portable level
//! keep the plain GEMM, which is their best path: the packed form there is only a copy.

use crate::fused::Linear;
use crate::kernels::gemm::{PACKED_MIN_ROWS, SMALL_ROWS};
use crate::kernels::packed::{packed_kernel_available, small_b, PackedMatrix};
use crate::MatMul;
use eddy_tape::{Error, Float, Op, ParamId, Result, Saves, Var};
use ndarray::ArrayD;
use std::rc::Rc;

/// Whether a product of `rows` rows by a `[k, n]` weight goes through the weight packed once
/// per tape (see the module's rule).
pub fn takes_packed<F: Float>(rows: usize, k: usize, n: usize) -> bool {
    packed_kernel_available::<F>()
        && rows > SMALL_ROWS
        && (rows < PACKED_MIN_ROWS
            || k.checked_mul(n)
                .and_then(|kn| kn.checked_mul(4))
                .is_some_and(|b| b <= small_b()))
}

/// `a · op(w)` (`op` transposes when `tb`) with `op(w)` packed once per tape: the same op as
/// `MatMul { ta: false, tb }` for every shape rule and gradient. Its first-order backward
/// computes `da = g · op(w)ᵀ` through `w` packed once per tape the other way round too (a
/// cell makes this product at every step of its backward); under `create_graph` it applies
/// `MatMul`'s recorded rule.
pub struct PackedMatMul<F> {
    /// `op(w)`, packed.
    pub packed: Rc<PackedMatrix<F>>,
    /// Whether the weight is used transposed (`a · wᵀ`, as `matmul_t` and `linear`).
    pub tb: bool,
}

impl<F: Float> Op<F> for PackedMatMul<F> {
    fn name(&self) -> &str {
        "matmul"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let shape = Op::<F>::shape(
            &MatMul {
                ta: false,
                tb: self.tb,
            },
            inputs,
        )?;
        let (k, n) = self.packed.dim();
        let want = if self.tb { [n, k] } else { [k, n] };
        if inputs[1] != want || shape.len() != 2 {
            return Err(Error::shape(
                "matmul",
                inputs,
                "the packed weight is not this one",
            ));
        }
        Ok(shape)
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        Ok(self.packed.product(inputs[0]))
    }
    fn backward(&self, inputs: &[Var<F>], output: &Var<F>, grad: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let (a, w) = (&inputs[0], &inputs[1]);
        let tape = grad.tape();
        let plain = MatMul {
            ta: false,
            tb: self.tb,
        };
        let (true, false, Some(id)) = (a.requires_grad(), tape.is_recording(), tape.weight_of(w)) else {
            return plain.backward(inputs, output, grad);
        };
        // da = g · op(w)ᵀ: `w` itself when op(w) = wᵀ, else `wᵀ`.
        let da = tape.constant(packed_weight(w, id, !self.tb).product(grad.value()));
        let dw = match w.requires_grad() {
            true => crate::matmul::weight_grad(a, w, grad, self.tb)?,
            false => None,
        };
        Ok(vec![Some(da), dw])
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
}

/// [`PackedMatMul`] for `a · op(w)` where it applies (a 2-D `a` and a 2-D weight `w` of the
/// tape, by [`takes_packed`]), with `op(w)` packed once per tape.
pub(crate) fn packed_matmul<F: Float>(a: &Var<F>, w: &Var<F>, tb: bool) -> Option<PackedMatMul<F>> {
    let (sa, sw) = (a.shape(), w.shape());
    if sa.len() != 2 || sw.len() != 2 {
        return None;
    }
    let (k, n) = if tb { (sw[1], sw[0]) } else { (sw[0], sw[1]) };
    if sa[1] != k || !takes_packed::<F>(sa[0], k, n) {
        return None;
    }
    let id = a.tape().weight_of(w)?;
    Some(PackedMatMul {
        packed: packed_weight(w, id, tb),
        tb,
    })
}

/// `x · wᵀ (+ b) (+ add)` with `wᵀ` packed once per tape: [`Linear`] (the same shape rule and
/// gradients) whose product, and first-order input gradient `g · w`, run on the packed weight.
pub struct PackedLinear<F> {
    /// Which optional inputs there are.
    pub linear: Linear,
    /// `wᵀ`, packed.
    pub packed: Rc<PackedMatrix<F>>,
}

impl<F: Float> Op<F> for PackedLinear<F> {
    fn name(&self) -> &str {
        "linear"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let shape = Op::<F>::shape(&self.linear, inputs)?;
        if inputs[1] != [self.packed.dim().1, self.packed.dim().0] {
            return Err(Error::shape(
                "linear",
                inputs,
                "the packed weight is not this one",
            ));
        }
        Ok(shape)
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        Ok(self.linear.forward_with(inputs, Some(&self.packed)))
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, grad: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let tape = grad.tape();
        let packed = match (x.requires_grad(), tape.is_recording(), tape.weight_of(w)) {
            (true, false, Some(id)) => Some(packed_weight(w, id, false)),
            _ => None,
        };
        self.linear.backward_with(inputs, grad, packed.as_deref())
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
}

/// [`PackedLinear`] for `x · wᵀ` where it applies (a weight `w` of the tape, by
/// [`takes_packed`] over the rows of `x`).
pub(crate) fn packed_linear<F: Float>(x: &Var<F>, w: &Var<F>, linear: Linear) -> Option<PackedLinear<F>> {
    let (sx, sw) = (x.shape(), w.shape());
    let (Some(&k), 2) = (sx.last(), sw.len()) else {
        return None;
    };
    let rows: usize = sx[..sx.len() - 1].iter().product();
    if k != sw[1] || !takes_packed::<F>(rows, k, sw[0]) {
        return None;
    }
    let id = x.tape().weight_of(w)?;
    Some(PackedLinear {
        linear,
        packed: packed_weight(w, id, true),
    })
}

/// The weight `w` (2-D, weight `id` of its tape) packed once per tape: as `wᵀ` for `a·wᵀ`
/// (memo `"packed_matmul_t"`), or as `w` for `a·w` (memo `"packed_matmul"`).
pub(crate) fn packed_weight<F: Float>(w: &Var<F>, id: ParamId, transposed: bool) -> Rc<PackedMatrix<F>> {
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
    use crate::kernels::test_matrix as m;

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

    /// The product of one spelling on `tape`: its input `h`, the weight it multiplies by, the
    /// result, and the memo name of the weight's packed form; `fast` false spells it with the
    /// plain ops (the slow path).
    type Spelling<'a> = Box<
        dyn Fn(
                &eddy_tape::Tape<f32>,
                bool,
            ) -> (
                eddy_tape::Var<f32>,
                eddy_tape::Var<f32>,
                eddy_tape::Var<f32>,
                &'static str,
            ) + 'a,
    >;

    #[test]
    fn every_spelling_of_a_product_by_a_weight_packs_it_once_per_tape_and_matches_the_plain_ops() {
        use crate::fused::Linear;
        use crate::VarExt;
        use eddy_tape::{GradOptions, Param, Tape};
        let w = Param::new("w", m::<f32>(40, 24, 0.2).into_dyn());
        let b = Param::new(
            "b",
            m::<f32>(1, 40, 0.3).into_shape_with_order(40).unwrap().into_dyn(),
        );
        let h24 = m::<f32>(9, 24, 0.1).into_dyn();
        let h40 = m::<f32>(9, 40, 0.4).into_dyn();
        let mask = m::<f32>(40, 24, 0.7)
            .mapv(|v| if v > 0.0 { 1.0 } else { 0.0 })
            .into_dyn();
        let plain = |t: &Tape<f32>, tb: bool, h: &eddy_tape::Var<f32>, wv: &eddy_tape::Var<f32>| {
            t.apply(MatMul { ta: false, tb }, &[h, wv]).unwrap()
        };
        let spellings: Vec<(&str, Spelling)> = vec![
            (
                "h.matmul_t(&w)",
                Box::new(|t, fast| {
                    let (h, wv) = (t.input(h24.clone()), t.param(&w));
                    let y = if fast {
                        h.matmul_t(&wv).unwrap()
                    } else {
                        plain(t, true, &h, &wv)
                    };
                    (h, wv, y, "packed_matmul_t")
                }),
            ),
            (
                "matmul_t(&h, &w, false, true)",
                Box::new(|t, fast| {
                    let (h, wv) = (t.input(h24.clone()), t.param(&w));
                    let y = if fast {
                        crate::matmul_t(&h, &wv, false, true).unwrap()
                    } else {
                        plain(t, true, &h, &wv)
                    };
                    (h, wv, y, "packed_matmul_t")
                }),
            ),
            (
                "h.linear(&w, Some(&b))",
                Box::new(|t, fast| {
                    let (h, wv, bv) = (t.input(h24.clone()), t.param(&w), t.param(&b));
                    let y = if fast {
                        h.linear(&wv, Some(&bv)).unwrap()
                    } else {
                        t.apply(
                            Linear {
                                bias: true,
                                add: false,
                            },
                            &[&h, &wv, &bv],
                        )
                        .unwrap()
                    };
                    (h, wv, y, "packed_matmul_t")
                }),
            ),
            (
                "h.matmul(&w.transpose(0, 1))",
                Box::new(|t, fast| {
                    let (h, wv) = (t.input(h24.clone()), t.param(&w));
                    let wt = wv.transpose(0, 1).unwrap();
                    let y = if fast {
                        h.matmul(&wt).unwrap()
                    } else {
                        plain(t, false, &h, &wt)
                    };
                    (h, wt, y, "packed_matmul")
                }),
            ),
            (
                "h.matmul(&w)",
                Box::new(|t, fast| {
                    let (h, wv) = (t.input(h40.clone()), t.param(&w));
                    let y = if fast {
                        h.matmul(&wv).unwrap()
                    } else {
                        plain(t, false, &h, &wv)
                    };
                    (h, wv, y, "packed_matmul")
                }),
            ),
            (
                "h.matmul_t(&(w * mask))",
                Box::new(|t, fast| {
                    let (h, wv) = (t.input(h24.clone()), t.param(&w));
                    let wm = (&wv * &t.constant(mask.clone())).unwrap();
                    let y = if fast {
                        h.matmul_t(&wm).unwrap()
                    } else {
                        plain(t, true, &h, &wm)
                    };
                    (h, wm, y, "packed_matmul_t")
                }),
            ),
        ];
        let close = |a: &ndarray::ArrayD<f32>, b: &ndarray::ArrayD<f32>| {
            a.shape() == b.shape()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()))
        };
        // Whether `name` of `weight` is in the tape's memo (made before, so `make` is not called).
        let memoized = |t: &Tape<f32>, weight: &eddy_tape::Var<f32>, name: &'static str| {
            let Some(id) = t.weight_of(weight) else {
                return false;
            };
            let calls = std::cell::Cell::new(0);
            t.memo(id, name, || {
                calls.set(calls.get() + 1);
                PackedMatrix::<f32>::new(&m::<f32>(1, 1, 0.0).view())
            });
            calls.get() == 0
        };
        let other = |name: &str| {
            if name == "packed_matmul_t" {
                "packed_matmul"
            } else {
                "packed_matmul_t"
            }
        };
        for (spelling, product) in &spellings {
            let run = |fast: bool| {
                let t = Tape::new();
                let (h, weight, y, name) = product(&t, fast);
                let loss = (&y * &y).unwrap().sum_all().unwrap();
                let wv = t.param(&w);
                let grads = t
                    .grad(&[&loss], None, &[&h, &wv], GradOptions::default())
                    .unwrap();
                let grads: Vec<_> = grads.into_iter().map(|g| g.unwrap().value().clone()).collect();
                let packed = (memoized(&t, &weight, name), memoized(&t, &weight, other(name)));
                (y.value().clone(), grads, packed)
            };
            let (fast, slow) = (run(true), run(false));
            assert!(close(&fast.0, &slow.0), "{spelling}: values");
            for (g, want) in fast.1.iter().zip(&slow.1) {
                assert!(close(g, want), "{spelling}: gradients");
            }
            let kernel = packed_kernel_available::<f32>();
            assert_eq!(
                fast.2,
                (kernel, kernel),
                "{spelling}: packed forward and backward"
            );
            assert!(!slow.2 .0, "{spelling}: the plain op's forward packs nothing");
            // A no-grad (inference) pass: the same values, the weight packed once for it.
            let t = Tape::no_grad();
            let (_, weight, y, name) = product(&t, true);
            assert!(close(y.value(), &slow.0), "{spelling}: no-grad values");
            let derived_mask = spelling.contains("mask");
            assert_eq!(
                memoized(&t, &weight, name),
                kernel && !derived_mask,
                "{spelling}: no-grad"
            );
        }
    }

    #[test]
    fn f64_and_few_rows_keep_the_plain_product() {
        use crate::VarExt;
        use eddy_tape::{Param, Tape};
        let w = Param::new("w", m::<f64>(40, 24, 0.2).into_dyn());
        let t = Tape::new();
        let y = t
            .input(m::<f64>(9, 24, 0.1).into_dyn())
            .matmul_t(&t.param(&w))
            .unwrap();
        assert_eq!(y.shape(), &[9, 40]);
        let made = std::cell::Cell::new(false);
        t.memo(w.id(), "packed_matmul_t", || {
            made.set(true);
            PackedMatrix::<f64>::new(&m::<f64>(1, 1, 0.0).view())
        });
        assert!(made.get(), "f64 packs nothing (its plain GEMM is its best path)");
        let w32 = Param::new("w", m::<f32>(40, 24, 0.2).into_dyn());
        let t = Tape::new();
        t.input(m::<f32>(4, 24, 0.1).into_dyn())
            .matmul_t(&t.param(&w32))
            .unwrap();
        let made = std::cell::Cell::new(false);
        t.memo(w32.id(), "packed_matmul_t", || {
            made.set(true);
            PackedMatrix::<f32>::new(&m::<f32>(1, 1, 0.0).view())
        });
        assert!(made.get(), "4 rows take the row kernels");
    }
}
