//! Custom cells are first-class: two cells eddy-nn does not ship, written here with only the
//! public API, get the whole generic layer (stacking, bidirectional, ragged lengths, states)
//! and pass gradcheck through the unrolled network.

use eddy_nn::{init, Cell, Module, Recurrent, RecurrentConfig};
use eddy_ops::prelude::*;
use ndarray::ArrayD;

// ---- IndRNN (Li et al. 2018): h' = relu(W x + b + u ⊙ h). 45 lines. ----

/// Independently recurrent cell: each unit sees only its own past, through `u`.
#[derive(Clone)]
struct IndRnnCell {
    weight: Param<f64>,
    bias: Param<f64>,
    recurrent: Param<f64>,
}

impl IndRnnCell {
    fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        IndRnnCell {
            weight: Param::new("weight", init::pytorch_default(&[hidden, input], hidden, rng)),
            bias: Param::new("bias", init::pytorch_default(&[hidden], hidden, rng)),
            recurrent: Param::new("recurrent", init::uniform(&[hidden], 1.0, rng)),
        }
    }
}

impl Module<f64> for IndRnnCell {
    fn params(&self) -> Vec<(String, Param<f64>)> {
        let names = ["weight", "bias", "recurrent"].map(String::from);
        names
            .into_iter()
            .zip([&self.weight, &self.bias, &self.recurrent].map(Param::clone))
            .collect()
    }
}

impl Cell<f64> for IndRnnCell {
    type State = Var<f64>;
    fn input_size(&self) -> usize {
        self.weight.shape()[1]
    }
    fn state_sizes(&self) -> Vec<usize> {
        vec![self.recurrent.shape()[0]]
    }
    /// `W x + b` for the whole sequence in one GEMM.
    fn project(&self, x: &Var<f64>) -> Result<Var<f64>> {
        let t = x.tape();
        x.linear(&t.param(&self.weight), Some(&t.param(&self.bias)))
    }
    fn step(&self, xw: &Var<f64>, h: &Var<f64>) -> Result<Var<f64>> {
        (xw + (h * &xw.tape().param(&self.recurrent))?)?.relu()
    }
}

// ---- CIFG LSTM (Greff et al. 2017): the forget gate is coupled, f = 1 − i. 54 lines. ----

/// An LSTM with coupled input and forget gates, gates i, g, o:
/// `c' = (1 − σ(i)) ⊙ c + σ(i) ⊙ tanh(g)`, `h' = σ(o) ⊙ tanh(c')`.
#[derive(Clone)]
struct CifgCell {
    weight_ih: Param<f64>,
    weight_hh: Param<f64>,
    bias: Param<f64>,
}

impl CifgCell {
    fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        CifgCell {
            weight_ih: Param::new(
                "weight_ih",
                init::pytorch_default(&[3 * hidden, input], hidden, rng),
            ),
            weight_hh: Param::new(
                "weight_hh",
                init::pytorch_default(&[3 * hidden, hidden], hidden, rng),
            ),
            bias: Param::new("bias", init::pytorch_default(&[3 * hidden], hidden, rng)),
        }
    }
}

impl Module<f64> for CifgCell {
    fn params(&self) -> Vec<(String, Param<f64>)> {
        let ps = [&self.weight_ih, &self.weight_hh, &self.bias];
        ps.iter().map(|p| (p.name().to_string(), (*p).clone())).collect()
    }
}

impl Cell<f64> for CifgCell {
    type State = (Var<f64>, Var<f64>);
    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }
    fn state_sizes(&self) -> Vec<usize> {
        let h = self.weight_hh.shape()[1];
        vec![h, h]
    }
    fn project(&self, x: &Var<f64>) -> Result<Var<f64>> {
        let t = x.tape();
        x.linear(&t.param(&self.weight_ih), Some(&t.param(&self.bias)))
    }
    fn step(&self, xw: &Var<f64>, (h, c): &Self::State) -> Result<Self::State> {
        let gates = (xw + h.matmul_t(&xw.tape().param(&self.weight_hh))?)?;
        let [i, g, o]: [Var<f64>; 3] = gates.chunk(3, 1)?.try_into().expect("three chunks");
        let i = i.sigmoid()?;
        // c' = (1 − i) c + i g = c + i (g − c)
        let c = (c + (&i * (g.tanh()? - c)?)?)?;
        Ok(((o.sigmoid()? * c.tanh()?)?, c))
    }
}

// ---- The two through the full layer. ----

const LENGTHS: [usize; 2] = [2, 3];

fn layer<C: Cell<f64> + Clone + 'static>(make: impl FnMut(usize, usize, &mut Rng) -> C) -> Recurrent<f64, C> {
    RecurrentConfig::new(2, 3)
        .num_layers(2)
        .bidirectional(true)
        .build(make, &mut Rng::seed(1))
}

/// gradcheck of the output and final states with respect to the input and every parameter.
fn check<C: Cell<f64>>(layer: &Recurrent<f64, C>) -> Result<()> {
    let mut rng = Rng::seed(2);
    let x = ArrayD::from_shape_simple_fn(vec![3, 2, 2], || rng.uniform_in(-1.0, 1.0));
    let f = |_: &Tape<f64>, xs: &[Var<f64>]| -> Result<Var<f64>> {
        let out = layer.forward_with(&xs[0], None, Some(&LENGTHS), None)?;
        let parts = std::iter::once(&out.output)
            .chain(&out.states)
            .map(|v| v.reshape(&[v.value().len()]))
            .collect::<Result<Vec<_>>>()?;
        concat(&parts.iter().collect::<Vec<_>>(), 0)
    };
    gradcheck(f, &[x], &GradcheckOptions::default().params(layer.param_list()))
}

#[test]
fn ind_rnn_is_a_full_layer_with_right_gradients() -> Result<()> {
    let layer = layer(IndRnnCell::new);
    let names: Vec<String> = layer.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 12);
    assert_eq!(
        names[..4],
        ["weight_l0", "bias_l0", "recurrent_l0", "weight_l0_reverse"]
    );
    let tape = Tape::new();
    let out = layer.forward(&tape.input(ArrayD::zeros(vec![3, 2, 2])))?;
    assert_eq!(
        (out.output.shape(), out.h_n().shape()),
        (&[3, 2, 6][..], &[4, 2, 3][..])
    );
    check(&layer)
}

#[test]
fn cifg_lstm_is_a_full_layer_with_right_gradients() -> Result<()> {
    let layer = layer(CifgCell::new);
    let tape = Tape::new();
    let out = layer.forward(&tape.input(ArrayD::zeros(vec![3, 2, 2])))?;
    assert_eq!(out.states.len(), 2); // h_n and c_n
    assert_eq!(out.c_n().unwrap().shape(), &[4, 2, 3]);
    check(&layer)
}
