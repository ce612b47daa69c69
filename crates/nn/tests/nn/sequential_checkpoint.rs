//! Time-segment checkpointing through `Sequential` layer specs (`checkpoint_every(k)`,
//! `checkpoint_sqrt()`, `checkpoint(Checkpoint::…)`): `fit` trains the same parameters as
//! without it (to 1e-12 in f64) — the built-in LSTM and GRU and a user cell, stacked,
//! bidirectional, many-to-many and many-to-one; weights and training checkpoints saved from a
//! checkpointed model load into one with or without it and carry on identically; bad values
//! are clean errors.

use crate::support::Mgu;
use eddy_nn::sequential::{dense, gru, lstm, recurrent, LayerSpec, Loss, Model, Optim, Sequential};
use eddy_nn::{Checkpoint, FitOptions, Module};
use eddy_ops::prelude::*;
use ndarray::ArrayD;

const STEPS: usize = 20;

/// 16 sequences of 20 steps, 2 features, and a last-step target `[16, 1]`.
fn data() -> (ArrayD<f64>, ArrayD<f64>) {
    let mut rng = Rng::seed(9);
    let x = ArrayD::from_shape_fn(vec![16, STEPS, 2], |_| rng.uniform_in(-1.0, 1.0));
    let y = ArrayD::from_shape_fn(vec![16, 1], |i| x[[i[0], STEPS - 1, 0]] * 0.5 + x[[i[0], 3, 1]]);
    (x, y)
}

fn options<'a>(epochs: usize) -> FitOptions<'a, f64> {
    FitOptions {
        epochs,
        batch_size: 8,
        progress: false,
        ..FitOptions::default()
    }
}

/// The layers of the test model, each recurrent spec passed through `ckpt`: an LSTM returning
/// its sequence, a bidirectional user cell returning its sequence, a GRU returning its last step.
fn model(ckpt: impl Fn(LayerSpec<f64>) -> LayerSpec<f64>) -> Model<f64> {
    let mut m = Sequential::new()
        .add(ckpt(lstm(5).return_sequences(true)))
        .add(ckpt(
            recurrent(|input, rng| Mgu::new(input, 4, rng))
                .bidirectional(true)
                .return_sequences(true),
        ))
        .add(ckpt(gru(3)))
        .add(dense(1))
        .build::<f64>(2, &mut Rng::seed(1))
        .unwrap();
    m.compile(Optim::adam(0.02), Loss::Mse).unwrap();
    m
}

fn params(m: &Model<f64>) -> Vec<(String, Vec<f64>)> {
    m.params()
        .into_iter()
        .map(|(n, p)| (n, p.value().iter().copied().collect()))
        .collect()
}

fn assert_close(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)], what: &str) {
    assert_eq!(a.len(), b.len());
    for ((name, p), (other, q)) in a.iter().zip(b) {
        assert_eq!(name, other);
        let worst = p
            .iter()
            .zip(q)
            .map(|(u, v)| (u - v).abs() / v.abs().max(1.0))
            .fold(0.0, f64::max);
        assert!(worst <= 1e-12, "{what}: {name} differs by {worst:e}");
    }
}

/// What a comparison does to each recurrent spec.
type Policy = fn(LayerSpec<f64>) -> LayerSpec<f64>;

#[test]
fn fit_with_checkpointing_trains_the_same_parameters() -> Result<()> {
    let (x, y) = data();
    let mut plain = model(|s| s);
    let before = params(&plain);
    let plain_history = plain.fit(&x, &y, options(3))?;
    let want = params(&plain);
    assert_ne!(before, want, "the model trained");
    let policies: [(&str, Policy); 3] = [
        ("checkpoint_every(3)", |s| s.checkpoint_every(3)),
        ("checkpoint_sqrt()", |s| s.checkpoint_sqrt()),
        ("checkpoint(Every(7))", |s| s.checkpoint(Checkpoint::Every(7))),
    ];
    for (what, policy) in policies {
        let mut m = model(policy);
        let history = m.fit(&x, &y, options(3))?;
        assert_close(&params(&m), &want, what);
        for (l, r) in history.loss.iter().zip(&plain_history.loss) {
            assert!(
                (l - r).abs() <= 1e-12 * r.abs().max(1.0),
                "{what}: loss {l} vs {r}"
            );
        }
    }
    Ok(())
}

#[test]
fn saved_weights_and_checkpoints_load_with_or_without_checkpointing() -> Result<()> {
    let (x, y) = data();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut trained = model(|s| s.checkpoint_sqrt());
    trained.fit(&x, &y, options(2))?;
    trained.save_weights(dir.path().join("w.safetensors"))?;
    trained.save_checkpoint(dir.path().join("ckpt.safetensors"))?;

    // Weights: the same predictions from a model built with or without checkpointing.
    let want = trained.predict(&x)?;
    for (what, other) in [
        ("plain", model(|s| s)),
        ("every(4)", model(|s| s.checkpoint_every(4))),
    ] {
        other.load_weights(dir.path().join("w.safetensors"))?;
        assert_eq!(other.predict(&x)?, want, "{what}");
    }

    // A training checkpoint: the resumed model trains on as the original does.
    let mut resumed = model(|s| s.checkpoint_sqrt());
    resumed.load_checkpoint(dir.path().join("ckpt.safetensors"))?;
    trained.fit(&x, &y, options(1))?;
    resumed.fit(&x, &y, options(1))?;
    assert_eq!(params(&resumed), params(&trained));
    Ok(())
}

#[test]
fn segments_of_zero_steps_are_a_build_error_naming_the_layer() {
    let err = Sequential::<f64>::new()
        .add(lstm(4).checkpoint_every(0))
        .build::<f64>(2, &mut Rng::seed(0))
        .expect_err("k = 0")
        .to_string();
    assert!(
        err.contains("layer 0") && err.contains("checkpoint_every"),
        "{err}"
    );
}

#[test]
fn the_spec_shows_its_policy_and_other_specs_ignore_it() {
    let spec: LayerSpec<f64> = gru(3).checkpoint_sqrt();
    assert!(format!("{spec:?}").contains("checkpoint: Sqrt"), "{spec:?}");
    let model = Sequential::<f64>::new()
        .add(lstm(4))
        .add(dense(2).checkpoint_every(3))
        .build::<f64>(2, &mut Rng::seed(0))
        .unwrap();
    assert_eq!(model.output_features(), 2);
}
