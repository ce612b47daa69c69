//! Feed-forward layers: [`Linear`], [`Embedding`], [`Dropout`], [`LayerNorm`].

use crate::init;
use crate::Module;
use eddy_ops::VarExt;
use eddy_tape::{Error, Float, Param, Result, Rng, Var};
use ndarray::ArrayD;

/// `y = x · Wᵀ + b` on the last axis of any-rank `x`; on a sequence `[T, B, H]` it is the
/// seed's per-time-step output layer `y_t = W_hy h_t + b_y` (Keras's `Dense` on sequences).
///
/// Parameters (PyTorch's names and init): `weight` `[out, in]` and `bias` `[out]`, both
/// `U(-1/√in, 1/√in)`.
#[derive(Debug, Clone)]
pub struct Linear<F: Float = f32> {
    /// `[out, in]`.
    pub weight: Param<F>,
    /// `[out]`; `None` without a bias.
    pub bias: Option<Param<F>>,
}

impl<F: Float> Linear<F> {
    /// A layer from `input` to `output` features, with a bias.
    pub fn new(input: usize, output: usize, rng: &mut Rng) -> Linear<F> {
        Linear {
            weight: Param::new("weight", init::pytorch_default(&[output, input], input, rng)),
            bias: Some(Param::new("bias", init::pytorch_default(&[output], input, rng))),
        }
    }

    /// The same without a bias.
    pub fn without_bias(input: usize, output: usize, rng: &mut Rng) -> Linear<F> {
        Linear {
            bias: None,
            ..Linear::new(input, output, rng)
        }
    }

    /// Input features.
    pub fn input_size(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Output features.
    pub fn output_size(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Applies the layer to `x` (`[..., in]` → `[..., out]`).
    ///
    /// # Errors
    /// [`Error::MatmulInner`] (with context `linear`) if the last axis of `x` is not `in`.
    pub fn forward(&self, x: &Var<F>) -> Result<Var<F>> {
        let t = x.tape();
        let b = self.bias.as_ref().map(|b| t.param(b));
        x.linear(&t.param(&self.weight), b.as_ref())
            .map_err(|e| e.context("linear layer"))
    }
}

impl<F: Float> Module<F> for Linear<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        let mut out = vec![("weight".to_string(), self.weight.clone())];
        out.extend(self.bias.iter().map(|b| ("bias".to_string(), b.clone())));
        out
    }
}

/// A lookup table: row `i` of `weight` `[num, dim]` for each index `i` (init `N(0, 1)`, as PyTorch).
#[derive(Debug, Clone)]
pub struct Embedding<F: Float = f32> {
    /// The table `[num, dim]`.
    pub weight: Param<F>,
}

impl<F: Float> Embedding<F> {
    /// `num` embeddings of size `dim`.
    pub fn new(num: usize, dim: usize, rng: &mut Rng) -> Embedding<F> {
        Embedding {
            weight: Param::new("weight", init::normal(&[num, dim], 1.0, rng)),
        }
    }

    /// Looks up `indices` (any shape `s`, row-major) and returns `[s..., dim]`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an index out of range; [`Error::Shape`] if `shape` does not hold
    /// `indices.len()` elements.
    pub fn forward(&self, tape: &eddy_tape::Tape<F>, indices: &[usize], shape: &[usize]) -> Result<Var<F>> {
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if count != Some(indices.len()) {
            return Err(Error::shape(
                "embedding",
                &[shape],
                format!("does not hold {} indices", indices.len()),
            ));
        }
        let rows = tape
            .param(&self.weight)
            .index_select(0, indices)
            .map_err(|e| e.context("embedding"))?;
        let mut out = shape.to_vec();
        out.push(self.weight.shape()[1]);
        rows.reshape(&out)
    }
}

impl<F: Float> Module<F> for Embedding<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        vec![("weight".into(), self.weight.clone())]
    }
}

/// Inverted dropout with probability `p` in training mode; the identity in evaluation mode.
#[derive(Debug, Clone)]
pub struct Dropout {
    /// The probability of zeroing an element, in `[0, 1)`.
    pub p: f64,
    /// Training mode (dropout on) or evaluation mode (the identity).
    pub training: bool,
}

