//! The Elman recurrence over a whole sequence.

use super::*;
use crate::kernels::fresh::written_by;
use crate::{linear_add, VarExt};
use eddy_tape::{MultiOp, Var};

pub use crate::kernels::gates::RnnActivation;
use crate::kernels::gates::{activate, scale_by_derivative};

/// The Elman RNN over a whole sequence after the input projection: from `xp` `[T, B, H]`
/// (`W_ih xₜ + b_ih` for every step), the recurrent weight `weight_hh` `[H, H]`, the initial `h0`
/// `[B, H]` and optionally `bias_hh` `[H]`, every step of
///
/// ```text
/// hₜ = act(xpₜ + W_hh hₜ₋₁ + b_hh)          (act: tanh or relu)
/// ```
///
/// in time order (or backwards when `reverse`). Inputs `[xp, weight_hh, h0]`, then `bias_hh`
/// when `bias`; the output is every `hₜ`, `[T, B, H]`.
///
/// Gradient: with `dzₜ = (dhₜ + dzₜ₊₁·W_hh) ⊙ act'(hₜ)`: `dxp = dz`, `dW_hh = Σ_t dzₜᵀ·hₜ₋₁`
/// (one GEMM), `db_hh = Σ dz`, `dh0 = dz₁·W_hh`.
///
/// # Errors
/// [`Error::Shape`] when the shapes do not fit together or `T` is 0.
pub struct RnnSequence {
    /// The nonlinearity of the recurrence.
    pub activation: RnnActivation,
    /// Run from the last step to the first.
    pub reverse: bool,
    /// Whether the input `bias_hh` is given.
    pub bias: bool,
}

impl<F: Float> MultiOp<F> for RnnSequence {
    fn name(&self) -> &str {
        "rnn_sequence"
    }

    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
        let (steps, batch, h) = check_shapes("rnn_sequence", inputs, 1, 1, self.bias)?;
        Ok(vec![vec![steps, batch, h]])
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        let s = inputs[0].shape();
        let (steps, batch, h) = (s[0], s[1], s[2]);
        let bh = batch * h;
        let xp = flat(inputs[0]);
        let w = Recurrent::forward(inputs[1], batch);
        let h0 = flat(inputs[2]);
        let bias = self.bias.then(|| flat(inputs[3]));
        let write = |hs: &mut [F]| {
            for i in 0..steps {
                let t = step_at(i, steps, self.reverse);
                let (h_t, h_prev) = block_and_state(hs, &h0, t, steps, self.reverse, bh);
                h_t.copy_from_slice(&xp[t * bh..(t + 1) * bh]);
                if let Some(b) = &bias {
                    h_t.chunks_exact_mut(h.max(1)).for_each(|row| add_row(row, b));
                }
                w.mul_into(h_prev, h_t, true);
                activate(self.activation, h_t);
            }
        };
        // SAFETY: step `t` writes block `t` of `hs` whole (a copy of `xpₜ`) before anything
        // reads it, so the steps `0..T` write every element; the only other reads are of the
        // state block of the step before (`prev_of(t)`), written already.
        let hs = unsafe { written_by(steps * bh, write) };
        Ok(vec![shaped(hs, &[steps, batch, h])])
    }

    fn backward(
        &self,
        inputs: &[Var<F>],
        outputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let tape = inputs[0].tape();
        if tape.is_recording() {
            return self.recorded_backward(inputs, grads);
        }
        let s = inputs[0].shape();
        let (steps, batch, h) = (s[0], s[1], s[2]);
        let bh = batch * h;
        let w = Recurrent::backward(inputs[1].value(), batch);
        let h0 = flat(inputs[2].value());
        let hs = flat(outputs[0].value());
        let dhs = grads[0].as_ref().map(|g| flat(g.value()));
        // The gradient carried to the step before starts at zero (the first step of the reverse
        // loop adds it to its incoming one).
        let mut carry = vec![F::zero(); bh];
        let write = |dz: &mut [F]| {
            for i in (0..steps).rev() {
                let t = step_at(i, steps, self.reverse);
                let block = t * bh..(t + 1) * bh;
                let dz_t = &mut dz[block.clone()];
                incoming(dz_t, dhs.as_ref().map(|d| &d[block.clone()]), &carry);
                scale_by_derivative(self.activation, dz_t, &hs[block]);
                w.back(dz_t, &mut carry);
            }
        };
        // SAFETY: step `t` writes block `t` of `dz` whole (`incoming`: a copy or a sum) before
        // anything reads it, so the steps `0..T` write every element.
        let dz = unsafe { written_by(steps * bh, write) };
        Ok(fast_gradients(
            inputs,
            dz,
            None,
            vec![carry],
            (&hs, &h0),
            (steps, batch, h),
            self.reverse,
            self.bias,
        ))
    }
}

impl RnnSequence {
    /// The recorded rule (under `create_graph`): the forward recomputed step by step with
    /// differentiable ops, then the reverse pass through time with differentiable ops.
    fn recorded_backward<F: Float>(
        &self,
        inputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let (xp, w) = (&inputs[0], &inputs[1]);
        let bias = self.bias.then(|| &inputs[3]);
        let steps = xp.shape()[0];
        let xs = xp.unstack(0)?;
        let mut h = inputs[2].clone();
        let mut h_before: Vec<Option<Var<F>>> = vec![None; steps];
        let mut derivs: Vec<Option<Var<F>>> = vec![None; steps];
        for i in 0..steps {
            let t = step_at(i, steps, self.reverse);
            let pre = linear_add(&h, w, bias, Some(&xs[t]))?;
            let (next, deriv) = match self.activation {
                RnnActivation::Tanh => {
                    let y = pre.tanh()?;
                    let d = (&y * &y)?.affine(-F::one(), F::one(), "one_minus")?;
                    (y, d)
                }
                RnnActivation::Relu => {
                    let mask = pre
                        .value()
                        .mapv(|v| if v > F::zero() { F::one() } else { F::zero() });
                    (pre.relu()?, xp.tape().constant(mask))
                }
            };
            h_before[t] = Some(std::mem::replace(&mut h, next));
            derivs[t] = Some(deriv);
        }
        let dhs = grads[0].as_ref().map(|g| g.unstack(0)).transpose()?;
        let mut carry: Maybe<F> = None;
        let mut collected = RecordedGrads::new(steps, self.bias);
        for i in (0..steps).rev() {
            let t = step_at(i, steps, self.reverse);
            let dh = add_opt(dhs.as_ref().map(|d| d[t].clone()), carry.take())?;
            let dz = match dh {
                Some(dh) => (&dh * derivs[t].as_ref().expect("every step ran"))?,
                None => xp.tape().constant(ArrayD::zeros(inputs[2].shape())),
            };
            let h_prev = h_before[t].take().expect("every step ran");
            carry = Some(dz.matmul(w)?);
            collected.step(t, dz.clone(), &dz, &h_prev)?;
        }
        collected.finish(vec![carry])
    }
}
