//! Fused kernels for recurrent cells, registered as tape ops with their own backward rules.
//!
//! Each has a fast first-order backward (one loop over raw arrays) used when the reverse pass
//! is not recorded, and a recorded rule written with differentiable ops that gives the same
//! gradients, so `create_graph` (gradients of gradients) works through them too.

use crate::matmul::MatMul;
use crate::{concat, VarExt};
use eddy_tape::{Error, Float, MultiOp, Op, Result, Var};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayD, Ix2, IxDyn};

/// `y = x · wᵀ (+ b) (+ add)` in one GEMM: the bias and the addend are written into the output
/// first and the product accumulated onto them (PyTorch's `addmm`).
///
/// Shapes: `x` `[B, K]`, `w` `[N, K]`, optional `b` `[N]`, optional `add` `[B, N]`; `y` `[B, N]`.
/// Gradient: `dx = g · w`, `dw = gᵀ · x`, `db = Σ_rows g`, `dadd = g`.
///
/// # Errors
/// [`Error::MatmulInner`] if `K` differs; [`Error::Shape`] for other mismatches.
pub struct Linear {
    pub bias: bool,
    pub add: bool,
}

impl<F: Float> Op<F> for Linear {
    fn name(&self) -> &str {
        "linear"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let expected = 2 + self.bias as usize + self.add as usize;
        if inputs.len() != expected {
            return Err(Error::Arity {
                op: "linear".into(),
                expected,
                got: inputs.len(),
            });
        }
        let (x, w) = (inputs[0], inputs[1]);
        if x.len() != 2 || w.len() != 2 {
            return Err(Error::shape("linear", inputs, "x and w must be 2-D"));
        }
        if x[1] != w[1] {
            return Err(Error::MatmulInner {
                op: "linear".into(),
                lhs: x.to_vec(),
                rhs: w.to_vec(),
            });
        }
        let out = vec![x[0], w[0]];
        if self.bias && inputs[2] != [w[0]] {
            return Err(Error::shape("linear", inputs, "the bias must be [N]"));
        }
        if self.add && inputs[expected - 1] != out.as_slice() {
            return Err(Error::shape("linear", inputs, "the addend must be [B, N]"));
        }
        Ok(out)
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let (x, w) = (inputs[0], inputs[1]);
        let (rows, n) = (x.shape()[0], w.shape()[0]);
        let mut y = if self.add {
            inputs[inputs.len() - 1].as_standard_layout().into_owned()
        } else {
            ArrayD::zeros(IxDyn(&[rows, n]))
        };
        if self.bias {
            y += inputs[2];
        }
        let x2 = x.view().into_dimensionality::<Ix2>().expect("2-D");
        let w2 = w.view().into_dimensionality::<Ix2>().expect("2-D");
        let mut y2 = y.view_mut().into_dimensionality::<Ix2>().expect("2-D");
        general_mat_mul(F::one(), &x2, &w2.t(), F::one(), &mut y2);
        Ok(y)
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let t = g.tape();
        let mut out = vec![
            x.requires_grad()
                .then(|| t.apply(MatMul { ta: false, tb: false }, &[g, w]))
                .transpose()?,
            w.requires_grad()
                .then(|| t.apply(MatMul { ta: true, tb: false }, &[g, x]))
                .transpose()?,
        ];
        if self.bias {
            out.push(inputs[2].requires_grad().then(|| g.sum(0, false)).transpose()?);
        }
        if self.add {
            out.push(inputs[inputs.len() - 1].requires_grad().then(|| g.clone()));
        }
        Ok(out)
    }
}

/// `x · wᵀ + b + add` with the optional parts, through the fused [`Linear`] op.
pub fn linear_add<F: Float>(
    x: &Var<F>,
    w: &Var<F>,
    b: Option<&Var<F>>,
    add: Option<&Var<F>>,
) -> Result<Var<F>> {
    let mut inputs = vec![x, w];
    inputs.extend(b);
    inputs.extend(add);
    x.tape().apply(
        Linear {
            bias: b.is_some(),
            add: add.is_some(),
        },
        &inputs,
    )
}

fn two<F: Float>(x: &ArrayD<F>) -> ndarray::ArrayView2<'_, F> {
    x.view().into_dimensionality::<Ix2>().expect("2-D")
}

/// The LSTM gate math after the matrix products, fused: from the pre-activations `gates`
/// `[B, 4H]` (order i, f, g, o) and the cell `c` `[B, H]`, the outputs `h'` and `c'`:
///
/// ```text
/// c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g),   h' = σ(o) ⊙ tanh(c')
/// ```
///
/// Gradient (with `dc̃ = dc' + dh' ⊙ σ(o) ⊙ (1 − tanh²c')`): `do = dh' ⊙ tanh c' ⊙ σ'(o)`,
/// `di = dc̃ ⊙ tanh g ⊙ σ'(i)`, `df = dc̃ ⊙ c ⊙ σ'(f)`, `dg = dc̃ ⊙ σ(i) ⊙ (1 − tanh²g)`,
/// `dc = dc̃ ⊙ σ(f)`.
pub struct LstmPointwise;

