//! The seed's model (two stacked LSTM layers and a dense head on a windowed series) trained
//! for a few epochs by a crate that depends on eddy as any user's would. Prints the kernel level
//! eddy chose at run time and the losses; fails unless the validation loss went down.

use eddy::nn::data::{window, Targets, Window};
use eddy::nn::fit::FitOptions;
use eddy::nn::sequential::{dense, lstm, Loss, Optim, Sequential};
use eddy::ops::kernels;
use eddy::tape::Rng;

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
    println!("ok: trained through eddy as a plain dependency");
    Ok(())
}
