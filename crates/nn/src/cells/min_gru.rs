//! minGRU, from "Were RNNs All We Needed?" (Feng et al. 2024).

use super::linear_recurrence::{coefficients, half_state, log_g, log_space_step};
use crate::{init, Cell, LinearRecurrence, Module};
use eddy_ops::{concat, gated_coefficients, VarExt};
use eddy_tape::{Float, Param, Result, Rng, Tape, Var};

/// The minGRU cell (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs All We Needed?",
/// 2024): a GRU whose gate and candidate depend on the input alone, not on `h`.
///
/// ```text
/// z = σ(W_z x + b_z)
/// h̃ = W_h x + b_h
/// h' = (1 − z) ⊙ h + z ⊙ h̃
/// ```
///
/// Since nothing but the final blend depends on `h`, [`project`](Cell::project) computes the
/// gate logits and candidates `[W_z x + b_z | h̃]` of the whole sequence in one GEMM, and a step
/// is pointwise: the linear recurrence `h' = a ⊙ h + b` with `a = 1 − z`, `b = z ⊙ h̃`. This is
/// what makes minGRU parallel-friendly (the recurrence is a linear scan); the layer runs the
/// whole sequence as one fused op, [`eddy_ops::gated_scan()`], which computes `z`, `a` and `b`
/// on the fly instead of storing them.
///
/// **Log-space mode** ([`MinGruCell::log_space`], the paper's appendix): a different function,
/// `h' = (1 − z) ⊙ h + z ⊙ g(h̃)` with `g(v) = v + 0.5` for `v ≥ 0` and `σ(v)` otherwise, so every
/// term is positive and the recurrence runs on logarithms,
/// `log h' = logaddexp(log(1 − z) + log h, log z + log g(h̃))` (`log z = logsigmoid(k)`,
/// `log(1 − z) = −softplus(k)`). The state must be positive: the default initial state is
/// `g(0) = 0.5` (the paper passes `h_0` through `g`), and a given one must be positive.
///
/// Parameters: `weight_ih` `[2H, I]` (rows `W_z` then `W_h`) and `bias_ih` `[2H]`, both
/// `U(-1/√I, 1/√I)` as the paper's `nn.Linear`. State `h [B, H]`.
///
/// # Example
/// ```
/// use eddy_nn::{MinGruCell, RecurrentConfig};
/// use eddy_ops::prelude::*;
///
/// let mut rng = Rng::seed(0);
/// let layer = RecurrentConfig::new(3, 4)
///     .num_layers(2)
///     .build(|i, h, rng| MinGruCell::<f32>::new(i, h, true, rng), &mut rng);
/// let tape = Tape::new();
/// let out = layer.forward(&tape.input(ndarray::ArrayD::zeros(vec![5, 2, 3])))?; // [T, B, I]
/// assert_eq!(out.output.shape(), &[5, 2, 4]);
/// assert_eq!(out.h_n().shape(), &[2, 2, 4]);
///
/// // The log-space mode: its states stay positive.
/// let log_layer = RecurrentConfig::new(3, 4)
///     .build(|i, h, rng| MinGruCell::<f32>::new(i, h, true, rng).log_space(true), &mut rng);
/// let out = log_layer.forward(&tape.input(ndarray::ArrayD::zeros(vec![5, 2, 3])))?;
/// assert!(out.h_n().value().iter().all(|&v| v > 0.0));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MinGruCell<F: Float = f32> {
    /// Input weights `[2H, I]`: rows `W_z`, then `W_h`.
    pub weight_ih: Param<F>,
    /// Input bias `[2H]`; `None` without biases.
    pub bias_ih: Option<Param<F>>,
    /// The paper's log-space mode (candidate through `g`, positive state); see the type's docs.
    pub log_space: bool,
}

impl<F: Float> MinGruCell<F> {
    /// A cell from `input` to `hidden` features, initialised `U(-1/√input, 1/√input)`.
    pub fn new(input: usize, hidden: usize, bias: bool, rng: &mut Rng) -> Self {
        MinGruCell {
            weight_ih: Param::new(
                "weight_ih",
                init::pytorch_default(&[2 * hidden, input], input, rng),
            ),
            bias_ih: bias.then(|| Param::new("bias_ih", init::pytorch_default(&[2 * hidden], input, rng))),
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
        self.weight_ih.shape()[0] / 2
    }
}

impl<F: Float> Module<F> for MinGruCell<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        let mut out = vec![("weight_ih".to_string(), self.weight_ih.clone())];
        out.extend(self.bias_ih.iter().map(|b| ("bias_ih".to_string(), b.clone())));
        out
    }
}

