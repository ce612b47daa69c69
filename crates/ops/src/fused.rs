//! Fused kernels for recurrent cells, registered as tape ops with their own backward rules.
//!
//! Each has a fast first-order backward (one loop over raw arrays) used when the reverse pass
//! is not recorded, and a recorded rule written with differentiable ops that gives the same
//! gradients, so `create_graph` (gradients of gradients) works through them too.

use crate::kernels::fresh::{product_vec, written_by};
use crate::kernels::gates::{
    add_row, column_sums, gru_row_backward, gru_row_forward, lstm_row_backward, lstm_row_forward,
};
use crate::kernels::packed::PackedMatrix;
use crate::matmul::MatMul;
use crate::{concat, VarExt};
use eddy_tape::{Error, Float, MultiOp, Op, Result, Saves, Var};
use ndarray::{ArrayD, ArrayView2, ArrayViewMut2, Ix2, IxDyn};

/// `y = x · wᵀ (+ b) (+ add)` in one GEMM: the bias and the addend are written into the output
/// first and the product accumulated onto them (PyTorch's `addmm`). `x` may have any rank ≥ 1:
/// its leading axes are rows (`[T, B, K]` is `T·B` rows), as `torch.nn.functional.linear`.
///
/// Shapes: `x` `[..., K]`, `w` `[N, K]`, optional `b` `[N]`, optional `add` `[..., N]`; `y`
/// `[..., N]`. Gradient (over the rows): `dx = g · w`, `dw = gᵀ · x`, `db = Σ_rows g`, `dadd = g`.
///
/// # Errors
/// [`Error::MatmulInner`] if `K` differs; [`Error::Shape`] for other mismatches.
pub struct Linear {
    /// Whether an input `b` `[N]` is added to every row.
    pub bias: bool,
    /// Whether an input `add` `[..., N]` is added (a residual, or the recurrent term).
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
        if x.is_empty() || w.len() != 2 {
            return Err(Error::shape(
                "linear",
                inputs,
                "x must have an axis and w must be 2-D",
            ));
        }
        if x[x.len() - 1] != w[1] {
            return Err(Error::MatmulInner {
                op: "linear".into(),
                lhs: x.to_vec(),
                rhs: w.to_vec(),
            });
        }
        let mut out = x.to_vec();
        *out.last_mut().expect("x has an axis") = w[0];
        if self.bias && inputs[2] != [w[0]] {
            return Err(Error::shape("linear", inputs, "the bias must be [N]"));
        }
        if self.add && inputs[expected - 1] != out.as_slice() {
            return Err(Error::shape("linear", inputs, "the addend must be [..., N]"));
        }
        Ok(out)
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        Ok(self.forward_with(inputs, None))
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        self.backward_with(inputs, g, None)
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
}

