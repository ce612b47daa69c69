//! Gradients of every cell, first and second order, proven by central differences through the
//! full generic layer: 2 layers, bidirectional, ragged lengths, initial states as inputs. With
//! respect to the input, the initial states and every parameter. Tiny sizes, f64.

use eddy_nn::{
    Cell, LayerNormLstmCell, MinGruCell, MinLstmCell, MlstmCell, Module, Nonlinearity, PeepholeLstmCell,
    Recurrent, RecurrentConfig, RgLruCell, RnnCell, SlstmCell,
};
use eddy_ops::prelude::*;
use ndarray::ArrayD;
use std::rc::Rc;

const T: usize = 3;
const B: usize = 2;
const I: usize = 2;
const H: usize = 3;
const LENGTHS: [usize; B] = [3, 2];

fn config() -> RecurrentConfig {
    RecurrentConfig::new(I, H).num_layers(2).bidirectional(true)
}

fn uniform(shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(shape.to_vec(), || rng.uniform_in(-1.0, 1.0))
}

/// The output sequence and every final state, flattened into one vector.
fn run<C: Cell<f64>>(layer: &Recurrent<f64, C>, xs: &[Var<f64>], with_initial: bool) -> Result<Var<f64>> {
    let initial = with_initial.then(|| &xs[1..]);
    let out = layer.forward_with(&xs[0], initial, Some(&LENGTHS), None)?;
    let flat = std::iter::once(&out.output)
        .chain(&out.states)
        .map(|v| v.reshape(&[v.value().len()]))
        .collect::<Result<Vec<_>>>()?;
    concat(&flat.iter().collect::<Vec<_>>(), 0)
}

/// Draws initial state part `part` of shape `shape`.
type Draw = fn(usize, &[usize], &mut Rng) -> ArrayD<f64>;

fn any_state(_: usize, shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    uniform(shape, rng)
}

/// Checks `layer`'s gradients with respect to `x`, (optionally) the initial states and all
/// parameters: gradcheck element by element; gradgradcheck element by element with respect to
/// the inputs, and along a random direction (`vᵀJu`, which a wrong element cannot escape) for
/// the parameters too, which keeps the suite fast.
fn check<C: Cell<f64>>(layer: &Recurrent<f64, C>, with_initial: bool, seed: u64) -> Result<()> {
    check_from(layer, with_initial.then_some(any_state as Draw), seed)
}

/// [`check`] from initial states drawn by `initial` (`None`: the cell's zero state).
fn check_from<C: Cell<f64>>(layer: &Recurrent<f64, C>, initial: Option<Draw>, seed: u64) -> Result<()> {
    let mut rng = Rng::seed(seed);
    let mut inputs = vec![uniform(&[T, B, layer.config.input_size], &mut rng)];
    if let Some(draw) = initial {
        let n = layer.config.num_layers * layer.directions();
        for (part, size) in layer.cells[0].state_sizes().into_iter().enumerate() {
            inputs.push(draw(part, &[n, B, size], &mut rng));
        }
    }
    let with_initial = initial.is_some();
    let f = |_: &Tape<f64>, xs: &[Var<f64>]| run(layer, xs, with_initial);
    let opts = GradcheckOptions {
        seed,
        ..GradcheckOptions::default()
    };
    gradcheck(f, &inputs, &opts.clone().params(layer.param_list()))?;
    gradgradcheck(f, &inputs, &opts)?;
    gradgradcheck(f, &inputs, &opts.params(layer.param_list()).fast())
}

// ---- The built-in cells (PyTorch's). ----

#[test]
fn rnn_tanh() -> Result<()> {
    check(&config().rnn(Nonlinearity::Tanh, &mut Rng::seed(20)), true, 21)
}

/// An Elman relu cell that records the smallest `|pre-activation|` it sees, to prove the
/// gradcheck's points stay off relu's kink (the step `1e-6` cannot cross it).
#[derive(Clone)]
struct KinkWatch {
    cell: RnnCell<f64>,
    closest: Rc<std::cell::Cell<f64>>,
}

impl Module<f64> for KinkWatch {
    fn params(&self) -> Vec<(String, Param<f64>)> {
        self.cell.params()
    }
}

impl Cell<f64> for KinkWatch {
    type State = Var<f64>;
    fn input_size(&self) -> usize {
        self.cell.input_size()
    }
    fn state_sizes(&self) -> Vec<usize> {
        self.cell.state_sizes()
    }
    fn project(&self, x: &Var<f64>) -> Result<Var<f64>> {
        self.cell.project(x)
    }
    fn step(&self, xw: &Var<f64>, h: &Var<f64>) -> Result<Var<f64>> {
        let t = xw.tape();
        let (_, b) = self.cell.biases.as_ref().expect("biases");
        let pre = (xw + h.linear(&t.param(&self.cell.weight_hh), Some(&t.param(b)))?)?;
        let closest = pre.value().iter().fold(f64::INFINITY, |m, v| m.min(v.abs()));
        self.closest.set(self.closest.get().min(closest));
        self.cell.step(xw, h)
    }
}

#[test]
fn rnn_relu_away_from_the_kink() -> Result<()> {
    let closest = Rc::new(std::cell::Cell::new(f64::INFINITY));
    let make = |i, h, r: &mut Rng| KinkWatch {
        cell: RnnCell::new(i, h, Nonlinearity::Relu, true, r),
        closest: closest.clone(),
    };
    let layer = config().build(make, &mut Rng::seed(22));
    check(&layer, true, 23)?;
    // Every point evaluated (the unperturbed ones and those 1e-6 away) kept clear of 0.
    assert!(
        closest.get() > 1e-4,
        "a pre-activation came within {} of 0",
        closest.get()
    );
    Ok(())
}