impl<F: Float> MultiOp<F> for LstmPointwise {
    fn name(&self) -> &str {
        "lstm_pointwise"
    }
    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
        let (g, c) = (inputs[0], inputs[1]);
        if g.len() != 2 || c.len() != 2 || g[0] != c[0] || g[1] != 4 * c[1] {
            return Err(Error::shape(
                "lstm_pointwise",
                inputs,
                "expected gates [B, 4H] and c [B, H]",
            ));
        }
        Ok(vec![c.to_vec(), c.to_vec()])
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        let (g, c) = (two(inputs[0]), two(inputs[1]));
        let (b, h) = (c.nrows(), c.ncols());
        let mut h_out = ArrayD::zeros(IxDyn(&[b, h]));
        let mut c_out = ArrayD::zeros(IxDyn(&[b, h]));
        {
            let mut ho = h_out.view_mut().into_dimensionality::<Ix2>().expect("2-D");
            let mut co = c_out.view_mut().into_dimensionality::<Ix2>().expect("2-D");
            for r in 0..b {
                let gr = g.row(r);
                for j in 0..h {
                    let (si, sf, tg, so) = (
                        gr[j].fast_sigmoid(),
                        gr[h + j].fast_sigmoid(),
                        gr[2 * h + j].fast_tanh(),
                        gr[3 * h + j].fast_sigmoid(),
                    );
                    let c1 = sf * c[[r, j]] + si * tg;
                    co[[r, j]] = c1;
                    ho[[r, j]] = so * c1.fast_tanh();
                }
            }
        }
        Ok(vec![h_out, c_out])
    }
    fn backward(
        &self,
        inputs: &[Var<F>],
        outputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let (gates, c) = (&inputs[0], &inputs[1]);
        let tape = gates.tape();
        let zeros = || tape.constant(ArrayD::zeros(c.shape()));
        let dh = grads[0].clone().unwrap_or_else(zeros);
        let dc = grads[1].clone().unwrap_or_else(zeros);
        if tape.is_recording() {
            // The recorded rule: the same formulas with differentiable ops.
            let [i, f, g, o]: [Var<F>; 4] = gates.chunk(4, 1)?.try_into().expect("four chunks");
            let (si, sf, tg, so) = (i.sigmoid()?, f.sigmoid()?, g.tanh()?, o.sigmoid()?);
            let tc = outputs[1].tanh()?;
            let one_minus = |v: &Var<F>| v.affine(-F::one(), F::one(), "one_minus");
            let dsig = |s: &Var<F>| s * one_minus(s)?;
            let dct = (&dc + ((&dh * &so)? * one_minus(&(&tc * &tc)?)?)?)?;
            let d_o = ((&dh * &tc)? * dsig(&so)?)?;
            let d_i = ((&dct * &tg)? * dsig(&si)?)?;
            let d_f = ((&dct * c)? * dsig(&sf)?)?;
            let d_g = ((&dct * &si)? * one_minus(&(&tg * &tg)?)?)?;
            let dgates = concat(&[&d_i, &d_f, &d_g, &d_o], 1)?;
            return Ok(vec![Some(dgates), Some((&dct * &sf)?)]);
        }
        let (gv, cv, c1) = (two(gates.value()), two(c.value()), two(outputs[1].value()));
        let (dhv, dcv) = (two(dh.value()), two(dc.value()));
        let (b, h) = (cv.nrows(), cv.ncols());
        let mut dg = ArrayD::<F>::zeros(IxDyn(&[b, 4 * h]));
        let mut dcp = ArrayD::<F>::zeros(IxDyn(&[b, h]));
        {
            let mut dg2 = dg.view_mut().into_dimensionality::<Ix2>().expect("2-D");
            let mut dc2 = dcp.view_mut().into_dimensionality::<Ix2>().expect("2-D");
            let one = F::one();
            for r in 0..b {
                let (g, mut d) = (gv.row(r), dg2.row_mut(r));
                for j in 0..h {
                    let (si, sf, tg, so) = (
                        g[j].fast_sigmoid(),
                        g[h + j].fast_sigmoid(),
                        g[2 * h + j].fast_tanh(),
                        g[3 * h + j].fast_sigmoid(),
                    );
                    let tc = c1[[r, j]].fast_tanh();
                    let dhj = dhv[[r, j]];
                    let dct = dcv[[r, j]] + dhj * so * (one - tc * tc);
                    d[j] = dct * tg * si * (one - si);
                    d[h + j] = dct * cv[[r, j]] * sf * (one - sf);
                    d[2 * h + j] = dct * si * (one - tg * tg);
                    d[3 * h + j] = dhj * tc * so * (one - so);
                    dc2[[r, j]] = dct * sf;
                }
            }
        }
        Ok(vec![Some(tape.constant(dg)), Some(tape.constant(dcp))])
    }
}

