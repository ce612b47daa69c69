//! minLSTM, from "Were RNNs All We Needed?" (Feng et al. 2024).

use super::linear_recurrence::{coefficients, half_state, linear_step, log_g, log_space_step};
use crate::{init, Cell, LinearRecurrence, Module};
use eddy_ops::{concat, VarExt};
use eddy_tape::{Float, Param, Result, Rng, Tape, Var};

/// The minLSTM cell (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs All We Needed?",
/// 2024): an LSTM whose gates and candidate depend on the input alone, with the forget and
/// input gates normalised to sum to one, so that the state is a weighted average.
///
/// ```text
/// f, i = σ(W_f x + b_f), σ(W_i x + b_i)
/// h̃ = W_h x + b_h
/// f' = f / (f + i),  i' = i / (f + i)
/// h' = f' ⊙ h + i' ⊙ h̃
/// ```
///
/// As for [`MinGruCell`](crate::MinGruCell), [`project`](Cell::project) computes the
/// coefficients of the linear recurrence `h' = a ⊙ h + b` (`a = f'`, `b = i' ⊙ h̃`) for the
/// whole sequence, and a step is pointwise.
///
/// **Log-space mode** ([`MinLstmCell::log_space`], the paper's appendix): the candidate goes
/// through `g(v) = v + 0.5` for `v ≥ 0`, `σ(v)` otherwise, and the recurrence runs on
/// logarithms, `log h' = logaddexp(log f' + log h, log i' + log g(h̃))`, with
/// `d = softplus(−k_f) − softplus(−k_i)`, `log f' = −softplus(d)`, `log i' = −softplus(−d)`
/// (`k` the gate pre-activations). The state must be positive: the default initial state is
/// `g(0) = 0.5`, and a given one must be positive.
///
/// Parameters: `weight_ih` `[3H, I]` (rows `W_f`, `W_i`, `W_h`) and `bias_ih` `[3H]`, both
/// `U(-1/√I, 1/√I)` as the paper's `nn.Linear`. State `h [B, H]`.
///
/// # Example
/// ```
/// use eddy_nn::{MinLstmCell, RecurrentConfig};
/// use eddy_ops::prelude::*;
///
/// let mut rng = Rng::seed(0);
/// let layer = RecurrentConfig::new(3, 4)
///     .bidirectional(true)
///     .build(|i, h, rng| MinLstmCell::<f32>::new(i, h, true, rng), &mut rng);
/// let tape = Tape::new();
/// let out = layer.forward(&tape.input(ndarray::ArrayD::zeros(vec![5, 2, 3])))?; // [T, B, I]
/// assert_eq!(out.output.shape(), &[5, 2, 8]);
/// assert_eq!(out.h_n().shape(), &[2, 2, 4]);
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MinLstmCell<F: Float = f32> {
    /// Input weights `[3H, I]`: rows `W_f`, `W_i`, `W_h`.
    pub weight_ih: Param<F>,
    /// Input bias `[3H]`; `None` without biases.
    pub bias_ih: Option<Param<F>>,
    /// The paper's log-space mode (candidate through `g`, positive state); see the type's docs.
    pub log_space: bool,
}

impl<F: Float> MinLstmCell<F> {
    /// A cell from `input` to `hidden` features, initialised `U(-1/√input, 1/√input)`.
    pub fn new(input: usize, hidden: usize, bias: bool, rng: &mut Rng) -> Self {
        MinLstmCell {
            weight_ih: Param::new(
                "weight_ih",
                init::pytorch_default(&[3 * hidden, input], input, rng),
            ),
            bias_ih: bias.then(|| Param::new("bias_ih", init::pytorch_default(&[3 * hidden], input, rng))),
            log_space: false,
        }
    }

    /// Switches the paper's log-space mode on or off.
    pub fn log_space(mut self, yes: bool) -> Self {
        self.log_space = yes;
        self
    }

    /// The state size `H`.
    pub fn hidden_size(&self) -> usize {
        self.weight_ih.shape()[0] / 3
    }
}

impl<F: Float> Module<F> for MinLstmCell<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        let mut out = vec![("weight_ih".to_string(), self.weight_ih.clone())];
        out.extend(self.bias_ih.iter().map(|b| ("bias_ih".to_string(), b.clone())));
        out
    }
}

