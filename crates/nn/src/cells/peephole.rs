//! The LSTM with peephole connections of Gers & Schmidhuber (2000).

use super::{named, param};
use crate::{Cell, Module};
use eddy_ops::VarExt;
use eddy_tape::{Float, Param, Result, Rng, Var};

/// The LSTM cell with diagonal peephole connections (Gers & Schmidhuber, "Recurrent nets that
/// time and count", 2000): the input and forget gates look at the previous cell `c`, the output
/// gate at the new cell `c'`. Gates in PyTorch's order i, f, g, o:
///
/// ```text
/// i, f, g, o = split(W_ih x + b_ih + W_hh h + b_hh)
/// i = σ(i + w_ci ⊙ c)
/// f = σ(f + w_cf ⊙ c)
/// c' = f ⊙ c + i ⊙ tanh(g)
/// o = σ(o + w_co ⊙ c')
/// h' = o ⊙ tanh(c')
/// ```
///
/// Parameters: `weight_ih` `[4H, I]`, `weight_hh` `[4H, H]`, `bias_ih`, `bias_hh` `[4H]` (as
/// [`LstmCell`](crate::LstmCell)), and the peephole weights `weight_ci`, `weight_cf`,
/// `weight_co` `[H]`; all `U(-1/√H, 1/√H)`, PyTorch's init for recurrent layers.
/// State `(h [B, H], c [B, H])`.
///
/// # Example
/// ```
/// use eddy_nn::{PeepholeLstmCell, RecurrentConfig};
/// use eddy_ops::prelude::*;
///
/// let mut rng = Rng::seed(0);
/// let layer = RecurrentConfig::new(3, 4)
///     .build(|i, h, rng| PeepholeLstmCell::<f32>::new(i, h, true, rng), &mut rng);
/// let tape = Tape::new();
/// let out = layer.forward(&tape.input(ndarray::ArrayD::zeros(vec![5, 2, 3])))?; // [T, B, I]
/// assert_eq!(out.output.shape(), &[5, 2, 4]);
/// assert_eq!(out.c_n().unwrap().shape(), &[1, 2, 4]);
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PeepholeLstmCell<F: Float = f32> {
    /// Input weights `[4H, I]`, gates i, f, g, o.
    pub weight_ih: Param<F>,
    /// Recurrent weights `[4H, H]`, gates i, f, g, o.
    pub weight_hh: Param<F>,
    /// `(bias_ih, bias_hh)`, `[4H]` each; `None` without biases.
    pub biases: Option<(Param<F>, Param<F>)>,
    /// Peephole from `c` to the input gate, `[H]`.
    pub weight_ci: Param<F>,
    /// Peephole from `c` to the forget gate, `[H]`.
    pub weight_cf: Param<F>,
    /// Peephole from `c'` to the output gate, `[H]`.
    pub weight_co: Param<F>,
}

impl<F: Float> PeepholeLstmCell<F> {
    /// A cell from `input` to `hidden` features, initialised `U(-1/√hidden, 1/√hidden)`.
    pub fn new(input: usize, hidden: usize, bias: bool, rng: &mut Rng) -> Self {
        PeepholeLstmCell {
            weight_ih: param("weight_ih", &[4 * hidden, input], hidden, rng),
            weight_hh: param("weight_hh", &[4 * hidden, hidden], hidden, rng),
            biases: bias.then(|| {
                (
                    param("bias_ih", &[4 * hidden], hidden, rng),
                    param("bias_hh", &[4 * hidden], hidden, rng),
                )
            }),
            weight_ci: param("weight_ci", &[hidden], hidden, rng),
            weight_cf: param("weight_cf", &[hidden], hidden, rng),
            weight_co: param("weight_co", &[hidden], hidden, rng),
        }
    }

    /// The cell size `H`.
    pub fn hidden_size(&self) -> usize {
        self.weight_hh.shape()[1]
    }
}