/// The GRU gate math after the matrix products, fused: from `xw = W_ih x + b_ih` and
/// `hw = W_hh h + b_hh` (both `[B, 3H]`, order r, z, n) and `h` `[B, H]`:
///
/// ```text
/// r = σ(xr + hr),  z = σ(xz + hz),  n = tanh(xn + r ⊙ hn),  h' = (1 − z) ⊙ n + z ⊙ h
/// ```
///
/// Gradient (with `dn̂ = dh' ⊙ (1 − z) ⊙ (1 − n²)`, `dẑ = dh' ⊙ (h − n) ⊙ σ'(z)`,
/// `dr̂ = dn̂ ⊙ hn ⊙ σ'(r)`): `dxw = [dr̂, dẑ, dn̂]`, `dhw = [dr̂, dẑ, dn̂ ⊙ r]`, `dh = dh' ⊙ z`.
pub struct GruPointwise;

impl<F: Float> Op<F> for GruPointwise {
    fn name(&self) -> &str {
        "gru_pointwise"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let (xw, hw, h) = (inputs[0], inputs[1], inputs[2]);
        if xw != hw || h.len() != 2 || xw.len() != 2 || xw[0] != h[0] || xw[1] != 3 * h[1] {
            return Err(Error::shape(
                "gru_pointwise",
                inputs,
                "expected xw, hw [B, 3H] and h [B, H]",
            ));
        }
        Ok(h.to_vec())
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let (xw, hw, hp) = (two(inputs[0]), two(inputs[1]), two(inputs[2]));
        let (b, h) = (hp.nrows(), hp.ncols());
        let mut out = ArrayD::zeros(IxDyn(&[b, h]));
        let mut o = out.view_mut().into_dimensionality::<Ix2>().expect("2-D");
        for r in 0..b {
            let (x, y) = (xw.row(r), hw.row(r));
            for j in 0..h {
                let rg = (x[j] + y[j]).fast_sigmoid();
                let z = (x[h + j] + y[h + j]).fast_sigmoid();
                let n = (x[2 * h + j] + rg * y[2 * h + j]).fast_tanh();
                o[[r, j]] = n + z * (hp[[r, j]] - n);
            }
        }
        Ok(out)
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let (xw, hw, hp) = (&inputs[0], &inputs[1], &inputs[2]);
        let tape = g.tape();
        if tape.is_recording() {
            let [xr, xz, xn]: [Var<F>; 3] = xw.chunk(3, 1)?.try_into().expect("three chunks");
            let [hr, hz, hn]: [Var<F>; 3] = hw.chunk(3, 1)?.try_into().expect("three chunks");
            let one_minus = |v: &Var<F>| v.affine(-F::one(), F::one(), "one_minus");
            let r = (xr + &hr)?.sigmoid()?;
            let z = (xz + &hz)?.sigmoid()?;
            let n = (&xn + (&r * &hn)?)?.tanh()?;
            let dn = ((g * one_minus(&z)?)? * one_minus(&(&n * &n)?)?)?;
            let dz = ((g * (hp - &n)?)? * (&z * one_minus(&z)?)?)?;
            let dr = ((&dn * &hn)? * (&r * one_minus(&r)?)?)?;
            let dxw = concat(&[&dr, &dz, &dn], 1)?;
            let dhw = concat(&[&dr, &dz, &(&dn * &r)?], 1)?;
            return Ok(vec![Some(dxw), Some(dhw), Some((g * &z)?)]);
        }
        let (x, y, hv, gv) = (two(xw.value()), two(hw.value()), two(hp.value()), two(g.value()));
        let (b, h) = (hv.nrows(), hv.ncols());
        let mut dxw = ArrayD::<F>::zeros(IxDyn(&[b, 3 * h]));
        let mut dhw = ArrayD::<F>::zeros(IxDyn(&[b, 3 * h]));
        let mut dh = ArrayD::<F>::zeros(IxDyn(&[b, h]));
        {
            let mut dx2 = dxw.view_mut().into_dimensionality::<Ix2>().expect("2-D");
            let mut dy2 = dhw.view_mut().into_dimensionality::<Ix2>().expect("2-D");
            let mut dh2 = dh.view_mut().into_dimensionality::<Ix2>().expect("2-D");
            let one = F::one();
            for r in 0..b {
                for j in 0..h {
                    let rg = (x[[r, j]] + y[[r, j]]).fast_sigmoid();
                    let z = (x[[r, h + j]] + y[[r, h + j]]).fast_sigmoid();
                    let hn = y[[r, 2 * h + j]];
                    let n = (x[[r, 2 * h + j]] + rg * hn).fast_tanh();
                    let gj = gv[[r, j]];
                    let dn = gj * (one - z) * (one - n * n);
                    let dz = gj * (hv[[r, j]] - n) * z * (one - z);
                    let dr = dn * hn * rg * (one - rg);
                    dx2[[r, j]] = dr;
                    dx2[[r, h + j]] = dz;
                    dx2[[r, 2 * h + j]] = dn;
                    dy2[[r, j]] = dr;
                    dy2[[r, h + j]] = dz;
                    dy2[[r, 2 * h + j]] = dn * rg;
                    dh2[[r, j]] = gj * z;
                }
            }
        }
        let need = |v: &Var<F>, a: ArrayD<F>| v.requires_grad().then(|| tape.constant(a));
        Ok(vec![need(xw, dxw), need(hw, dhw), need(hp, dh)])
    }
}