impl Linear {
    /// The forward, the product through `wt` (`wᵀ` packed) when given.
    pub(crate) fn forward_with<F: Float>(
        &self,
        inputs: &[&ArrayD<F>],
        wt: Option<&PackedMatrix<F>>,
    ) -> ArrayD<F> {
        let (x, w) = (inputs[0], inputs[1]);
        let (k, n) = (w.shape()[1], w.shape()[0]);
        let rows = x.shape()[..x.ndim() - 1].iter().product();
        let xs = flat(x);
        let w2 = w.view().into_dimensionality::<Ix2>().expect("2-D");
        // `y = x·wᵀ` into `y` (`accumulate`: onto what it holds).
        let product = |y: &mut [F], accumulate: bool| match wt {
            Some(wt) => wt.mul_into(&xs, y, accumulate),
            None => {
                let x2 = ArrayView2::from_shape((rows, k), &xs).expect("x is [rows, K]");
                let mut y2 = ArrayViewMut2::from_shape((rows, n), y).expect("y is [rows, N]");
                let beta = if accumulate { F::one() } else { F::zero() };
                crate::kernels::gemm::gemm_unchecked(F::one(), &x2, &w2.t(), beta, &mut y2);
            }
        };
        // y starts as add + b (or b alone, copied row by row), then the GEMM accumulates onto
        // it; with neither, the GEMM writes a fresh y, never zeroed.
        let out = match (self.add, self.bias, wt) {
            (false, false, _) => {
                // SAFETY: the product without `accumulate` writes every element of `y` and
                // reads none first (`gemm` with `β = 0`, or the packed kernel's first `KC`
                // slice; see `kernels::fresh`).
                unsafe { written_by(rows * n, |y| product(y, false)) }
            }
            (false, true, Some(wt)) => {
                // The packed kernel adds the bias as it stores its first sums.
                let b = flat(inputs[2]);
                // SAFETY: `mul_into_bias` writes every element of `y` and reads none first.
                unsafe { written_by(rows * n, |y| wt.mul_into_bias(&xs, y, &b)) }
            }
            (add, bias, _) => {
                let mut out = match add {
                    true => flat(inputs[inputs.len() - 1]).into_owned(),
                    false => flat(inputs[2]).repeat(rows),
                };
                if add && bias {
                    let b = flat(inputs[2]);
                    for row in out.chunks_exact_mut(n.max(1)) {
                        add_row(row, &b);
                    }
                }
                product(&mut out, true);
                out
            }
        };
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("x has an axis") = n;
        shaped(out, &shape)
    }
    /// The backward; the first-order `dx = g · w` through `w_packed` (`w` packed) when given.
    pub(crate) fn backward_with<F: Float>(
        &self,
        inputs: &[Var<F>],
        g: &Var<F>,
        w_packed: Option<&PackedMatrix<F>>,
    ) -> Result<Vec<Option<Var<F>>>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let t = g.tape();
        let (need_x, need_w) = (x.requires_grad(), w.requires_grad());
        let need_b = self.bias && inputs[2].requires_grad();
        let (dx, dw, db) = if t.is_recording() {
            // The recorded rule: the same products with differentiable ops, over 2-D rows.
            let (k, n) = (w.shape()[1], w.shape()[0]);
            let rows = x.shape()[..x.ndim() - 1].iter().product();
            let (x2, g2) = match x.ndim() {
                2 => (x.clone(), g.clone()),
                _ => (x.reshape(&[rows, k])?, g.reshape(&[rows, n])?),
            };
            let dx = need_x
                .then(|| {
                    t.apply(MatMul { ta: false, tb: false }, &[&g2, w])?
                        .reshape(x.shape())
                })
                .transpose()?;
            let dw = need_w
                .then(|| t.apply(MatMul { ta: true, tb: false }, &[&g2, &x2]))
                .transpose()?;
            let db = need_b.then(|| g2.sum(0, false)).transpose()?;
            (dx, dw, db)
        } else {
            // The fast rule: GEMMs on 2-D views of the arrays, no reshaped copies.
            let (k, n) = (w.shape()[1], w.shape()[0]);
            let (gs, xs) = (flat(g.value()), flat(x.value()));
            let rows = x.shape()[..x.ndim() - 1].iter().product();
            let g2 = ArrayView2::from_shape((rows, n), &gs).expect("g is [rows, N]");
            let w2 = w.value().view().into_dimensionality::<Ix2>().expect("2-D");
            let dx = need_x.then(|| {
                let dx = match w_packed {
                    // SAFETY: `mul_into` without `accumulate` writes every element of `dx` and
                    // reads none first (see `PackedMatrix::product`).
                    Some(w) => unsafe { written_by(rows * k, |dx| w.mul_into(&gs, dx, false)) },
                    None => product_vec(&g2, &w2),
                };
                t.constant(shaped(dx, x.shape()))
            });
            // A weight of the tape used at every step (`linear_add(h, w_hh, None, Some(xw))` in
            // a cell) gets its gradient as a deferred term, one product over all the steps'
            // rows, as `matmul_t` does ([`crate::matmul::weight_grad`]).
            let deferred = need_w
                && x.ndim() == 2
                && t.weight_of(w).is_some()
                && t.defer_outer(w, g, x, crate::matmul::outer);
            let dw = (need_w && !deferred).then(|| {
                let x2 = ArrayView2::from_shape((rows, k), &xs).expect("x is [rows, K]");
                t.constant(shaped(product_vec(&g2.t(), &x2), &[n, k]))
            });
            let db = need_b.then(|| t.constant(shaped(column_sums(&gs, n), &[n])));
            (dx, dw, db)
        };
        let mut out = vec![dx, dw];
        if self.bias {
            out.push(db);
        }
        if self.add {
            out.push(inputs[inputs.len() - 1].requires_grad().then(|| g.clone()));
        }
        Ok(out)
    }
}

