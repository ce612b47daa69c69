//! The seed's Keras program, made real: LSTM(·, return_sequences) → LSTM(·, return_sequences) →
//! Dense(1), Adam(0.01), MSE, `fit` — on a noisy sine, windowed, it beats the naive forecast.

use eddy_nn::data::{split, window, Scaler, Targets, Window};
use eddy_nn::fit::FitOptions;
use eddy_nn::sequential::{dense, lstm, Loss, Optim, Sequential};
use eddy_tape::Rng;
use ndarray::{ArrayD, Axis};

fn noisy_sine(n: usize, period: f64, noise: f64, rng: &mut Rng) -> ArrayD<f32> {
    ArrayD::from_shape_fn(vec![n], |ix| {
        let t = ix[0] as f64;
        ((2.0 * std::f64::consts::PI * t / period).sin() + noise * rng.normal()) as f32
    })
}

#[test]
fn the_seed_model_beats_the_persistence_baseline() {
    let mut rng = Rng::seed(2024);
    let series = noisy_sine(500, 25.0, 0.1, &mut rng);
    let (train, val, _) = split(&series, 0.8, 0.2).unwrap();
    let scaler = Scaler::min_max(&train).unwrap();
    let w = Window {
        input_len: 16,
        horizon: 1,
        targets: Targets::Sequence,
    };
    let (x, y) = window(&scaler.transform(&train).unwrap(), &w).unwrap();
    let (vx, vy) = window(&scaler.transform(&val).unwrap(), &w).unwrap();

    // model = Sequential(); model.add(LSTM(..., return_sequences=True)) x2; model.add(Dense(1))
    let mut model = Sequential::new()
        .add(lstm(16).return_sequences(true))
        .add(lstm(16).return_sequences(true))
        .add(dense(1))
        .build::<f32>(1, &mut rng)
        .unwrap();
    // model.compile(optimizer=Adam(lr=0.01), loss='mse')
    model.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    // model.fit(X_train, y_train, epochs=..., batch_size=32)
    let history = model
        .fit(
            &x,
            &y,
            FitOptions {
                epochs: 25,
                batch_size: 32,
                validation_data: Some((&vx, &vy)),
                progress: false,
                ..FitOptions::default()
            },
        )
        .unwrap();

    // The naive forecast: the next value is the current one.
    let last_input = vx.index_axis(Axis(2), 0);
    let target = vy.index_axis(Axis(2), 0);
    let persistence = (&last_input - &target)
        .mapv(|d| (d as f64).powi(2))
        .mean()
        .unwrap();
    let val_loss = *history.val_loss.last().unwrap();
    eprintln!(
        "loss {:?}\nval_loss {:?}\npersistence {persistence}",
        history.loss, history.val_loss
    );
    assert_eq!(history.loss.len(), 25);
    assert!(history.loss[24] < history.loss[0]);
    assert!(
        val_loss < 0.6 * persistence,
        "val_loss {val_loss} is not well below the persistence baseline {persistence}"
    );
    // predict agrees with evaluate.
    let pred = model.predict(&vx).unwrap();
    let mse = (&pred - &vy).mapv(|d| (d as f64).powi(2)).mean().unwrap();
    assert!(
        (mse - val_loss).abs() < 1e-5 * (1.0 + val_loss),
        "{mse} vs {val_loss}"
    );
}
