//! The Elman cell of the seed: `h_t = f(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh)`.

use super::{named, param};
use crate::{Cell, Module};
use eddy_ops::{linear_add, RnnActivation, RnnSequence, VarExt};
use eddy_tape::{Float, Param, Result, Rng, Var};

/// The nonlinearity `f` of an Elman cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    Tanh,
    /// `max(0, x)`.
    Relu,
}

/// The Elman RNN cell, PyTorch-exact (`torch.nn.RNNCell`): parameters `weight_ih` `[H, I]`,
/// `weight_hh` `[H, H]`, `bias_ih` `[H]`, `bias_hh` `[H]`.
#[derive(Debug, Clone)]
pub struct RnnCell<F: Float = f32> {
    /// Input weights `[H, I]`.
    pub weight_ih: Param<F>,
    /// Recurrent weights `[H, H]`.
    pub weight_hh: Param<F>,
    /// `(bias_ih, bias_hh)`, `[H]` each; `None` without biases.
    pub biases: Option<(Param<F>, Param<F>)>,
    /// The nonlinearity `f` of `h' = f(W_ih x + b_ih + W_hh h + b_hh)`.
    pub nonlinearity: Nonlinearity,
}

impl<F: Float> RnnCell<F> {
    /// A cell from `input` to `hidden` features, PyTorch-initialised.
    pub fn new(input: usize, hidden: usize, nonlinearity: Nonlinearity, bias: bool, rng: &mut Rng) -> Self {
        RnnCell {
            weight_ih: param("weight_ih", &[hidden, input], hidden, rng),
            weight_hh: param("weight_hh", &[hidden, hidden], hidden, rng),
            biases: bias.then(|| {
                (
                    param("bias_ih", &[hidden], hidden, rng),
                    param("bias_hh", &[hidden], hidden, rng),
                )
            }),
            nonlinearity,
        }
    }
}

impl<F: Float> Module<F> for RnnCell<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        named(&self.weight_ih, &self.weight_hh, &self.biases)
    }
}

impl<F: Float> Cell<F> for RnnCell<F> {
    type State = Var<F>;

    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.weight_hh.shape()[0]]
    }

    /// `W_ih x + b_ih` for all time steps at once.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        super::project_input(x, &self.weight_ih, &self.biases)
    }

    /// The whole sequence as one [`RnnSequence`] op.
    fn unroll(&self, xp: &Var<F>, h: &Var<F>, reverse: bool) -> Option<Result<(Var<F>, Var<F>)>> {
        let op = RnnSequence {
            activation: match self.nonlinearity {
                Nonlinearity::Tanh => RnnActivation::Tanh,
                Nonlinearity::Relu => RnnActivation::Relu,
            },
            reverse,
            bias: self.biases.is_some(),
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
        let pre = linear_add(h, &t.param(&self.weight_hh), b.as_ref(), Some(xw))?;
        match self.nonlinearity {
            Nonlinearity::Tanh => pre.tanh(),
            Nonlinearity::Relu => pre.relu(),
        }
    }
}
