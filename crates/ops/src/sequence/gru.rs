//! The GRU recurrence over a whole sequence.

use super::*;
use crate::fused::GruPointwise;
use crate::kernels::fresh::written_all;
use crate::kernels::gates::{gru_row_backward, gru_row_forward};
use crate::{linear_add, VarExt};
use eddy_tape::{MultiOp, Op, Var};

/// The GRU over a whole sequence after the input projection: from `xp` `[T, B, 3H]`
/// (`W_ih xₜ + b_ih` for every step, gates r, z, n), the recurrent weight `weight_hh` `[3H, H]`,
/// the initial `h0` `[B, H]` and optionally `bias_hh` `[3H]`, every step of
///
/// ```text
/// hw = W_hh hₜ₋₁ + b_hh
/// r = σ(xpr + hwr),  z = σ(xpz + hwz),  n = tanh(xpn + r ⊙ hwn),  hₜ = (1 − z) ⊙ n + z ⊙ hₜ₋₁
/// ```
///
/// in time order (or backwards when `reverse`). Inputs `[xp, weight_hh, h0]`, then `bias_hh`
/// when `bias`. Outputs: every `hₜ` (`[T, B, H]`) and every step's `hw` (`[T, B, 3H]`), which the
/// fast backward reads; empty (`[0]`) when `keep_activations` is false. No gradient flows into it.
///
/// Gradient: the per-step rule of [`GruPointwise`] carried backwards through time, with
/// `dh_{t-1} = dhₜ ⊙ z + dhwₜ·W_hh`, `dW_hh = Σ_t dhwₜᵀ·hₜ₋₁` (one GEMM), `db_hh = Σ dhw`,
/// `dxp = dxw`.
///
/// # Errors
/// [`Error::Shape`] when the shapes do not fit together or `T` is 0.
pub struct GruSequence {
    /// Run from the last step to the first.
    pub reverse: bool,
    /// Whether the input `bias_hh` is given.
    pub bias: bool,
    /// Output the gate activations for the fast backward (false on a tape that records nothing).
    pub keep_activations: bool,
}

/// What the fast backward reads that the forward keeps only when asked.
const NEEDS: Needs = Needs {
    what: "the saved products",
    option: "keep_activations",
};

