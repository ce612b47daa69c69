//! Recurrent layers over a whole sequence as one tape op each: the LSTM, GRU, Elman, sLSTM and
//! mLSTM recurrences after the input projection, from the initial state to the last step.
//!
//! What one op per sequence buys over one op per step (the layer's generic loop):
//! - the recurrent weight is laid out for the product once per sequence, not once per step;
//! - every step writes into buffers allocated once for the whole sequence;
//! - the weight gradient of all `T` steps is one GEMM (`dW = Σ_t dGₜᵀ·hₜ₋₁` as `dGᵀ·H`) instead of
//!   `T` products and `T` accumulations;
//! - the tape holds one node per layer and direction instead of several per step.
//!
//! Each op has a fast first-order backward (one reverse loop over raw arrays) and a recorded
//! rule for `create_graph`: the forward recomputed step by step with the per-step ops and the
//! reverse pass written with differentiable ops, giving the same gradients.
//!
//! A built-in cell offers its op through [`Cell::unroll`](../../eddy_nn/trait.Cell.html); the
//! layer uses it when no step needs a mask (no ragged lengths, no recurrent dropout).

mod gru;
mod lstm;
mod mlstm;
mod rnn;
mod slstm;
#[cfg(test)]
mod tests;

pub use gru::GruSequence;
pub use lstm::LstmSequence;
pub use mlstm::{MlstmSequence, MLSTM_CHUNK};
pub use rnn::{RnnActivation, RnnSequence};
pub use slstm::SlstmSequence;

use crate::fused::{flat, shaped};
use crate::kernels::fresh::product_vec;
use crate::kernels::gates::{add_row, column_sums, sum_into};
use crate::kernels::gemm::{gemm_unchecked as gemm, SMALL_ROWS};
use crate::kernels::packed::{packed_kernel_available, PackedMatrix};
use crate::kernels::steps::{prev_of, step_at};
use eddy_tape::{Error, Float, MultiOp, Result};
use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewMut2};

/// A gradient that may be absent (no gradient reached that value).
type Maybe<F> = Option<eddy_tape::Var<F>>;

/// What the LSTM's recorded rule keeps of a step: its gates, the cell state it read, its outputs.
type Saved<F> = (eddy_tape::Var<F>, eddy_tape::Var<F>, Vec<eddy_tape::Var<F>>);

/// What a sequence op's fast backward reads that its forward keeps only when asked: `what`
/// ("the activations"), kept by the op's option `option` ("keep_activations").
struct Needs {
    what: &'static str,
    option: &'static str,
}

/// The start every sequence op's backward shares: while the tape records (`create_graph`), the
/// gradients of the op's `recorded` rule; otherwise `None`, to run the fast backward, once
/// `kept` says the forward kept what it `needs`.
///
/// # Errors
/// Those of `recorded`; [`Error::Invalid`] naming the op when the fast backward is due and what
/// it needs was not kept.
fn recorded_or_kept<F: Float>(
    op: &impl MultiOp<F>,
    inputs: &[eddy_tape::Var<F>],
    needs: Needs,
    kept: bool,
    recorded: impl FnOnce() -> Result<Vec<Maybe<F>>>,
) -> Result<Option<Vec<Maybe<F>>>> {
    if inputs[0].tape().is_recording() {
        return recorded().map(Some);
    }
    if !kept {
        let Needs { what, option } = needs;
        return Err(Error::invalid(
            op.name(),
            format!("backward needs {what}: apply the op with {option}"),
        ));
    }
    Ok(None)
}

/// `a + b` where either may be absent.
fn add_opt<F: Float>(a: Maybe<F>, b: Maybe<F>) -> Result<Maybe<F>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some((&a + &b)?),
        (a, None) => a,
        (None, b) => b,
    })
}

