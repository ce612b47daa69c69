//! The GRU cell, PyTorch-exact (`b_hn` inside the reset product).

use super::{named, param};
use crate::{Cell, Module};
use eddy_ops::{linear_add, GruPointwise, GruSequence};
use eddy_tape::{Float, Param, Result, Rng, Var};

/// The GRU cell (gates in PyTorch's order r, z, n):
///
/// ```text
/// r = σ(W_ir x + b_ir + W_hr h + b_hr)
/// z = σ(W_iz x + b_iz + W_hz h + b_hz)
/// n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
/// h' = (1 − z) ⊙ n + z ⊙ h
/// ```
///
/// Parameters: `weight_ih` `[3H, I]`, `weight_hh` `[3H, H]`, `bias_ih`, `bias_hh` `[3H]`.
#[derive(Debug, Clone)]
pub struct GruCell<F: Float = f32> {
    /// Input weights `[3H, I]`, rows `W_ir`, `W_iz`, `W_in`.
    pub weight_ih: Param<F>,
    /// Recurrent weights `[3H, H]`, rows `W_hr`, `W_hz`, `W_hn`.
    pub weight_hh: Param<F>,
    /// `(bias_ih, bias_hh)`, `[3H]` each; `None` without biases.
    pub biases: Option<(Param<F>, Param<F>)>,
}

impl<F: Float> GruCell<F> {
    /// A cell from `input` to `hidden` features, PyTorch-initialised.
    pub fn new(input: usize, hidden: usize, bias: bool, rng: &mut Rng) -> Self {
        GruCell {
            weight_ih: param("weight_ih", &[3 * hidden, input], hidden, rng),
            weight_hh: param("weight_hh", &[3 * hidden, hidden], hidden, rng),
            biases: bias.then(|| {
                (
                    param("bias_ih", &[3 * hidden], hidden, rng),
                    param("bias_hh", &[3 * hidden], hidden, rng),
                )
            }),
        }
    }
}

impl<F: Float> Module<F> for GruCell<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        named(&self.weight_ih, &self.weight_hh, &self.biases)
    }
}

impl<F: Float> Cell<F> for GruCell<F> {
    type State = Var<F>;

    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.weight_hh.shape()[1]]
    }

    /// `W_ih x + b_ih` for all time steps at once.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        super::project_input(x, &self.weight_ih, &self.biases)
    }

    /// The whole sequence as one [`GruSequence`] op.
    fn unroll(&self, xp: &Var<F>, h: &Var<F>, reverse: bool) -> Option<Result<(Var<F>, Var<F>)>> {
        let op = GruSequence {
            reverse,
            bias: self.biases.is_some(),
            keep_activations: xp.tape().is_recording(),
        };
        let run = || {
            let out = super::apply_sequence(op, xp, &self.weight_hh, &self.biases, &[h])?;
            Ok((out[0].clone(), super::last_step(&out[0], reverse)?))
        };
        Some(run())
    }

    fn step(&self, xw: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
        let t = xw.tape();
        let b = self.biases.as_ref().map(|(_, b)| t.param(b));
        let hw = linear_add(h, &t.param(&self.weight_hh), b.as_ref(), None)?;
        t.apply(GruPointwise, &[xw, &hw, h])
    }
}
