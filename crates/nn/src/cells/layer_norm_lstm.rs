//! The layer-normalised LSTM of Ba, Kiros & Hinton (2016).

use super::param;
use crate::{Cell, LayerNorm, Module};
use eddy_ops::VarExt;
use eddy_tape::{Float, Param, Result, Rng, Var};

/// The LSTM cell with layer normalisation ("Layer Normalization", Ba, Kiros & Hinton 2016,
/// eqs. 20–22): the input and recurrent pre-activations of all four gates are normalised
/// separately, and the cell is normalised before the output `tanh`. Gates in PyTorch's order
/// i, f, g, o:
///
/// ```text
/// i, f, g, o = split(LN_ih(W_ih x) + LN_hh(W_hh h))
/// c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
/// h' = σ(o) ⊙ tanh(LN_c(c'))
/// LN(a) = (a − mean(a)) / √(var(a) + 1e-5) ⊙ γ + β     (over the feature axis, biased var)
/// ```
///
/// The biases of the gates are the shifts `β` of `LN_ih` and `LN_hh` (as `bias_ih` and
/// `bias_hh` in PyTorch's LSTM). `LN_ih(W_ih x)` does not depend on time, so
/// [`project`](Cell::project) computes it for the whole sequence at once.
///
/// Parameters: `weight_ih` `[4H, I]`, `weight_hh` `[4H, H]`, both `U(-1/√H, 1/√H)`;
/// `ln_ih_weight`, `ln_ih_bias`, `ln_hh_weight`, `ln_hh_bias` `[4H]` and `ln_c_weight`,
/// `ln_c_bias` `[H]`, gains starting at ones and shifts at zeros (PyTorch's `LayerNorm`).
/// State `(h [B, H], c [B, H])`.
#[derive(Debug, Clone)]
pub struct LayerNormLstmCell<F: Float = f32> {
    /// Input weights `[4H, I]`, gates i, f, g, o.
    pub weight_ih: Param<F>,
    /// Recurrent weights `[4H, H]`, gates i, f, g, o.
    pub weight_hh: Param<F>,
    /// Normalises `W_ih x`, `[4H]`.
    pub ln_ih: LayerNorm<F>,
    /// Normalises `W_hh h`, `[4H]`.
    pub ln_hh: LayerNorm<F>,
    /// Normalises `c'` before the output `tanh`, `[H]`.
    pub ln_c: LayerNorm<F>,
}

impl<F: Float> LayerNormLstmCell<F> {
    /// A cell from `input` to `hidden` features.
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        LayerNormLstmCell {
            weight_ih: param("weight_ih", &[4 * hidden, input], hidden, rng),
            weight_hh: param("weight_hh", &[4 * hidden, hidden], hidden, rng),
            ln_ih: LayerNorm::new(4 * hidden),
            ln_hh: LayerNorm::new(4 * hidden),
            ln_c: LayerNorm::new(hidden),
        }
    }

    /// The cell size `H`.
    pub fn hidden_size(&self) -> usize {
        self.weight_hh.shape()[1]
    }
}

impl<F: Float> Module<F> for LayerNormLstmCell<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        let mut out = vec![
            ("weight_ih".to_string(), self.weight_ih.clone()),
            ("weight_hh".to_string(), self.weight_hh.clone()),
        ];
        for (prefix, ln) in [
            ("ln_ih", &self.ln_ih),
            ("ln_hh", &self.ln_hh),
            ("ln_c", &self.ln_c),
        ] {
            out.push((format!("{prefix}_weight"), ln.weight.clone()));
            out.push((format!("{prefix}_bias"), ln.bias.clone()));
        }
        out
    }
}

