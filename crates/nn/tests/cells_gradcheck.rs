//! Gradients of every cell, first and second order, proven by central differences through the
//! full generic layer: 2 layers, bidirectional, ragged lengths, initial states as inputs. With
//! respect to the input, the initial states and every parameter. Tiny sizes, f64.

use eddy_nn::{Cell, LayerNormLstmCell, MinGruCell, Module, PeepholeLstmCell, Recurrent, RecurrentConfig};
use eddy_ops::prelude::*;
use ndarray::ArrayD;

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

/// Checks `layer`'s gradients with respect to `x`, (optionally) the initial states and all
/// parameters: gradcheck element by element; gradgradcheck element by element with respect to
/// the inputs, and along a random direction (`vᵀJu`, which a wrong element cannot escape) for
/// the parameters too, which keeps the suite fast.
fn check<C: Cell<f64>>(layer: &Recurrent<f64, C>, with_initial: bool, seed: u64) -> Result<()> {
    let mut rng = Rng::seed(seed);
    let mut inputs = vec![uniform(&[T, B, I], &mut rng)];
    if with_initial {
        let n = layer.config.num_layers * layer.directions();
        for size in layer.cells[0].state_sizes() {
            inputs.push(uniform(&[n, B, size], &mut rng));
        }
    }
    let f = |_: &Tape<f64>, xs: &[Var<f64>]| run(layer, xs, with_initial);
    let opts = GradcheckOptions {
        seed,
        ..GradcheckOptions::default()
    };
    gradcheck(f, &inputs, &opts.clone().params(layer.param_list()))?;
    gradgradcheck(f, &inputs, &opts)?;
    gradgradcheck(f, &inputs, &opts.params(layer.param_list()).fast())
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
