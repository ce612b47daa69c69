//! The LSTM recurrence over a whole sequence.

use super::*;
use crate::fused::LstmPointwise;
use crate::kernels::fresh::{written_all, written_by};
use crate::kernels::gates::{lstm_row_backward, lstm_row_forward};
use crate::kernels::split;
use crate::{linear_add, VarExt};
use eddy_tape::{MultiOp, Var};

/// The LSTM over a whole sequence after the input projection: from `xp` `[T, B, 4H]`
/// (`W_ih xₜ + b_ih` for every step), the recurrent weight `weight_hh` `[4H, H]`, the initial
/// `h0`, `c0` `[B, H]` and optionally `bias_hh` `[4H]`, every step of
///
/// ```text
/// i, f, g, o = split(xpₜ + W_hh hₜ₋₁ + b_hh)
/// cₜ = σ(f) ⊙ cₜ₋₁ + σ(i) ⊙ tanh(g),   hₜ = σ(o) ⊙ tanh(cₜ)
/// ```
///
/// in time order (or from the last step to the first when `reverse`). Inputs in that order:
/// `[xp, weight_hh, h0, c0]`, then `bias_hh` when `bias`.
///
/// Outputs: every `hₜ` and every `cₜ` (`[T, B, H]` each, indexed by time step in both
/// directions), and the gate activations `[σ(i), σ(f), tanh(g), σ(o), tanh(cₜ)]` (`[T, B, 5H]`)
/// that the fast backward reads; when `keep_activations` is false (inference on a tape that
/// records nothing) that output is empty (`[0]`). No gradient flows into it.
///
/// Gradient: the per-step rule of [`LstmPointwise`], carried backwards through time, with
/// `dh_{t-1} += dgatesₜ·W_hh`, `dW_hh = Σ_t dgatesₜᵀ·hₜ₋₁` (one GEMM), `db_hh = Σ dgates`,
/// `dxp = dgates`.
///
/// # Errors
/// [`Error::Shape`] when the shapes do not fit together or `T` is 0.
pub struct LstmSequence {
    /// Run from the last step to the first.
    pub reverse: bool,
    /// Whether the input `bias_hh` is given.
    pub bias: bool,
    /// Output the gate activations for the fast backward (false on a tape that records nothing).
    pub keep_activations: bool,
}

/// What the fast backward reads that the forward keeps only when asked.
const NEEDS: Needs = Needs {
    what: "the activations",
    option: "keep_activations",
};