/// Block `t` of `buf` (blocks of `n`) and the state it was computed from: block `prev_of(t)`,
/// or `first` for the first step.
fn block_and_state<'a, F>(
    buf: &'a mut [F],
    first: &'a [F],
    t: usize,
    steps: usize,
    reverse: bool,
    n: usize,
) -> (&'a mut [F], &'a [F]) {
    match prev_of(t, steps, reverse) {
        Some(p) => crate::kernels::scan::block_and_prev(buf, t, p, n),
        None => (&mut buf[t * n..(t + 1) * n], first),
    }
}

/// The state step `t` read: block `prev_of(t)` of `all`, or `first`.
fn state_before<'a, F>(
    all: &'a [F],
    first: &'a [F],
    t: usize,
    steps: usize,
    reverse: bool,
    n: usize,
) -> &'a [F] {
    match prev_of(t, steps, reverse) {
        Some(p) => &all[p * n..(p + 1) * n],
        None => first,
    }
}

/// The recurrent weight `W` (`[G, H]`) laid out once per sequence for one of its two products:
/// `out += h·Wᵀ` in the forward pass ([`Recurrent::forward`]), `dh = dg·W` in the backward pass
/// ([`Recurrent::backward`]). Above a few rows it is a [`PackedMatrix`] (AVX-512 panels where
/// the kernel runs, else a row-major copy of the operand, a plain `NN` product in
/// matrixmultiply); up to a few rows `W` itself, which [`gemm`]'s row kernels read as it is.
struct Recurrent<'a, F: Float> {
    w: ArrayView2<'a, F>,
    packed: Option<PackedMatrix<F>>,
}

impl<'a, F: Float> Recurrent<'a, F> {
    /// For `out += h·Wᵀ`: above a few rows, `Wᵀ` packed (or copied row-major).
    fn forward(w: &'a ArrayD<F>, batch: usize) -> Self {
        let w = matrix(w);
        let packed = (batch > SMALL_ROWS).then(|| PackedMatrix::new(&w.t()));
        Recurrent::laid_out(w, packed)
    }

    /// For `dh = dg·W`: above a few rows and where the kernel runs, `W` packed; else `W` as it
    /// is (already the row-major operand).
    fn backward(w: &'a ArrayD<F>, batch: usize) -> Self {
        let w = matrix(w);
        let packed = (batch > SMALL_ROWS && packed_kernel_available::<F>()).then(|| PackedMatrix::new(&w));
        Recurrent::laid_out(w, packed)
    }

    fn laid_out(w: ArrayView2<'a, F>, packed: Option<PackedMatrix<F>>) -> Self {
        Recurrent { w, packed }
    }

    /// `out += h·Wᵀ` for `h` `[B, H]` and `out` `[B, G]`, or `out = h·Wᵀ` (every element
    /// written, none read first) when not `accumulate`.
    fn mul_into(&self, h: &[F], out: &mut [F], accumulate: bool) {
        if let Some(packed) = &self.packed {
            return packed.mul_into(h, out, accumulate);
        }
        // A few rows: `gemm`'s row kernels, which on one thread walk a large `W` in alternate
        // directions from one step to the next (`kernels::rows::gemv_rows_alternating`).
        let beta = if accumulate { F::one() } else { F::zero() };
        let (g, k) = self.w.dim();
        let rows = h.len() / k.max(1);
        let a = ArrayView2::from_shape((rows, k), h).expect("h is [B, H]");
        let mut c = ArrayViewMut2::from_shape((rows, g), out).expect("out is [B, G]");
        gemm(F::one(), &a, &self.w.t(), beta, &mut c);
    }

    /// `dh = dg·W` for `dg` `[B, G]` and `dh` `[B, H]` (overwritten).
    fn back(&self, dg: &[F], dh: &mut [F]) {
        if let Some(packed) = &self.packed {
            return packed.mul_into(dg, dh, false);
        }
        let (g, k) = self.w.dim();
        let rows = dg.len() / g.max(1);
        let a = ArrayView2::from_shape((rows, g), dg).expect("dg is [B, G]");
        let mut c = ArrayViewMut2::from_shape((rows, k), dh).expect("dh is [B, H]");
        gemm(F::one(), &a, &self.w, F::zero(), &mut c);
    }
}