impl<F: Float> Cell<F> for LayerNormLstmCell<F> {
    type State = (Var<F>, Var<F>);

    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.hidden_size(), self.hidden_size()]
    }

    /// `LN_ih(W_ih x)` for all time steps at once.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        let w = x.tape().param(&self.weight_ih);
        self.ln_ih.forward(&x.linear(&w, None)?)
    }

    fn step(&self, xw: &Var<F>, (h, c): &(Var<F>, Var<F>)) -> Result<(Var<F>, Var<F>)> {
        let w = xw.tape().param(&self.weight_hh);
        let gates = (xw + self.ln_hh.forward(&h.matmul_t(&w)?)?)?;
        let [i, f, g, o]: [Var<F>; 4] = gates.chunk(4, 1)?.try_into().expect("four chunks");
        let c = ((f.sigmoid()? * c)? + (i.sigmoid()? * g.tanh()?)?)?;
        let h = (o.sigmoid()? * self.ln_c.forward(&c)?.tanh()?)?;
        Ok((h, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::reference::{assert_close, mat, random, sigmoid, vec};
    use eddy_tape::Tape;
    use ndarray::{s, Array1, Array2, Axis};

    fn layer_norm(a: &Array2<f64>, gain: &Array1<f64>, shift: &Array1<f64>) -> Array2<f64> {
        let mut out = a.clone();
        for mut row in out.axis_iter_mut(Axis(0)) {
            let mean = row.mean().unwrap();
            let var = row.mapv(|v| (v - mean).powi(2)).mean().unwrap();
            row.mapv_inplace(|v| (v - mean) / (var + 1e-5).sqrt());
        }
        out * gain + shift
    }

    /// One step against the equations, computed with plain ndarray.
    #[test]
    fn a_step_matches_the_equations() -> Result<()> {
        let mut rng = Rng::seed(6);
        let cell = LayerNormLstmCell::<f64>::new(2, 3, &mut rng);
        for ln in [&cell.ln_ih, &cell.ln_hh, &cell.ln_c] {
            ln.weight.update(|w| w.mapv_inplace(|_| rng.uniform_in(0.5, 1.5)));
            ln.bias.update(|b| b.mapv_inplace(|_| rng.uniform_in(-0.5, 0.5)));
        }
        let (x, h, c) = (
            random(4, 2, &mut rng),
            random(4, 3, &mut rng),
            random(4, 3, &mut rng),
        );
        let tape = Tape::new();
        let v = |a: &Array2<f64>| tape.constant(a.clone().into_dyn());
        let (h1, c1) = cell.step(&cell.project(&v(&x))?, &(v(&h), v(&c)))?;

        let ln = |a: &Array2<f64>, l: &LayerNorm<f64>| layer_norm(a, &vec(&l.weight), &vec(&l.bias));
        let gates = ln(&x.dot(&mat(&cell.weight_ih).t()), &cell.ln_ih)
            + ln(&h.dot(&mat(&cell.weight_hh).t()), &cell.ln_hh);
        let gate = |k: usize| gates.slice(s![.., 3 * k..3 * k + 3]).to_owned();
        let c_new = gate(1).mapv(sigmoid) * &c + gate(0).mapv(sigmoid) * gate(2).mapv(f64::tanh);
        let h_new = gate(3).mapv(sigmoid) * ln(&c_new, &cell.ln_c).mapv(f64::tanh);
        assert_close(c1.value(), &c_new);
        assert_close(h1.value(), &h_new);
        Ok(())
    }

    #[test]
    fn params_are_named_and_shaped() {
        let cell = LayerNormLstmCell::<f32>::new(2, 3, &mut Rng::seed(0));
        let got: Vec<(String, Vec<usize>)> = cell.params().into_iter().map(|(n, p)| (n, p.shape())).collect();
        let want = [
            ("weight_ih", vec![12, 2]),
            ("weight_hh", vec![12, 3]),
            ("ln_ih_weight", vec![12]),
            ("ln_ih_bias", vec![12]),
            ("ln_hh_weight", vec![12]),
            ("ln_hh_bias", vec![12]),
            ("ln_c_weight", vec![3]),
            ("ln_c_bias", vec![3]),
        ];
        assert_eq!(got, want.map(|(n, s)| (n.to_string(), s)));
    }
}