impl<F: Float> MultiOp<F> for LstmSequence {
    fn name(&self) -> &str {
        "lstm_sequence"
    }

    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
        let (steps, batch, h) = check_shapes("lstm_sequence", inputs, 4, 2, self.bias)?;
        let acts = match self.keep_activations {
            true => vec![steps, batch, 5 * h],
            false => vec![0],
        };
        Ok(vec![vec![steps, batch, h], vec![steps, batch, h], acts])
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        let (steps, batch, h) = {
            let s = inputs[0].shape();
            (s[0], s[1], s[2] / 4)
        };
        let (bh, gw) = (batch * h, 4 * h);
        let xp = flat(inputs[0]);
        let (h0, c0) = (flat(inputs[2]), flat(inputs[3]));
        let bias = self.bias.then(|| flat(inputs[4]));
        let keep = self.keep_activations;
        if !keep && split::worth_it(batch, h, rayon::current_num_threads()) {
            let w = flat(inputs[1]);
            let inputs = split::LstmInputs {
                xp: &xp,
                w: &w,
                h0: &h0,
                c0: &c0,
                bias: bias.as_deref(),
                dims: (steps, batch, h),
                reverse: self.reverse,
            };
            // SAFETY: `split::lstm_forward` runs every task `(step, part)`, and the parts of a
            // step tile the units `0..H` of every row, so it writes every element of `hs` and
            // `cs`; it reads a step's block only once that step's tasks are done.
            let [hs, cs] =
                unsafe { written_all([steps * bh; 2], |[hs, cs]| split::lstm_forward(&inputs, hs, cs)) };
            let (hs, cs) = (shaped(hs, &[steps, batch, h]), shaped(cs, &[steps, batch, h]));
            return Ok(vec![hs, cs, shaped(Vec::new(), &[0])]);
        }
        let w = Recurrent::forward(inputs[1], batch);
        // Without `keep`, one row's activations (written, then read, by each row in turn).
        let mut scratch = vec![F::zero(); if keep { 0 } else { 5 * h }];
        let kept = if keep { steps * batch * 5 * h } else { 0 };
        let mut gates = vec![F::zero(); batch * gw];
        let write = |[hs, cs, acts]: [&mut [F]; 3]| {
            for i in 0..steps {
                let t = step_at(i, steps, self.reverse);
                gates.copy_from_slice(&xp[t * batch * gw..(t + 1) * batch * gw]);
                if let Some(b) = &bias {
                    gates.chunks_exact_mut(gw).for_each(|row| add_row(row, b));
                }
                let (h_t, h_prev) = block_and_state(hs, &h0, t, steps, self.reverse, bh);
                w.mul_into(h_prev, &mut gates, true);
                let (c_t, c_prev) = block_and_state(cs, &c0, t, steps, self.reverse, bh);
                for r in 0..batch {
                    let g = &gates[r * gw..(r + 1) * gw];
                    let a = match keep {
                        true => &mut acts[(t * batch + r) * 5 * h..(t * batch + r + 1) * 5 * h],
                        false => &mut scratch[..],
                    };
                    let (si, rest) = a.split_at_mut(h);
                    let (sf, rest) = rest.split_at_mut(h);
                    let (tg, rest) = rest.split_at_mut(h);
                    let (so, tc) = rest.split_at_mut(h);
                    let rows = r * h..(r + 1) * h;
                    lstm_row_forward(
                        [&g[..h], &g[h..2 * h], &g[2 * h..3 * h], &g[3 * h..]],
                        &c_prev[rows.clone()],
                        [si, sf, tg, so, tc],
                        &mut c_t[rows.clone()],
                        &mut h_t[rows],
                    );
                }
            }
        };
        // SAFETY: step `t` writes block `t` of `hs` and `cs` (every row `r < B`, each `H` long,
        // by `lstm_row_forward`) and, with `keep`, row `(t, r)` of `acts` (all `5H` of it), so
        // the steps `0..T` write every element; the only reads of these buffers are of the
        // state blocks of the step before (`prev_of(t)`), written already, and of `acts`' row
        // within the kernel after it wrote it.
        let [hs, cs, acts] = unsafe { written_all([steps * bh, steps * bh, kept], write) };
        let acts = match keep {
            true => shaped(acts, &[steps, batch, 5 * h]),
            false => shaped(Vec::new(), &[0]),
        };
        Ok(vec![
            shaped(hs, &[steps, batch, h]),
            shaped(cs, &[steps, batch, h]),
            acts,
        ])
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
        let (steps, batch, h) = {
            let s = inputs[0].shape();
            (s[0], s[1], s[2] / 4)
        };
        let (bh, gw) = (batch * h, 4 * h);
        let w = Recurrent::backward(inputs[1].value(), batch);
        let (h0, c0) = (flat(inputs[2].value()), flat(inputs[3].value()));
        let (hs, cs, acts) = (
            flat(outputs[0].value()),
            flat(outputs[1].value()),
            flat(outputs[2].value()),
        );
        let dhs = grads[0].as_ref().map(|g| flat(g.value()));
        let dcs = grads[1].as_ref().map(|g| flat(g.value()));
        // The gradients carried to the step before start at zero: the first step of the reverse
        // loop adds them to its incoming ones.
        let (mut dh_carry, mut dc_carry) = (vec![F::zero(); bh], vec![F::zero(); bh]);
        let (mut dh, mut dc) = (vec![F::zero(); bh], vec![F::zero(); bh]);
        let write = |dg: &mut [F]| {
            for i in (0..steps).rev() {
                let t = step_at(i, steps, self.reverse);
                let block = t * bh..(t + 1) * bh;
                incoming(&mut dh, dhs.as_ref().map(|d| &d[block.clone()]), &dh_carry);
                incoming(&mut dc, dcs.as_ref().map(|d| &d[block]), &dc_carry);
                let c_prev = state_before(&cs, &c0, t, steps, self.reverse, bh);
                let dg_t = &mut dg[t * batch * gw..(t + 1) * batch * gw];
                for r in 0..batch {
                    let a = &acts[(t * batch + r) * 5 * h..(t * batch + r + 1) * 5 * h];
                    let d = &mut dg_t[r * gw..(r + 1) * gw];
                    let (di, rest) = d.split_at_mut(h);
                    let (df, rest) = rest.split_at_mut(h);
                    let (dgg, d_o) = rest.split_at_mut(h);
                    let rows = r * h..(r + 1) * h;
                    lstm_row_backward(
                        [
                            &a[..h],
                            &a[h..2 * h],
                            &a[2 * h..3 * h],
                            &a[3 * h..4 * h],
                            &a[4 * h..],
                        ],
                        &c_prev[rows.clone()],
                        &dh[rows.clone()],
                        &dc[rows.clone()],
                        [di, df, dgg, d_o],
                        &mut dc_carry[rows],
                    );
                }
                w.back(dg_t, &mut dh_carry);
            }
        };
        // SAFETY: step `t` writes block `t` of `dg` (rows `r < B`, each `4H` long: `di`, `df`,
        // `dg`, `do` by `lstm_row_backward`), so the steps `0..T` write it whole, and read it
        // (for `dhₜ₋₁`) only after.
        let dg = unsafe { written_by(steps * batch * gw, write) };
        Ok(fast_gradients(
            inputs,
            dg,
            None,
            vec![dh_carry, dc_carry],
            (&hs, &h0),
            (steps, batch, h),
            self.reverse,
            self.bias,
        ))
    }
}

