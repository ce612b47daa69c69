//! minGRU, from "Were RNNs All We Needed?" (Feng et al. 2024).

use crate::{init, Cell, Module};
use eddy_ops::{concat, VarExt};
use eddy_tape::{Float, Param, Result, Rng, Var};

/// The minGRU cell (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs All We Needed?",
/// 2024): a GRU whose gate and candidate depend on the input alone, not on `h`.
///
/// ```text
/// z = σ(W_z x + b_z)
/// h̃ = W_h x + b_h
/// h' = (1 − z) ⊙ h + z ⊙ h̃
/// ```
///
/// Since nothing but the final blend depends on `h`, [`project`](Cell::project) computes `z`
/// and `h̃` for the whole sequence in one GEMM, and a step is pointwise: this is what makes
/// minGRU parallel-friendly (the recurrence is a linear scan).
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
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MinGruCell<F: Float = f32> {
    pub weight_ih: Param<F>,
    pub bias_ih: Option<Param<F>>,
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
        }
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

    /// `[z, h̃]` (`[T, B, 2H]`) for all time steps: one GEMM and a sigmoid.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        let t = x.tape();
        let b = self.bias_ih.as_ref().map(|b| t.param(b));
        let zh = x.linear(&t.param(&self.weight_ih), b.as_ref())?;
        let [z, h]: [Var<F>; 2] = zh.chunk(2, -1)?.try_into().expect("two chunks");
        concat(&[&z.sigmoid()?, &h], -1)
    }

    fn step(&self, zh: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
        let [z, candidate]: [Var<F>; 2] = zh.chunk(2, 1)?.try_into().expect("two chunks");
        // h' = (1 − z) h + z h̃ = h + z (h̃ − h)
        h + (z * (candidate - h)?)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::reference::{assert_close, mat, random, sigmoid, vec};
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
}
