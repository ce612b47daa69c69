//! The LSTM cell, PyTorch-exact, with the optional projection of `torch.nn.LSTM(proj_size)`.

use super::{named, param};
use crate::{Cell, Module};
use eddy_ops::{linear_add, LstmPointwise, LstmSequence, VarExt};
use eddy_tape::{Float, Param, Result, Rng, Var};

/// The LSTM cell (gates in PyTorch's order i, f, g, o):
///
/// ```text
/// i, f, g, o = split(W_ih x + b_ih + W_hh h + b_hh)
/// c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
/// h' = σ(o) ⊙ tanh(c')            (then h' = W_hr h' with a projection)
/// ```
///
/// Parameters: `weight_ih` `[4H, I]`, `weight_hh` `[4H, P]`, `bias_ih`, `bias_hh` `[4H]`, and
/// `weight_hr` `[P, H]` when projecting to `P` (else `P = H`). State `(h [B, P], c [B, H])`.
#[derive(Debug, Clone)]
pub struct LstmCell<F: Float = f32> {
    /// Input weights `[4H, I]`, gates i, f, g, o.
    pub weight_ih: Param<F>,
    /// Recurrent weights `[4H, P]`, gates i, f, g, o.
    pub weight_hh: Param<F>,
    /// `(bias_ih, bias_hh)`, `[4H]` each; `None` without biases.
    pub biases: Option<(Param<F>, Param<F>)>,
    /// The projection `[P, H]` of `h` (PyTorch's `proj_size`); `None` without one.
    pub weight_hr: Option<Param<F>>,
}

impl<F: Float> LstmCell<F> {
    /// A cell from `input` to `hidden` features, PyTorch-initialised.
    pub fn new(input: usize, hidden: usize, bias: bool, rng: &mut Rng) -> Self {
        Self::with_projection(input, hidden, 0, bias, rng)
    }

    /// A cell whose output `h` is projected to `proj` features (`proj = 0`: none).
    pub fn with_projection(input: usize, hidden: usize, proj: usize, bias: bool, rng: &mut Rng) -> Self {
        let out = if proj > 0 { proj } else { hidden };
        LstmCell {
            weight_ih: param("weight_ih", &[4 * hidden, input], hidden, rng),
            weight_hh: param("weight_hh", &[4 * hidden, out], hidden, rng),
            biases: bias.then(|| {
                (
                    param("bias_ih", &[4 * hidden], hidden, rng),
                    param("bias_hh", &[4 * hidden], hidden, rng),
                )
            }),
            weight_hr: (proj > 0).then(|| param("weight_hr", &[proj, hidden], hidden, rng)),
        }
    }

    /// The cell size `H`.
    pub fn hidden_size(&self) -> usize {
        self.weight_ih.shape()[0] / 4
    }
}

impl<F: Float> Module<F> for LstmCell<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        let mut out = named(&self.weight_ih, &self.weight_hh, &self.biases);
        out.extend(
            self.weight_hr
                .iter()
                .map(|w| ("weight_hr".to_string(), w.clone())),
        );
        out
    }
}

impl<F: Float> Cell<F> for LstmCell<F> {
    type State = (Var<F>, Var<F>);

    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.weight_hh.shape()[1], self.hidden_size()]
    }

    /// `W_ih x + b_ih` for all time steps at once.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        super::project_input(x, &self.weight_ih, &self.biases)
    }

    /// The whole sequence as one [`LstmSequence`] op (without a projection, which it lacks).
    fn unroll(
        &self,
        xp: &Var<F>,
        (h, c): &(Var<F>, Var<F>),
        reverse: bool,
    ) -> Option<Result<(Var<F>, (Var<F>, Var<F>))>> {
        if self.weight_hr.is_some() {
            return None;
        }
        let op = LstmSequence {
            reverse,
            bias: self.biases.is_some(),
            keep_activations: xp.tape().is_recording(),
        };
        let run = || {
            let out = super::apply_sequence(op, xp, &self.weight_hh, &self.biases, &[h, c])?;
            let state = (
                super::last_step(&out[0], reverse)?,
                super::last_step(&out[1], reverse)?,
            );
            Ok((out[0].clone(), state))
        };
        Some(run())
    }

    fn step(&self, xw: &Var<F>, (h, c): &(Var<F>, Var<F>)) -> Result<(Var<F>, Var<F>)> {
        let t = xw.tape();
        let b = self.biases.as_ref().map(|(_, b)| t.param(b));
        let gates = linear_add(h, &t.param(&self.weight_hh), b.as_ref(), Some(xw))?;
        // The third output holds the gate activations (for the fast backward, and to inspect).
        let [h, c, _acts]: [Var<F>; 3] = t
            .apply_multi(LstmPointwise, &[&gates, c])?
            .try_into()
            .expect("three outputs");
        let h = match &self.weight_hr {
            Some(w) => h.matmul_t(&t.param(w))?,
            None => h,
        };
        Ok((h, c))
    }
}
