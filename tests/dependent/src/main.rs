//! The seed's model (two stacked LSTM layers and a dense head on a windowed series) trained
//! for a few epochs by a crate that depends on eddy as any user's would. Prints the kernel level
//! eddy chose at run time and the losses; fails unless the validation loss went down. Then a
//! cell of its own, written with `#[derive(Module)]` through the facade (this crate depends on
//! `eddy` only, so the derive's generated paths are `::eddy::nn::…`), trained on ragged
//! sequences with `fit_sequences`.

use eddy::nn::data::{window, Targets, Window};
use eddy::nn::fit::FitOptions;
use eddy::nn::ragged::{Bucketing, RaggedOptions};
use eddy::nn::sequential::{dense, lstm, recurrent, Loss, Optim, Sequential};
use eddy::nn::{init, Cell, Module};
use eddy::ops::kernels;
use eddy::ops::VarExt;
use eddy::tape::{Float, Param, Rng, Var};

/// minGRU: `z = σ(W_z x + b_z)`, `h̃ = W_h x + b_h`, `h' = h + z ⊙ (h̃ − h)`.
#[derive(Clone, Module)]
struct MinGru<F: Float> {
    #[cell(input = 1, state = 0 / 2)]
    weight: Param<F>, // [2H, I]
    bias: Param<F>, // [2H]
}

impl<F: Float> Cell<F> for MinGru<F> {
    type State = Var<F>;
    fn project(&self, x: &Var<F>) -> eddy::tape::Result<Var<F>> {
        x.linear(&x.tape().param(&self.weight), Some(&x.tape().param(&self.bias)))
    }
    fn step(&self, zh: &Var<F>, h: &Var<F>) -> eddy::tape::Result<Var<F>> {
        let [z, candidate]: [Var<F>; 2] = zh.chunk(2, 1)?.try_into().expect("two chunks");
        h + (z.sigmoid()? * (candidate - h)?)?
    }
}

fn min_gru(i: usize, h: usize, rng: &mut Rng) -> MinGru<f32> {
    let mut p = |name: &str, shape: &[usize]| Param::new(name, init::pytorch_default(shape, i, rng));
    let (weight, bias) = (p("weight", &[2 * h, i]), p("bias", &[2 * h]));
    MinGru { weight, bias }
}

/// A derived cell of this crate in a `Sequential`, trained on sequences of 4 to 19 steps
/// (the target: each sequence's mean); fails unless the loss went down.
fn ragged_user_cell(rng: &mut Rng) -> Result<(), Box<dyn std::error::Error>> {
    let seqs: Vec<ndarray::ArrayD<f32>> = (0..96)
        .map(|i| ndarray::ArrayD::from_shape_fn(vec![4 + i % 16, 1], |_| rng.uniform_in(-1.0, 1.0) as f32))
        .collect();
    let y: Vec<ndarray::ArrayD<f32>> = seqs
        .iter()
        .map(|s| ndarray::ArrayD::from_elem(vec![1], s.mean().unwrap_or(0.0)))
        .collect();
    let mut model = Sequential::new()
        .add(recurrent(|i, rng| min_gru(i, 16, rng)).bidirectional(true))
        .add(dense(1))
        .build::<f32>(1, rng)?;
    println!("derived cell: {} parameters, first {:?}", model.params().len(), model.params()[0].0);
    model.compile(Optim::adam(0.02), Loss::Mse)?;
    let options = FitOptions {
        epochs: 6,
        batch_size: 16,
        ..FitOptions::default()
    };
    let ragged = RaggedOptions {
        bucketing: Some(Bucketing::default()),
        ..RaggedOptions::default()
    };
    let history = model.fit_sequences(&seqs, &y, options, ragged)?;
    println!("ragged loss {:?}", history.loss);
    let (first, last) = (history.loss[0], history.loss[history.loss.len() - 1]);
    if !(last < first) {
        return Err(format!("the ragged loss did not go down: {first} -> {last}").into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let level = kernels::try_level()?;
    println!(
        "kernel level: {level} (the CPU supports up to {})",
        kernels::detected()
    );
    let mut rng = Rng::seed(0);
    let series = ndarray::Array1::from_shape_fn(800, |t| (t as f32 * 0.2).sin() + 0.05 * rng.normal() as f32)
        .into_dyn();
    let w = Window {
        input_len: 24,
        horizon: 1,
        targets: Targets::Sequence,
    };
    let (x, y) = window(&series, &w)?;
    let mut model = Sequential::new()
        .add(lstm(32).return_sequences(true))
        .add(lstm(32).return_sequences(true))
        .add(dense(1))
        .build::<f32>(1, &mut rng)?;
    model.compile(Optim::adam(0.01), Loss::Mse)?;
    let history = model.fit(
        &x,
        &y,
        FitOptions {
            epochs: 4,
            batch_size: 32,
            validation_split: 0.2,
            ..FitOptions::default()
        },
    )?;
    println!("loss {:?}\nval_loss {:?}", history.loss, history.val_loss);
    let (first, last) = (history.val_loss[0], history.val_loss[history.val_loss.len() - 1]);
    if !(last < first) {
        return Err(format!("the validation loss did not go down: {first} -> {last}").into());
    }
    ragged_user_cell(&mut rng)?;
    println!("ok: trained through eddy as a plain dependency");
    Ok(())
}