/// `x · wᵀ + b + add` with the optional parts, through the fused [`Linear`] op.
///
/// When `w` is a weight of the tape (a bound parameter, or a value derived from parameters
/// alone), the product runs on `wᵀ` packed once per tape where [`crate::packed::takes_packed`]
/// says so ([`crate::packed::PackedLinear`]).
pub fn linear_add<F: Float>(
    x: &Var<F>,
    w: &Var<F>,
    b: Option<&Var<F>>,
    add: Option<&Var<F>>,
) -> Result<Var<F>> {
    let mut inputs = vec![x, w];
    inputs.extend(b);
    inputs.extend(add);
    let linear = Linear {
        bias: b.is_some(),
        add: add.is_some(),
    };
    match crate::packed::packed_linear(x, w, linear) {
        Some(op) => x.tape().apply(op, &inputs),
        None => x.tape().apply(
            Linear {
                bias: b.is_some(),
                add: add.is_some(),
            },
            &inputs,
        ),
    }
}

/// The elements in row-major order, borrowed when the array is already laid out that way.
pub(crate) fn flat<F: Float>(x: &ArrayD<F>) -> std::borrow::Cow<'_, [F]> {
    match x.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(x.iter().copied().collect()),
    }
}

/// `v` as an array of `shape` (whose element count it has).
pub(crate) fn shaped<F: Float>(v: Vec<F>, shape: &[usize]) -> ArrayD<F> {
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("the length is the shape's product")
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
///
/// A third output holds the activations `[σ(i), σ(f), tanh(g), σ(o), tanh(c')]` (`[B, 5H]`):
/// the fast backward reads them instead of recomputing, and they are there to inspect (gate
/// activations over time). No gradient flows into it.
pub struct LstmPointwise;

impl<F: Float> MultiOp<F> for LstmPointwise {
    fn name(&self) -> &str {
        "lstm_pointwise"
    }
    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
        crate::arity("lstm_pointwise", inputs, 2)?;
        let (g, c) = (inputs[0], inputs[1]);
        // Checked: `5H` (the saved activations) must not wrap round.
        let wide = |k: usize| c.get(1).and_then(|h| h.checked_mul(k));
        if g.len() != 2 || c.len() != 2 || g[0] != c[0] || Some(g[1]) != wide(4) || wide(5).is_none() {
            return Err(Error::shape(
                "lstm_pointwise",
                inputs,
                "expected gates [B, 4H] and c [B, H]",
            ));
        }
        Ok(vec![
            c.to_vec(),
            c.to_vec(),
            vec![c[0], wide(5).expect("checked")],
        ])
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        let (b, h) = (inputs[1].shape()[0], inputs[1].shape()[1]);
        let (g, c) = (flat(inputs[0]), flat(inputs[1]));
        let (mut ho, mut co) = (vec![F::zero(); b * h], vec![F::zero(); b * h]);
        let mut acts = vec![F::zero(); b * 5 * h];
        for r in 0..b {
            let gr = &g[r * 4 * h..(r + 1) * 4 * h];
            let (gi, gf, gg, go) = (&gr[..h], &gr[h..2 * h], &gr[2 * h..3 * h], &gr[3 * h..4 * h]);
            let (cp, hn, cn) = (
                &c[r * h..(r + 1) * h],
                &mut ho[r * h..(r + 1) * h],
                &mut co[r * h..(r + 1) * h],
            );
            let a = &mut acts[r * 5 * h..(r + 1) * 5 * h];
            let (si, rest) = a.split_at_mut(h);
            let (sf, rest) = rest.split_at_mut(h);
            let (tg, rest) = rest.split_at_mut(h);
            let (so, tc) = rest.split_at_mut(h);
            lstm_row_forward([gi, gf, gg, go], cp, [si, sf, tg, so, tc], cn, hn);
        }
        Ok(vec![
            shaped(ho, &[b, h]),
            shaped(co, &[b, h]),
            shaped(acts, &[b, 5 * h]),
        ])
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
        let (b, h) = (c.shape()[0], c.shape()[1]);
        let (cv, acts) = (flat(c.value()), flat(outputs[2].value()));
        let (dhv, dcv) = (flat(dh.value()), flat(dc.value()));
        let (mut dg, mut dcp) = (vec![F::zero(); b * 4 * h], vec![F::zero(); b * h]);
        for r in 0..b {
            let a = &acts[r * 5 * h..(r + 1) * 5 * h];
            let (si, sf, tg, so, tc) = (
                &a[..h],
                &a[h..2 * h],
                &a[2 * h..3 * h],
                &a[3 * h..4 * h],
                &a[4 * h..5 * h],
            );
            let d = &mut dg[r * 4 * h..(r + 1) * 4 * h];
            let (di, rest) = d.split_at_mut(h);
            let (df, rest) = rest.split_at_mut(h);
            let (dgg, d_o) = rest.split_at_mut(h);
            let rows = r * h..(r + 1) * h;
            let (cp, dhr, dcr) = (&cv[rows.clone()], &dhv[rows.clone()], &dcv[rows.clone()]);
            lstm_row_backward(
                [si, sf, tg, so, tc],
                cp,
                dhr,
                dcr,
                [di, df, dgg, d_o],
                &mut dcp[rows],
            );
        }
        let (dg, dcp) = (shaped(dg, &[b, 4 * h]), shaped(dcp, &[b, h]));
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
        crate::arity("gru_pointwise", inputs, 3)?;
        let (xw, hw, h) = (inputs[0], inputs[1], inputs[2]);
        let wide = h.get(1).and_then(|h| h.checked_mul(3));
        if xw != hw || h.len() != 2 || xw.len() != 2 || xw[0] != h[0] || Some(xw[1]) != wide {
            return Err(Error::shape(
                "gru_pointwise",
                inputs,
                "expected xw, hw [B, 3H] and h [B, H]",
            ));
        }
        Ok(h.to_vec())
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let (b, h) = (inputs[2].shape()[0], inputs[2].shape()[1]);
        let (xw, hw, hp) = (flat(inputs[0]), flat(inputs[1]), flat(inputs[2]));
        let mut out = vec![F::zero(); b * h];
        for r in 0..b {
            let (x, y) = (&xw[r * 3 * h..(r + 1) * 3 * h], &hw[r * 3 * h..(r + 1) * 3 * h]);
            let (xr, xz, xn) = (&x[..h], &x[h..2 * h], &x[2 * h..3 * h]);
            let (yr, yz, yn) = (&y[..h], &y[h..2 * h], &y[2 * h..3 * h]);
            let (hr, o) = (&hp[r * h..(r + 1) * h], &mut out[r * h..(r + 1) * h]);
            gru_row_forward([xr, xz, xn], [yr, yz, yn], hr, o);
        }
        Ok(shaped(out, &[b, h]))
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
        let (b, h) = (hp.shape()[0], hp.shape()[1]);
        let (xv, yv, hv, gv) = (
            flat(xw.value()),
            flat(hw.value()),
            flat(hp.value()),
            flat(g.value()),
        );
        let (mut dxw, mut dhw, mut dh) = (
            vec![F::zero(); b * 3 * h],
            vec![F::zero(); b * 3 * h],
            vec![F::zero(); b * h],
        );
        for r in 0..b {
            let wide = r * 3 * h..(r + 1) * 3 * h;
            let (x, y) = (&xv[wide.clone()], &yv[wide.clone()]);
            let (dx, dy) = (&mut dxw[wide.clone()], &mut dhw[wide]);
            let rows = r * h..(r + 1) * h;
            gru_row_backward(x, y, &hv[rows.clone()], &gv[rows.clone()], dx, dy, &mut dh[rows]);
        }
        let (dxw, dhw, dh) = (
            shaped(dxw, &[b, 3 * h]),
            shaped(dhw, &[b, 3 * h]),
            shaped(dh, &[b, h]),
        );
        let need = |v: &Var<F>, a: ArrayD<F>| v.requires_grad().then(|| tape.constant(a));
        Ok(vec![need(xw, dxw), need(hw, dhw), need(hp, dh)])
    }
}
