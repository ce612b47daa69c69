//! RG-LRU, the Real-Gated Linear Recurrent Unit of Griffin and Hawk (De et al. 2024).

use super::linear_recurrence::{coefficients, linear_step};
use crate::{init, Cell, LinearRecurrence, Module};
use eddy_ops::{concat, VarExt};
use eddy_tape::{Error, Float, Param, Result, Rng, Var};
use ndarray::ArrayD;

/// The RG-LRU cell (De, Smith, Fernando et al., "Griffin: Mixing Gated Linear Recurrences with
/// Local Attention for Efficient Language Models", 2024), the recurrent core of Griffin's and
/// Hawk's recurrent block: a diagonal linear recurrence whose decay is gated by the input.
///
/// ```text
/// r = σ(W_a x + b_a)                  recurrence gate
/// i = σ(W_x x + b_x)                  input gate
/// log a = −c · r ⊙ softplus(−Λ)       c = 8, so a = σ(Λ)^(c·r)
/// h' = a ⊙ h + sqrt(1 − a²) ⊙ (i ⊙ x)
/// ```
///
/// The input enters elementwise, so the input size must equal the hidden size (`I = H`); a
/// bidirectional stack of more than one layer (whose later layers get `2H` features) is an
/// error at construction. Everything but the blend depends on the input alone, so
/// [`project`](Cell::project) computes `a` and `b = sqrt(1 − a²) ⊙ i ⊙ x` for the whole
/// sequence and a step is `h' = a ⊙ h + b` (`1 − a²` as `−expm1(2 log a)`, exact as `a → 1`).
///
/// Parameters: `weight_a`, `weight_x` `[H, H]` and `bias_a`, `bias_x` `[H]`, all
/// `U(-1/√H, 1/√H)` (PyTorch's `nn.Linear`); `a_param` (Λ) `[H]`, initialised so that
/// `σ(Λ)^c` is uniform in `[0.9, 0.999]`, as in the paper. State `h [B, H]`.
///
/// # Example
/// ```
/// use eddy_nn::{RecurrentConfig, RgLruCell};
/// use eddy_ops::prelude::*;
///
/// let mut rng = Rng::seed(0);
/// let layer = RecurrentConfig::new(4, 4)
///     .num_layers(2)
///     .try_build(RgLruCell::<f32>::new, &mut rng)?;
/// let tape = Tape::new();
/// let out = layer.forward(&tape.input(ndarray::ArrayD::zeros(vec![5, 2, 4])))?; // [T, B, I]
/// assert_eq!(out.output.shape(), &[5, 2, 4]);
///
/// // Bidirectional, the second layer would get 8 features for 4 units.
/// let err = RecurrentConfig::new(4, 4)
///     .num_layers(2)
///     .bidirectional(true)
///     .try_build(RgLruCell::<f32>::new, &mut rng)
///     .unwrap_err();
/// assert!(err.to_string().contains("input size = hidden size"));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RgLruCell<F: Float = f32> {
    /// Recurrence-gate weights `[H, H]`.
    pub weight_a: Param<F>,
    /// Recurrence-gate bias `[H]`.
    pub bias_a: Param<F>,
    /// Input-gate weights `[H, H]`.
    pub weight_x: Param<F>,
    /// Input-gate bias `[H]`.
    pub bias_x: Param<F>,
    /// Λ, `[H]`: the decay `σ(Λ)^c` where the recurrence gate is open.
    pub a_param: Param<F>,
}

impl<F: Float> RgLruCell<F> {
    /// The constant `c` of `log a = −c · r ⊙ softplus(−Λ)`.
    pub const C: f64 = 8.0;

    /// A cell of `hidden` units, which must equal `input`.
    ///
    /// # Errors
    /// [`Error::Shape`] if `input ≠ hidden`.
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> Result<Self> {
        if input != hidden {
            return Err(Error::shape(
                "rg_lru",
                &[&[input], &[hidden]],
                format!(
                    "RG-LRU needs input size = hidden size (its input gate multiplies x \
                     elementwise), got input {input} for hidden {hidden}; in a bidirectional \
                     stack the layers after the first get 2·hidden features"
                ),
            ));
        }
        let h = hidden;
        init::check_size::<F>("rg_lru", &[h, h])?;
        let p = |name: &str, shape: &[usize], rng: &mut Rng| {
            Param::new(name, init::pytorch_default(shape, h, rng))
        };
        let weight_a = p("weight_a", &[h, h], rng);
        let bias_a = p("bias_a", &[h], rng);
        let weight_x = p("weight_x", &[h, h], rng);
        let bias_x = p("bias_x", &[h], rng);
        // σ(Λ)^c = u, u ~ U[0.9, 0.999]  ⇔  Λ = logit(u^(1/c)).
        let lambda = ArrayD::from_shape_simple_fn(vec![h], || {
            let s = rng.uniform_in(0.9, 0.999).powf(1.0 / Self::C);
            F::of((s / (1.0 - s)).ln())
        });
        Ok(RgLruCell {
            weight_a,
            bias_a,
            weight_x,
            bias_x,
            a_param: Param::new("a_param", lambda),
        })
    }