impl<F: Float> MultiOp<F> for GruSequence {
    fn name(&self) -> &str {
        "gru_sequence"
    }

    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
        let (steps, batch, h) = check_shapes("gru_sequence", inputs, 3, 1, self.bias)?;
        let hw = match self.keep_activations {
            true => vec![steps, batch, 3 * h],
            false => vec![0],
        };
        Ok(vec![vec![steps, batch, h], hw])
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        let s = inputs[0].shape();
        let (steps, batch, h) = (s[0], s[1], s[2] / 3);
        let (bh, gw) = (batch * h, 3 * h);
        let xp = flat(inputs[0]);
        let w = Recurrent::forward(inputs[1], batch);
        let h0 = flat(inputs[2]);
        let bias = self.bias.then(|| flat(inputs[3]));
        let keep = self.keep_activations;
        // Without `keep`, one step's recurrent projection (written, then read, by each step).
        let mut scratch = vec![F::zero(); if keep { 0 } else { batch * gw }];
        let kept = if keep { steps * batch * gw } else { 0 };
        let write = |[hs, hw]: [&mut [F]; 2]| {
            for i in 0..steps {
                let t = step_at(i, steps, self.reverse);
                let hw_t = match keep {
                    true => &mut hw[t * batch * gw..(t + 1) * batch * gw],
                    false => &mut scratch[..],
                };
                let (h_t, h_prev) = block_and_state(hs, &h0, t, steps, self.reverse, bh);
                // `hw_t = h_prev·Wᵀ (+ b)`: with the bias, the bias rows then the product added.
                if let Some(b) = &bias {
                    hw_t.chunks_exact_mut(gw).for_each(|row| row.copy_from_slice(b));
                }
                w.mul_into(h_prev, hw_t, bias.is_some());
                let x_t = &xp[t * batch * gw..(t + 1) * batch * gw];
                for r in 0..batch {
                    let (x, y) = (&x_t[r * gw..(r + 1) * gw], &hw_t[r * gw..(r + 1) * gw]);
                    let rows = r * h..(r + 1) * h;
                    gru_row_forward(
                        [&x[..h], &x[h..2 * h], &x[2 * h..]],
                        [&y[..h], &y[h..2 * h], &y[2 * h..]],
                        &h_prev[rows.clone()],
                        &mut h_t[rows],
                    );
                }
            }
        };
        // SAFETY: step `t` writes block `t` of `hs` (every row `r < B`, each `H` long, by
        // `gru_row_forward`) and, with `keep`, block `t` of `hw` (`[B, 3H]`: the bias rows then
        // the product added, or the product with `β = 0` alone, which writes every element and
        // reads none first: see `Recurrent::mul_into`), so the steps `0..T` write every element;
        // the only reads are of the state block of the step before (`prev_of(t)`), written
        // already, and of `hw`'s block `t` after it was written.
        let [hs, hw] = unsafe { written_all([steps * bh, kept], write) };
        let hw = match keep {
            true => shaped(hw, &[steps, batch, gw]),
            false => shaped(Vec::new(), &[0]),
        };
        Ok(vec![shaped(hs, &[steps, batch, h]), hw])
    }

    fn backward(
        &self,
        inputs: &[Var<F>],
        outputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let recorded = || self.recorded_backward(inputs, grads);
        if let Some(g) = recorded_or_kept(self, inputs, NEEDS, self.keep_activations, recorded)? {
            return Ok(g);
        }
        let s = inputs[0].shape();
        let (steps, batch, h) = (s[0], s[1], s[2] / 3);
        let (bh, gw) = (batch * h, 3 * h);
        let xp = flat(inputs[0].value());
        let w = Recurrent::backward(inputs[1].value(), batch);
        let h0 = flat(inputs[2].value());
        let (hs, hw) = (flat(outputs[0].value()), flat(outputs[1].value()));
        let dhs = grads[0].as_ref().map(|g| flat(g.value()));
        // The gradient carried to the step before starts at zero (the first step of the reverse
        // loop adds it to its incoming one).
        let (mut carry, mut g, mut direct) = (vec![F::zero(); bh], vec![F::zero(); bh], vec![F::zero(); bh]);
        let write = |[dxp, dhw]: [&mut [F]; 2]| {
            for i in (0..steps).rev() {
                let t = step_at(i, steps, self.reverse);
                let block = t * bh..(t + 1) * bh;
                incoming(&mut g, dhs.as_ref().map(|d| &d[block]), &carry);
                let h_prev = state_before(&hs, &h0, t, steps, self.reverse, bh);
                let wide = t * batch * gw..(t + 1) * batch * gw;
                let (x_t, y_t) = (&xp[wide.clone()], &hw[wide.clone()]);
                let (dx_t, dy_t) = (&mut dxp[wide.clone()], &mut dhw[wide]);
                for r in 0..batch {
                    let (row, rows) = (r * gw..(r + 1) * gw, r * h..(r + 1) * h);
                    gru_row_backward(
                        &x_t[row.clone()],
                        &y_t[row.clone()],
                        &h_prev[rows.clone()],
                        &g[rows.clone()],
                        &mut dx_t[row.clone()],
                        &mut dy_t[row],
                        &mut direct[rows],
                    );
                }
                w.back(dy_t, &mut carry);
                add_row(&mut carry, &direct);
            }
        };
        // SAFETY: step `t` writes block `t` of `dxp` and `dhw` (rows `r < B`, each `3H` long, by
        // `gru_row_backward`), so the steps `0..T` write both whole, and read `dhw`'s block (for
        // `dhₜ₋₁`) only after.
        let len = steps * batch * gw;
        let [dxp, dhw] = unsafe { written_all([len, len], write) };
        Ok(fast_gradients(
            inputs,
            dxp,
            Some(dhw),
            vec![carry],
            (&hs, &h0),
            (steps, batch, h),
            self.reverse,
            self.bias,
        ))
    }
}

impl GruSequence {
    /// The recorded rule (under `create_graph`): the forward recomputed step by step with the
    /// per-step ops, then the reverse pass through time with differentiable ops.
    fn recorded_backward<F: Float>(
        &self,
        inputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let (xp, w) = (&inputs[0], &inputs[1]);
        let bias = self.bias.then(|| &inputs[3]);
        let steps = xp.shape()[0];
        let tape = xp.tape();
        let xs = xp.unstack(0)?;
        let mut h = inputs[2].clone();
        let mut saved: Vec<Option<[Var<F>; 3]>> = vec![None; steps];
        for i in 0..steps {
            let t = step_at(i, steps, self.reverse);
            let hw = linear_add(&h, w, bias, None)?;
            let next = tape.apply(GruPointwise, &[&xs[t], &hw, &h])?;
            saved[t] = Some([hw, std::mem::replace(&mut h, next.clone()), next]);
        }
        let dhs = grads[0].as_ref().map(|g| g.unstack(0)).transpose()?;
        let mut carry: Maybe<F> = None;
        let mut collected = RecordedGrads::new(steps, self.bias);
        for i in (0..steps).rev() {
            let t = step_at(i, steps, self.reverse);
            let [hw, h_prev, out] = saved[t].take().expect("every step ran");
            let g = add_opt(dhs.as_ref().map(|d| d[t].clone()), carry.take())?
                .unwrap_or_else(|| tape.constant(ArrayD::zeros(h_prev.shape())));
            let back = GruPointwise.backward(&[xs[t].clone(), hw, h_prev.clone()], &out, &g)?;
            let [dxw, dhw, direct]: [Option<Var<F>>; 3] = back.try_into().expect("three gradients");
            let (dxw, dhw) = (dxw.expect("dxw"), dhw.expect("dhw"));
            carry = add_opt(Some(dhw.matmul(w)?), direct)?;
            collected.step(t, dxw, &dhw, &h_prev)?;
        }
        collected.finish(vec![carry])
    }
}