impl Dropout {
    /// Dropout with probability `p`, in training mode.
    ///
    /// # Errors
    /// [`Error::Invalid`] unless `0 ≤ p < 1`.
    pub fn new(p: f64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid("dropout", format!("p must be in [0, 1), got {p}")));
        }
        Ok(Dropout { p, training: true })
    }

    /// Applies it, drawing the mask from `rng`.
    pub fn forward<F: Float>(&self, x: &Var<F>, rng: &mut Rng) -> Result<Var<F>> {
        x.dropout(self.p, self.training, rng)
    }
}

impl<F: Float> Module<F> for Dropout {
    fn params(&self) -> Vec<(String, Param<F>)> {
        Vec::new()
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

/// Layer normalisation over the last axis: `(x − mean) / √(var + eps) · weight + bias`, with
/// the biased variance, as PyTorch. `weight` starts at ones and `bias` at zeros.
#[derive(Debug, Clone)]
pub struct LayerNorm<F: Float = f32> {
    /// The gain `[D]`, starting at ones.
    pub weight: Param<F>,
    /// The shift `[D]`, starting at zeros.
    pub bias: Param<F>,
    /// Added to the variance (PyTorch's default `1e-5`).
    pub eps: f64,
}

impl<F: Float> LayerNorm<F> {
    /// Normalises a last axis of size `dim`, with `eps = 1e-5`.
    pub fn new(dim: usize) -> LayerNorm<F> {
        LayerNorm {
            weight: Param::new("weight", ArrayD::from_elem(vec![dim], F::one())),
            bias: Param::new("bias", ArrayD::zeros(vec![dim])),
            eps: 1e-5,
        }
    }

    /// Applies it to `x` (`[..., dim]`).
    ///
    /// # Errors
    /// [`Error::Shape`] if the last axis of `x` is not `dim`.
    pub fn forward(&self, x: &Var<F>) -> Result<Var<F>> {
        let dim = self.weight.shape()[0];
        if x.shape().last() != Some(&dim) {
            return Err(Error::shape(
                "layer_norm",
                &[x.shape(), &[dim]],
                "the last axis must be the normalised size",
            ));
        }
        let t = x.tape();
        let centered = (x - &x.mean(-1, true)?)?;
        let var = centered.powi(2)?.mean(-1, true)?;
        let normed = (&centered / var.shift(F::of(self.eps))?.sqrt()?)?;
        (normed * &t.param(&self.weight)) + &t.param(&self.bias)
    }
}

impl<F: Float> Module<F> for LayerNorm<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        vec![
            ("weight".into(), self.weight.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_tape::{gradcheck, GradcheckOptions, Tape};
    use ndarray::arr2;

    #[test]
    fn linear_works_on_sequences_and_names_its_params() {
        let mut rng = Rng::seed(0);
        let l = Linear::<f64>::new(3, 2, &mut rng);
        let t = Tape::new();
        let x = t.input(ArrayD::from_elem(vec![4, 5, 3], 0.5));
        assert_eq!(l.forward(&x).unwrap().shape(), &[4, 5, 2]);
        let names: Vec<String> = l.params().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["weight", "bias"]);
        assert_eq!(l.num_params(), 8);
        let e = l.forward(&t.input(ArrayD::zeros(vec![2, 4]))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linear layer: linear: inner dimensions differ: [2, 4] · [2, 3]"
        );
    }

    #[test]
    fn layer_norm_matches_the_formula_and_passes_gradcheck() {
        let ln = LayerNorm::<f64>::new(3);
        let t = Tape::new();
        let x = t.input(arr2(&[[1.0, 2.0, 4.0], [0.0, -1.0, 1.0]]).into_dyn());
        let y = ln.forward(&x).unwrap();
        let row = [1.0, 2.0, 4.0];
        let mean = 7.0 / 3.0;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 3.0;
        assert!((y.value()[[0, 0]] - (1.0 - mean) / (var + 1e-5f64).sqrt()).abs() < 1e-12);
        let opts = GradcheckOptions::default().params(ln.param_list());
        gradcheck(|_, x| ln.forward(&x[0]), &[x.value().clone()], &opts).unwrap();
    }

    #[test]
    fn embedding_looks_up_rows() {
        let mut rng = Rng::seed(0);
        let e = Embedding::<f32>::new(5, 2, &mut rng);
        let t = Tape::new();
        let y = e.forward(&t, &[4, 0, 4], &[3]).unwrap();
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(
            y.value().index_axis(ndarray::Axis(0), 0),
            e.weight.value().index_axis(ndarray::Axis(0), 4)
        );
        assert!(e.forward(&t, &[5], &[1]).is_err());
    }
}