#[test]
fn lstm() -> Result<()> {
    check(&config().lstm(&mut Rng::seed(24)), true, 25)
}

#[test]
fn lstm_with_projection() -> Result<()> {
    let layer = config().proj_size(2).lstm(&mut Rng::seed(26));
    assert_eq!(layer.cells[0].state_sizes(), [2, H]);
    check(&layer, true, 27)
}

#[test]
fn gru() -> Result<()> {
    check(&config().gru(&mut Rng::seed(28)), true, 29)
}

#[test]
fn built_ins_without_biases() -> Result<()> {
    check(&config().bias(false).lstm(&mut Rng::seed(30)), true, 31)?;
    check(&config().bias(false).gru(&mut Rng::seed(32)), true, 33)
}

// ---- The zoo: cells beyond PyTorch's. ----

#[test]
fn peephole_lstm() -> Result<()> {
    let layer = config().build(|i, h, r| PeepholeLstmCell::new(i, h, true, r), &mut Rng::seed(1));
    check(&layer, false, 10)?;
    check(&layer, true, 11)
}

#[test]
fn layer_norm_lstm() -> Result<()> {
    let layer = config().build(LayerNormLstmCell::new, &mut Rng::seed(2));
    // Move the gains and shifts off their initial ones and zeros so they are really tested.
    let mut rng = Rng::seed(3);
    for c in &layer.cells {
        for ln in [&c.ln_ih, &c.ln_hh, &c.ln_c] {
            ln.weight
                .update(|w| w.mapv_inplace(|v| v + 0.3 * rng.uniform_in(-1.0, 1.0)));
            ln.bias
                .update(|b| b.mapv_inplace(|v| v + 0.3 * rng.uniform_in(-1.0, 1.0)));
        }
    }
    check(&layer, false, 12)?;
    check(&layer, true, 13)
}

#[test]
fn min_gru() -> Result<()> {
    let layer = config().build(|i, h, r| MinGruCell::new(i, h, true, r), &mut Rng::seed(4));
    check(&layer, false, 14)?;
    check(&layer, true, 15)
}

// ---- The linear recurrences and xLSTM (issue 13). ----

/// A positive state, as the log-space modes need.
fn positive_state(_: usize, shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    uniform(shape, rng).mapv(|v| v.abs() + 0.2)
}

#[test]
fn min_lstm() -> Result<()> {
    let layer = config().build(|i, h, r| MinLstmCell::new(i, h, true, r), &mut Rng::seed(40));
    check(&layer, false, 41)?;
    check(&layer, true, 42)
}

#[test]
fn min_gru_and_min_lstm_in_log_space() -> Result<()> {
    let gru = config().build(
        |i, h, r| MinGruCell::new(i, h, true, r).log_space(true),
        &mut Rng::seed(43),
    );
    check(&gru, false, 44)?;
    check_from(&gru, Some(positive_state), 45)?;
    let lstm = config().build(
        |i, h, r| MinLstmCell::new(i, h, true, r).log_space(true),
        &mut Rng::seed(46),
    );
    check(&lstm, false, 47)?;
    check_from(&lstm, Some(positive_state), 48)
}

#[test]
fn rg_lru() -> Result<()> {
    // I = H: two layers one way, or one layer both ways.
    let stacked = RecurrentConfig::new(H, H)
        .num_layers(2)
        .try_build(RgLruCell::new, &mut Rng::seed(49))?;
    check(&stacked, false, 50)?;
    check(&stacked, true, 51)?;
    let bidirectional = RecurrentConfig::new(H, H)
        .bidirectional(true)
        .try_build(RgLruCell::new, &mut Rng::seed(52))?;
    check(&bidirectional, true, 53)
}

/// xLSTM's cells: hidden 4 in 2 heads.
fn xlstm_config() -> RecurrentConfig {
    RecurrentConfig::new(I, 4).num_layers(2).bidirectional(true)
}

#[test]
fn slstm() -> Result<()> {
    let layer = xlstm_config().try_build(|i, h, r| SlstmCell::new(i, h, 2, r), &mut Rng::seed(54))?;
    check(&layer, false, 55)?;
    // Any h, c and m; a positive normaliser n (part 2), so that c / n stays finite.
    let draw: Draw = |part, shape, rng| {
        let v = uniform(shape, rng);
        if part == 2 {
            v.mapv(|v| v.abs() + 0.5)
        } else {
            v
        }
    };
    check_from(&layer, Some(draw), 56)
}

#[test]
fn mlstm() -> Result<()> {
    let layer = xlstm_config().try_build(|i, h, r| MlstmCell::new(i, h, 2, r), &mut Rng::seed(57))?;
    check(&layer, false, 58)?;
    check(&layer, true, 59)
}

/// The parallel form, with respect to the input and every parameter, both directions.
#[test]
fn mlstm_parallel_form() -> Result<()> {
    let cell = MlstmCell::new(I, 4, 2, &mut Rng::seed(60))?;
    let x = uniform(&[4, B, I], &mut Rng::seed(61));
    for reverse in [false, true] {
        let f = |_: &Tape<f64>, xs: &[Var<f64>]| cell.parallel(&xs[0], reverse);
        let opts = GradcheckOptions {
            seed: 62,
            ..GradcheckOptions::default()
        };
        gradcheck(
            f,
            std::slice::from_ref(&x),
            &opts.clone().params(cell.param_list()),
        )?;
        gradgradcheck(
            f,
            std::slice::from_ref(&x),
            &opts.params(cell.param_list()).fast(),
        )?;
    }
    Ok(())
}