impl<F: Float> Cell<F> for MinGruCell<F> {
    type State = Var<F>;

    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.hidden_size()]
    }

    /// `[W_z x + b_z | h̃]` (`[T, B, 2H]`) for all time steps, one GEMM; in log-space mode
    /// `[log(1 − z), log z + log g(h̃)]`.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        let t = x.tape();
        let b = self.bias_ih.as_ref().map(|b| t.param(b));
        let kh = x.linear(&t.param(&self.weight_ih), b.as_ref())?;
        if self.log_space {
            let [k, candidate]: [Var<F>; 2] = kh.chunk(2, -1)?.try_into().expect("two chunks");
            let log_a = k.softplus()?.neg()?;
            let log_b = (k.log_sigmoid()? + log_g(&candidate)?)?;
            return concat(&[&log_a, &log_b], -1);
        }
        Ok(kh)
    }

    /// The gated scan over the projection ([`eddy_ops::gated_scan()`]), or the log-space scan in
    /// log-space mode.
    fn linear_recurrence(&self, xp: &Var<F>) -> Option<Result<LinearRecurrence<F>>> {
        if self.log_space {
            return Some(coefficients(xp, true));
        }
        Some(Ok(LinearRecurrence::Gated { kc: xp.clone() }))
    }

    fn step(&self, xp: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
        if self.log_space {
            return log_space_step("min_gru", xp, h);
        }
        let (a, b) = gated_coefficients(xp)?;
        (a * h)? + b
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
    use crate::cells::reference::{assert_close, assert_within, g, mat, random, run_steps, sigmoid, vec};
    use eddy_tape::Tape;
    use ndarray::s;

    /// One step against the equations, computed with plain ndarray.
    #[test]
    fn a_step_matches_the_equations() -> Result<()> {
        let mut rng = Rng::seed(7);
        let cell = MinGruCell::<f64>::new(2, 3, true, &mut rng);
        let (x, h) = (random(4, 2, &mut rng), random(4, 3, &mut rng));
        let tape = Tape::new();
        let v = |a: &ndarray::Array2<f64>| tape.constant(a.clone().into_dyn());
        let h1 = cell.step(&cell.project(&v(&x))?, &v(&h))?;

        let pre = x.dot(&mat(&cell.weight_ih).t()) + vec(cell.bias_ih.as_ref().unwrap());
        let z = pre.slice(s![.., 0..3]).mapv(sigmoid);
        let candidate = pre.slice(s![.., 3..6]).to_owned();
        let h_new = z.mapv(|z| 1.0 - z) * &h + &z * &candidate;
        assert_close(h1.value(), &h_new);
        Ok(())
    }

    #[test]
    fn a_step_reads_no_parameter_and_the_projection_covers_the_sequence() -> Result<()> {
        let cell = MinGruCell::<f64>::new(2, 3, true, &mut Rng::seed(0));
        let tape = Tape::new();
        let zh = cell.project(&tape.constant(ndarray::ArrayD::from_elem(vec![5, 4, 2], 0.5)))?;
        assert_eq!(zh.shape(), &[5, 4, 6]);
        // Everything that depends on a parameter is in the projection: a step on constants
        // yields a constant.
        let z = tape.constant(zh.value().clone());
        let h = tape.constant(ndarray::ArrayD::zeros(vec![4, 3]));
        assert!(!cell.step(&z.select(0, 0)?, &h)?.requires_grad());
        Ok(())
    }

    /// The log-space mode equals its own sequential form, `h' = (1 − z) h + z g(h̃)` looped in
    /// plain f64, over enough steps for the logs to matter, from the default state `g(0)` and
    /// from a given positive one.
    #[test]
    fn the_log_space_mode_equals_its_sequential_form() -> Result<()> {
        let mut rng = Rng::seed(8);
        let (steps, batch, input, hidden) = (30, 3, 2, 4);
        let cell = MinGruCell::<f64>::new(input, hidden, true, &mut rng).log_space(true);
        // Inputs scaled so that candidates fall on both sides of g's two pieces.
        let xs: Vec<_> = (0..steps)
            .map(|_| random(batch, input, &mut rng).mapv(|v| 4.0 * v))
            .collect();
        let w = mat(&cell.weight_ih);
        let b = vec(cell.bias_ih.as_ref().unwrap());
        let positive = random(batch, hidden, &mut rng).mapv(|v| v.abs() + 0.1);
        for h0 in [ndarray::Array2::from_elem((batch, hidden), 0.5), positive] {
            let mut h = h0.clone();
            for x in &xs {
                let pre = x.dot(&w.t()) + &b;
                let z = pre.slice(s![.., 0..hidden]).mapv(sigmoid);
                let candidate = pre.slice(s![.., hidden..]).mapv(g);
                h = z.mapv(|z| 1.0 - z) * &h + &z * &candidate;
            }
            assert_within(&run_steps(&cell, &xs, &h0)?, &h, 1e-12);
        }
        // The default state is g(0).
        let zero = cell.zero_state(&Tape::new(), 2)?;
        assert!(zero.value().iter().all(|&v| v == 0.5));
        Ok(())
    }

    #[test]
    fn the_log_space_mode_rejects_a_state_that_is_not_positive() {
        let mut rng = Rng::seed(9);
        let cell = MinGruCell::<f64>::new(2, 3, true, &mut rng).log_space(true);
        let mut h0 = random(1, 3, &mut rng).mapv(|v| v.abs() + 0.1);
        h0[[0, 1]] = 0.0;
        let err = run_steps(&cell, &[random(1, 2, &mut rng)], &h0).unwrap_err();
        assert!(
            err.to_string().contains("min_gru") && err.to_string().contains("positive"),
            "{err}"
        );
    }
}