/// A 2-D view of a matrix value.
fn matrix<F: Float>(a: &ArrayD<F>) -> ArrayView2<'_, F> {
    a.view().into_dimensionality().expect("a 2-D array")
}

/// The gradient of the recurrent weight over the whole sequence, `dW = Σ_t dGₜᵀ·hₜ₋₁` (`[G, H]`),
/// as one GEMM over the steps whose previous state is in `hs` (`[T, B, H]`) plus one for the step
/// that read `h0` (skipped when `h0` is zero, as it usually is). `dg` is `[T, B, G]`.
fn weight_grad<F: Float>(
    dg: &[F],
    hs: &[F],
    h0: &[F],
    dims: (usize, usize, usize),
    g: usize,
    reverse: bool,
) -> Array2<F> {
    let (steps, batch, h) = dims;
    let n = (steps - 1) * batch;
    let (dg_part, hs_part) = match reverse {
        false => (&dg[batch * g..], &hs[..n * h]),
        true => (&dg[..n * g], &hs[batch * h..]),
    };
    let a = ArrayView2::from_shape((n, g), dg_part).expect("[n, G]");
    let b = ArrayView2::from_shape((n, h), hs_part).expect("[n, H]");
    // A fresh product: with one step (`n = 0`) it is the zero matrix.
    let dw = product_vec(&a.t(), &b);
    let mut dw = Array2::from_shape_vec((g, h), dw).expect("[G, H]");
    if batch > 0 && h0.iter().any(|v| *v != F::zero()) {
        let first = step_at(0, steps, reverse) * batch;
        let a = ArrayView2::from_shape((batch, g), &dg[first * g..(first + batch) * g]).expect("[B, G]");
        let b = ArrayView2::from_shape((batch, h), h0).expect("[B, H]");
        gemm(F::one(), &a.t(), &b, F::one(), &mut dw.view_mut());
    }
    dw
}

/// What a fast backward gives, in the op's input order `[dxp, dW_hh, dstate…, db_hh]`, each only
/// where its input needs a gradient. `pre` is the gradient of the recurrent pre-activation
/// `W_hh hₜ₋₁ + b_hh` of every step (`[T, B, G]`; `None`: the same as `dxp`), from which
/// `dW_hh` (one GEMM against the states read, `hs` and `h0`) and `db_hh` come.
#[allow(clippy::too_many_arguments)]
fn fast_gradients<F: Float>(
    inputs: &[eddy_tape::Var<F>],
    dxp: Vec<F>,
    pre: Option<Vec<F>>,
    states: Vec<Vec<F>>,
    (hs, h0): (&[F], &[F]),
    dims: (usize, usize, usize),
    reverse: bool,
    bias: bool,
) -> Vec<Maybe<F>> {
    let (steps, batch, h) = dims;
    let tape = inputs[0].tape();
    let need = |k: usize| inputs[k].requires_grad();
    let g = inputs[1].shape()[0];
    let parts = states.len();
    let pre: &[F] = pre.as_deref().unwrap_or(&dxp);
    let dw = need(1).then(|| weight_grad(pre, hs, h0, dims, g, reverse));
    let db = (bias && need(2 + parts)).then(|| column_sums(pre, g));
    let width = inputs[0].shape()[2];
    let mut out = vec![
        need(0).then(|| tape.constant(shaped(dxp, &[steps, batch, width]))),
        dw.map(|d| tape.constant(d.into_dyn())),
    ];
    for (k, s) in states.into_iter().enumerate() {
        out.push(need(2 + k).then(|| tape.constant(shaped(s, &[batch, h]))));
    }
    if bias {
        out.push(db.map(|d| tape.constant(shaped(d, &[g]))));
    }
    out
}