    /// The state size `H` (also the input size).
    pub fn hidden_size(&self) -> usize {
        self.a_param.shape()[0]
    }
}

impl<F: Float> Module<F> for RgLruCell<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        [
            &self.weight_a,
            &self.bias_a,
            &self.weight_x,
            &self.bias_x,
            &self.a_param,
        ]
        .into_iter()
        .map(|p| (p.name().to_string(), p.clone()))
        .collect()
    }
}

impl<F: Float> Cell<F> for RgLruCell<F> {
    type State = Var<F>;

    fn input_size(&self) -> usize {
        self.hidden_size()
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.hidden_size()]
    }

    /// `[a, b] = [a, sqrt(1 − a²) ⊙ i ⊙ x]` (`[T, B, 2H]`) for all time steps.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        let t = x.tape();
        let r = x
            .linear(&t.param(&self.weight_a), Some(&t.param(&self.bias_a)))?
            .sigmoid()?;
        let i = x
            .linear(&t.param(&self.weight_x), Some(&t.param(&self.bias_x)))?
            .sigmoid()?;
        // log a = −c · r ⊙ softplus(−Λ)
        let rate = t.param(&self.a_param).neg()?.softplus()?.scale(F::of(-Self::C))?;
        let log_a = (r * rate)?;
        let a = log_a.exp()?;
        let multiplier = log_a.scale(F::of(2.0))?.expm1()?.neg()?.sqrt()?;
        let b = ((multiplier * i)? * x)?;
        concat(&[&a, &b], -1)
    }

    /// `[a, b]` split in two: the layer runs the sequence as one scan.
    fn linear_recurrence(&self, ab: &Var<F>) -> Option<Result<LinearRecurrence<F>>> {
        Some(coefficients(ab, false))
    }

    fn step(&self, ab: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
        linear_step(ab, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::reference::{assert_within, mat, random, run_steps, sigmoid, vec};

    /// A sequence against the equations in plain f64.
    #[test]
    fn a_sequence_matches_the_equations() -> Result<()> {
        let mut rng = Rng::seed(13);
        let (steps, batch, hidden) = (12, 3, 4);
        let cell = RgLruCell::<f64>::new(hidden, hidden, &mut rng)?;
        let xs: Vec<_> = (0..steps).map(|_| random(batch, hidden, &mut rng)).collect();
        let lambda = vec(&cell.a_param);
        let h0 = random(batch, hidden, &mut rng);
        let mut h = h0.clone();
        for x in &xs {
            let r = (x.dot(&mat(&cell.weight_a).t()) + vec(&cell.bias_a)).mapv(sigmoid);
            let i = (x.dot(&mat(&cell.weight_x).t()) + vec(&cell.bias_x)).mapv(sigmoid);
            // a = σ(Λ)^(c·r)
            let a = ndarray::Array2::from_shape_fn(r.dim(), |(b, u)| {
                sigmoid(lambda[u]).powf(RgLruCell::<f64>::C * r[[b, u]])
            });
            h = &a * &h + a.mapv(|a| (1.0 - a * a).sqrt()) * (&i * x);
        }
        assert_within(&run_steps(&cell, &xs, &h0)?, &h, 1e-12);
        Ok(())
    }

    #[test]
    fn the_decay_starts_uniform_in_the_papers_range() -> Result<()> {
        let cell = RgLruCell::<f64>::new(2000, 2000, &mut Rng::seed(14))?;
        let decay: Vec<f64> = vec(&cell.a_param)
            .iter()
            .map(|&l| sigmoid(l).powf(RgLruCell::<f64>::C))
            .collect();
        assert!(decay.iter().all(|&d| (0.9..=0.999).contains(&d)));
        // Uniform: each tenth of the range holds about a tenth of the units.
        for k in 0..10 {
            let lo = 0.9 + 0.0099 * k as f64;
            let n = decay.iter().filter(|&&d| d >= lo && d < lo + 0.0099).count();
            assert!((140..260).contains(&n), "{n} units in the tenth from {lo}");
        }
        Ok(())
    }

    #[test]
    fn a_different_input_size_is_a_clear_error() {
        let err = RgLruCell::<f64>::new(3, 4, &mut Rng::seed(15)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("rg_lru") && msg.contains("input 3 for hidden 4"),
            "{msg}"
        );
    }
}