impl LstmSequence {
    /// The recorded rule (under `create_graph`): the forward recomputed step by step with the
    /// per-step ops, then the reverse pass through time with differentiable ops.
    fn recorded_backward<F: Float>(
        &self,
        inputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let (xp, w) = (&inputs[0], &inputs[1]);
        let bias = self.bias.then(|| &inputs[4]);
        let steps = xp.shape()[0];
        let xs = xp.unstack(0)?;
        // Forward: per step, the gates, the cell state read and the step's outputs.
        let mut saved: Vec<Option<Saved<F>>> = vec![None; steps];
        let (mut h, mut c) = (inputs[2].clone(), inputs[3].clone());
        let mut h_before: Vec<Option<Var<F>>> = vec![None; steps];
        for i in 0..steps {
            let t = step_at(i, steps, self.reverse);
            let gates = linear_add(&h, w, bias, Some(&xs[t]))?;
            let outs = xp.tape().apply_multi(LstmPointwise, &[&gates, &c])?;
            h_before[t] = Some(h);
            saved[t] = Some((gates, c, outs.clone()));
            (h, c) = (outs[0].clone(), outs[1].clone());
        }
        let dhs = grads[0].as_ref().map(|g| g.unstack(0)).transpose()?;
        let dcs = grads[1].as_ref().map(|g| g.unstack(0)).transpose()?;
        let (mut dh_carry, mut dc_carry): (Option<Var<F>>, Option<Var<F>>) = (None, None);
        let mut collected = RecordedGrads::new(steps, self.bias);
        for i in (0..steps).rev() {
            let t = step_at(i, steps, self.reverse);
            let dh = add_opt(dhs.as_ref().map(|d| d[t].clone()), dh_carry.take())?;
            let dc = add_opt(dcs.as_ref().map(|d| d[t].clone()), dc_carry.take())?;
            let (gates, c_prev, outs) = saved[t].take().expect("every step ran");
            let back = LstmPointwise.backward(&[gates, c_prev], &outs, &[dh, dc])?;
            let [dgates, dcp]: [Option<Var<F>>; 2] = back.try_into().expect("two gradients");
            let dgates = dgates.expect("the gates' gradient");
            let h_prev = h_before[t].take().expect("every step ran");
            dh_carry = Some(dgates.matmul(w)?);
            dc_carry = dcp;
            collected.step(t, dgates.clone(), &dgates, &h_prev)?;
        }
        collected.finish(vec![dh_carry, dc_carry])
    }
}