/// What a recorded rule collects over its reverse loop: each step's gradient of its projected
/// input, and the sums over the steps of the recurrent weight's and bias's gradients.
struct RecordedGrads<F: Float> {
    dxs: Vec<Maybe<F>>,
    dw: Maybe<F>,
    db: Maybe<F>,
    bias: bool,
}

impl<F: Float> RecordedGrads<F> {
    fn new(steps: usize, bias: bool) -> Self {
        RecordedGrads {
            dxs: vec![None; steps],
            dw: None,
            db: None,
            bias,
        }
    }

    /// Step `t`: `dx`, the gradient of `xpₜ`, and `pre`, that of `W_hh hₜ₋₁ + b_hh`, whose
    /// weight gradient is `preᵀ·hₜ₋₁`.
    fn step(
        &mut self,
        t: usize,
        dx: eddy_tape::Var<F>,
        pre: &eddy_tape::Var<F>,
        h_prev: &eddy_tape::Var<F>,
    ) -> Result<()> {
        use crate::VarExt;
        let dw_t = pre
            .tape()
            .apply(crate::MatMul { ta: true, tb: false }, &[pre, h_prev])?;
        self.dw = add_opt(self.dw.take(), Some(dw_t))?;
        if self.bias {
            self.db = add_opt(self.db.take(), Some(pre.sum(0, false)?))?;
        }
        self.dxs[t] = Some(dx);
        Ok(())
    }

    /// `[dxp, dW_hh, states…, db_hh]`, in the op's input order.
    fn finish(self, states: Vec<Maybe<F>>) -> Result<Vec<Maybe<F>>> {
        let dxs: Vec<eddy_tape::Var<F>> = self.dxs.into_iter().map(|d| d.expect("every step ran")).collect();
        let mut out = vec![Some(crate::stack(&dxs.iter().collect::<Vec<_>>(), 0)?), self.dw];
        out.extend(states);
        if self.bias {
            out.push(self.db);
        }
        Ok(out)
    }
}

/// `out = a (+ b)`: a step's incoming gradient, the part from the output plus the carried one.
fn incoming<F: Float>(out: &mut [F], from_output: Option<&[F]>, carried: &[F]) {
    match from_output {
        Some(a) => sum_into(out, a, carried),
        None => out.copy_from_slice(carried),
    }
}

/// The shape rule shared by the sequence ops: `xp` `[T, B, gates·H]`, `w` `[gates·H, H]`, the
/// states `[B, H]` each, an optional bias `[gates·H]`. Returns `(T, B, H)`.
fn check_shapes(
    op: &str,
    inputs: &[&[usize]],
    gates: usize,
    states: usize,
    bias: bool,
) -> Result<(usize, usize, usize)> {
    crate::arity(op, inputs, 2 + states + bias as usize)?;
    let (xp, w) = (inputs[0], inputs[1]);
    let expected = || {
        let bias = if bias {
            format!(", bias [{gates}H]")
        } else {
            String::new()
        };
        format!("expected xp [T, B, {gates}H], weight_hh [{gates}H, H], {states} state(s) [B, H]{bias}")
    };
    if xp.len() != 3 || w.len() != 2 {
        return Err(Error::shape(op, inputs, expected()));
    }
    let (steps, batch, h) = (xp[0], xp[1], w[1]);
    // Checked: a huge H must not wrap `gates · H` round to a size that matches.
    let Some(gh) = h.checked_mul(gates).filter(|_| h.checked_mul(5).is_some()) else {
        return Err(Error::shape(
            op,
            inputs,
            format!("hidden size {h} times {gates} gates overflows usize"),
        ));
    };
    let mut ok = steps > 0 && xp[2] == gh && w[0] == gh;
    ok &= inputs[2..2 + states].iter().all(|s| *s == [batch, h]);
    if bias {
        ok &= inputs[2 + states] == [gh];
    }
    if !ok {
        return Err(Error::shape(op, inputs, expected()));
    }
    Ok((steps, batch, h))
}