impl<F: Float> Cell<F> for MinLstmCell<F> {
    type State = Var<F>;

    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.hidden_size()]
    }

    /// `[a, b] = [f', i' ⊙ h̃]` (`[T, B, 2H]`) for all time steps: one GEMM and pointwise ops;
    /// in log-space mode `[log f', log i' + log g(h̃)]`.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        let t = x.tape();
        let b = self.bias_ih.as_ref().map(|b| t.param(b));
        let pre = x.linear(&t.param(&self.weight_ih), b.as_ref())?;
        let [kf, ki, candidate]: [Var<F>; 3] = pre.chunk(3, -1)?.try_into().expect("three chunks");
        if self.log_space {
            let d = (kf.neg()?.softplus()? - ki.neg()?.softplus()?)?;
            let log_f = d.softplus()?.neg()?;
            let log_i = d.neg()?.softplus()?.neg()?;
            return concat(&[&log_f, &(log_i + log_g(&candidate)?)?], -1);
        }
        let (f, i) = (kf.sigmoid()?, ki.sigmoid()?);
        let total = (&f + &i)?;
        let a = (f / &total)?;
        let b = ((i / &total)? * candidate)?;
        concat(&[&a, &b], -1)
    }

    /// `[a, b]` split in two: the layer runs the sequence as one scan, in log space in
    /// log-space mode.
    fn linear_recurrence(&self, ab: &Var<F>) -> Option<Result<LinearRecurrence<F>>> {
        Some(coefficients(ab, self.log_space))
    }

    fn step(&self, ab: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
        if self.log_space {
            log_space_step("min_lstm", ab, h)
        } else {
            linear_step(ab, h)
        }
    }

    /// Zeros; in log-space mode `g(0) = 0.5`.
    fn zero_state(&self, tape: &Tape<F>, batch: usize) -> Result<Var<F>> {
        if self.log_space {
            Ok(half_state(tape, batch, self.hidden_size()))
        } else {
            Ok(tape.constant(ndarray::ArrayD::zeros(vec![batch, self.hidden_size()])))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::reference::{assert_within, g, mat, random, run_steps, sigmoid, vec};
    use ndarray::{s, Array2};

    /// The cell looped over a sequence against the equations in plain f64, in both modes (the
    /// log-space mode against its own sequential form, `h' = f' h + i' g(h̃)`).
    fn matches_the_equations(log_space: bool) -> Result<()> {
        let mut rng = Rng::seed(if log_space { 11 } else { 10 });
        let (steps, batch, input, hidden) = (30, 3, 2, 4);
        let cell = MinLstmCell::<f64>::new(input, hidden, true, &mut rng).log_space(log_space);
        let xs: Vec<_> = (0..steps)
            .map(|_| random(batch, input, &mut rng).mapv(|v| 4.0 * v))
            .collect();
        let (w, b) = (mat(&cell.weight_ih), vec(cell.bias_ih.as_ref().unwrap()));
        let h0 = random(batch, hidden, &mut rng).mapv(|v| if log_space { v.abs() + 0.1 } else { v });
        let mut h = h0.clone();
        for x in &xs {
            let pre = x.dot(&w.t()) + &b;
            let f = pre.slice(s![.., 0..hidden]).mapv(sigmoid);
            let i = pre.slice(s![.., hidden..2 * hidden]).mapv(sigmoid);
            let mut candidate = pre.slice(s![.., 2 * hidden..]).to_owned();
            if log_space {
                candidate.mapv_inplace(g);
            }
            let total = &f + &i;
            h = (&f / &total) * &h + (&i / &total) * &candidate;
        }
        assert_within(&run_steps(&cell, &xs, &h0)?, &h, 1e-12);
        Ok(())
    }

    #[test]
    fn a_sequence_matches_the_equations() -> Result<()> {
        matches_the_equations(false)
    }

    #[test]
    fn the_log_space_mode_equals_its_sequential_form() -> Result<()> {
        matches_the_equations(true)
    }

    #[test]
    fn the_log_space_mode_starts_at_g_of_zero_and_rejects_a_state_that_is_not_positive() {
        let mut rng = Rng::seed(12);
        let cell = MinLstmCell::<f64>::new(2, 3, true, &mut rng).log_space(true);
        let zero = cell.zero_state(&Tape::new(), 2).unwrap();
        assert!(zero.value().iter().all(|&v| v == 0.5));
        let h0 = Array2::from_elem((1, 3), -0.5);
        let err = run_steps(&cell, &[random(1, 2, &mut rng)], &h0).unwrap_err();
        assert!(
            err.to_string().contains("min_lstm") && err.to_string().contains("positive"),
            "{err}"
        );
    }
}