impl<F: Float> Module<F> for PeepholeLstmCell<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        let mut out = named(&self.weight_ih, &self.weight_hh, &self.biases);
        out.push(("weight_ci".into(), self.weight_ci.clone()));
        out.push(("weight_cf".into(), self.weight_cf.clone()));
        out.push(("weight_co".into(), self.weight_co.clone()));
        out
    }
}

impl<F: Float> Cell<F> for PeepholeLstmCell<F> {
    type State = (Var<F>, Var<F>);

    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.hidden_size(), self.hidden_size()]
    }

    /// `W_ih x + b_ih` for all time steps at once.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        super::project_input(x, &self.weight_ih, &self.biases)
    }

    fn step(&self, xw: &Var<F>, (h, c): &(Var<F>, Var<F>)) -> Result<(Var<F>, Var<F>)> {
        let t = xw.tape();
        let b = self.biases.as_ref().map(|(_, b)| t.param(b));
        let gates = (xw + h.linear(&t.param(&self.weight_hh), b.as_ref())?)?;
        let [i, f, g, o]: [Var<F>; 4] = gates.chunk(4, 1)?.try_into().expect("four chunks");
        let i = (i + (c * &t.param(&self.weight_ci))?)?.sigmoid()?;
        let f = (f + (c * &t.param(&self.weight_cf))?)?.sigmoid()?;
        let c = ((f * c)? + (i * g.tanh()?)?)?;
        let o = (o + (&c * &t.param(&self.weight_co))?)?.sigmoid()?;
        let h = (o * c.tanh()?)?;
        Ok((h, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::reference::{assert_close, mat, random, sigmoid, vec};
    use eddy_tape::Tape;
    use ndarray::{s, Axis};

    /// One step against the equations, computed with plain ndarray.
    #[test]
    fn a_step_matches_the_equations() -> Result<()> {
        let mut rng = Rng::seed(5);
        let cell = PeepholeLstmCell::<f64>::new(2, 3, true, &mut rng);
        let (x, h, c) = (
            random(4, 2, &mut rng),
            random(4, 3, &mut rng),
            random(4, 3, &mut rng),
        );
        let tape = Tape::new();
        let v = |a: &ndarray::Array2<f64>| tape.constant(a.clone().into_dyn());
        let (h1, c1) = cell.step(&cell.project(&v(&x))?, &(v(&h), v(&c)))?;

        let (bi, bh) = cell.biases.as_ref().unwrap();
        let gates = x.dot(&mat(&cell.weight_ih).t()) + vec(bi) + h.dot(&mat(&cell.weight_hh).t()) + vec(bh);
        let gate = |k: usize| gates.slice(s![.., 3 * k..3 * k + 3]).to_owned();
        let i = (gate(0) + &c * &vec(&cell.weight_ci)).mapv(sigmoid);
        let f = (gate(1) + &c * &vec(&cell.weight_cf)).mapv(sigmoid);
        let c_new = &f * &c + &i * &gate(2).mapv(f64::tanh);
        let o = (gate(3) + &c_new * &vec(&cell.weight_co)).mapv(sigmoid);
        let h_new = &o * &c_new.mapv(f64::tanh);
        assert_close(c1.value(), &c_new);
        assert_close(h1.value(), &h_new);
        assert_eq!(h_new.len_of(Axis(1)), cell.output_size());
        Ok(())
    }

    #[test]
    fn params_are_named_and_shaped() {
        let cell = PeepholeLstmCell::<f32>::new(2, 3, false, &mut Rng::seed(0));
        let got: Vec<(String, Vec<usize>)> = cell.params().into_iter().map(|(n, p)| (n, p.shape())).collect();
        let want = [
            ("weight_ih", vec![12, 2]),
            ("weight_hh", vec![12, 3]),
            ("weight_ci", vec![3]),
            ("weight_cf", vec![3]),
            ("weight_co", vec![3]),
        ];
        assert_eq!(got, want.map(|(n, s)| (n.to_string(), s)));
        assert!(cell
            .params()
            .iter()
            .all(|(_, p)| p.value().iter().all(|v| v.abs() <= 1.0 / 3f32.sqrt())));
    }
}
