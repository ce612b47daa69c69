//! `Model::fit`, `evaluate` and `predict`: options, history, and every error a user can reach.

use eddy_nn::fit::{CheckpointEvery, EarlyStopping, FitOptions, Monitor, OnNonFinite};
use eddy_nn::schedule::StepLr;
use eddy_nn::sequential::{dense, dropout, gru, lstm, simple_rnn, Loss, Metric, Model, Optim, Sequential};
use eddy_nn::Module;
use eddy_tape::{Error, Rng, Tape};
use ndarray::ArrayD;

/// `n` sequences of `t` steps, 2 features; the target is the sum of the last step's features.
fn data(n: usize, t: usize, seed: u64) -> (ArrayD<f64>, ArrayD<f64>) {
    let mut rng = Rng::seed(seed);
    let x = ArrayD::from_shape_fn(vec![n, t, 2], |_| rng.uniform_in(-1.0, 1.0));
    let y = ArrayD::from_shape_fn(vec![n, 1], |ix| x[[ix[0], t - 1, 0]] + x[[ix[0], t - 1, 1]]);
    (x, y)
}

fn model(seed: u64) -> Model<f64> {
    let mut rng = Rng::seed(seed);
    let mut m = Sequential::new()
        .add(gru(6).return_sequences(true))
        .add(dropout(0.1))
        .add(lstm(5))
        .add(dense(1))
        .build::<f64>(2, &mut rng)
        .unwrap();
    m.compile(Optim::adam(0.02), Loss::Mse).unwrap();
    m
}

fn quiet<'a>() -> FitOptions<'a, f64> {
    FitOptions {
        progress: false,
        batch_size: 8,
        ..FitOptions::default()
    }
}

#[test]
fn names_shapes_and_layer_kinds() {
    let m = model(0);
    let names: Vec<String> = m.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "layers.0.weight_ih_l0");
    assert_eq!(names[4], "layers.2.weight_ih_l0");
    assert_eq!(names[8..], ["layers.3.weight", "layers.3.bias"]);
    assert!(!m.returns_sequences());
    let (x, _) = data(3, 4, 1);
    assert_eq!(m.predict(&x).unwrap().shape(), &[3, 1]);

    let mut rng = Rng::seed(1);
    let rnn = Sequential::new()
        .add(simple_rnn(4).return_sequences(true).bidirectional(true))
        .add(dense(3))
        .build::<f64>(2, &mut rng)
        .unwrap();
    assert!(rnn.returns_sequences());
    assert_eq!(rnn.predict(&x).unwrap().shape(), &[3, 4, 3]);
    assert_eq!(rnn.params()[4].0, "layers.0.weight_ih_l0_reverse");
}

#[test]
fn build_errors_are_clear() {
    let mut rng = Rng::seed(0);
    let e = Sequential::new().build::<f32>(2, &mut rng).unwrap_err();
    assert!(e.to_string().contains("no layers"), "{e}");
    let e = Sequential::new()
        .add(lstm(4))
        .add(lstm(4))
        .build::<f32>(2, &mut rng)
        .unwrap_err();
    assert!(
        e.to_string().contains("layer 1") && e.to_string().contains("return_sequences"),
        "{e}"
    );
    let e = Sequential::new()
        .add(dense(0))
        .build::<f32>(2, &mut rng)
        .unwrap_err();
    assert!(e.to_string().contains("units"), "{e}");
    let e = Sequential::new()
        .add(dropout(1.5))
        .build::<f32>(2, &mut rng)
        .unwrap_err();
    assert!(e.to_string().contains("dropout"), "{e}");
    assert!(Sequential::new().add(dense(1)).build::<f32>(0, &mut rng).is_err());
}

#[test]
fn fit_trains_and_records_history_with_validation_split() {
    let (x, y) = data(64, 5, 2);
    let mut m = model(3);
    let h = m
        .fit(
            &x,
            &y,
            FitOptions {
                epochs: 8,
                validation_split: 0.25,
                ..quiet()
            },
        )
        .unwrap();
    assert_eq!(h.epoch, (1..=8).collect::<Vec<_>>());
    assert_eq!(h.loss.len(), 8);
    assert_eq!(h.val_loss.len(), 8);
    assert_eq!(h.metrics["mae"].len(), 8);
    assert_eq!(h.metrics["val_mae"].len(), 8);
    assert!(h.loss[7] < 0.5 * h.loss[0], "{:?}", h.loss);
    assert_eq!(m.epoch(), 8);
    // The validation part is the last quarter, as Keras: evaluate on it gives val_loss.
    let (vx, vy) = (
        x.slice_axis(ndarray::Axis(0), (48..).into()).to_owned(),
        y.slice_axis(ndarray::Axis(0), (48..).into()).to_owned(),
    );
    let ev = m.evaluate(&vx, &vy).unwrap();
    assert_eq!(ev.loss, h.val_loss[7]);
    assert_eq!(ev.metrics["mae"], h.metrics["val_mae"][7]);
    // Another fit continues the epoch count.
    let h2 = m.fit(&x, &y, FitOptions { epochs: 2, ..quiet() }).unwrap();
    assert_eq!(h2.epoch, [9, 10]);
    assert!(h2.val_loss.is_empty());
}

#[test]
fn metrics_and_schedule() {
    let (x, y) = data(16, 3, 4);
    let mut m = model(5);
    m.set_metrics(&[Metric::Mse, Metric::Rmse]).unwrap();
    m.set_schedule(|opt| StepLr::new(opt, 1, 0.5)).unwrap();
    let h = m.fit(&x, &y, FitOptions { epochs: 3, ..quiet() }).unwrap();
    assert_eq!(h.lr, [0.02, 0.01, 0.005]);
    assert_eq!(m.optimizer().unwrap().lr(), 0.0025);
    for e in 0..3 {
        assert!((h.metrics["rmse"][e] - h.metrics["mse"][e].sqrt()).abs() < 1e-12);
        assert!((h.metrics["mse"][e] - h.loss[e]).abs() < 1e-9 * h.loss[e]);
    }
    assert!(!h.metrics.contains_key("mae"));
}

#[test]
fn early_stopping_stops_and_restores_the_best_weights() {
    let (x, y) = data(32, 3, 6);
    let (vx, vy) = data(16, 3, 7);
    let mut m = model(8);
    // A learning rate this large makes the validation loss bounce.
    m.compile(Optim::sgd(3.0), Loss::Mse).unwrap();
    let snapshot = |m: &Model<f64>| -> Vec<ArrayD<f64>> {
        m.param_list().iter().map(|p| (*p.value()).clone()).collect()
    };
    let mut best_params = None;
    let mut best = f64::INFINITY;
    // Record by hand what the best epoch's parameters are, one epoch at a time, on a twin.
    let mut twin = model(8);
    twin.compile(Optim::sgd(3.0), Loss::Mse).unwrap();
    let mut seen = Vec::new();
    for _ in 0..30 {
        let h = twin
            .fit(
                &x,
                &y,
                FitOptions {
                    epochs: 1,
                    validation_data: Some((&vx, &vy)),
                    ..quiet()
                },
            )
            .unwrap();
        seen.push(h.val_loss[0]);
        if h.val_loss[0] < best {
            best = h.val_loss[0];
            best_params = Some(snapshot(&twin));
        }
    }
    let es = EarlyStopping {
        monitor: Monitor::ValLoss,
        patience: 2,
        min_delta: 0.0,
        restore_best_weights: true,
    };
    let h = m
        .fit(
            &x,
            &y,
            FitOptions {
                epochs: 30,
                validation_data: Some((&vx, &vy)),
                early_stopping: Some(es),
                ..quiet()
            },
        )
        .unwrap();
    assert_eq!(
        h.val_loss[..],
        seen[..h.val_loss.len()],
        "the twin ran the same epochs"
    );
    let stopped = h.stopped_epoch.expect("stopped early");
    let best_epoch = h.best_epoch.unwrap();
    assert_eq!(stopped, best_epoch + 2);
    let best_loss = h.val_loss[best_epoch - 1];
    assert!(h.val_loss.iter().all(|&v| v >= best_loss));
    // The restored weights give the best validation loss again.
    assert_eq!(m.evaluate(&vx, &vy).unwrap().loss, best_loss);
    if best_loss == best {
        assert_eq!(snapshot(&m), best_params.unwrap());
    }
}

#[test]
fn early_stopping_on_val_loss_needs_validation_data() {
    let (x, y) = data(8, 3, 0);
    let mut m = model(0);
    let e = m
        .fit(
            &x,
            &y,
            FitOptions {
                early_stopping: Some(EarlyStopping::default()),
                ..quiet()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("no validation data"), "{e}");
}

#[test]
fn data_errors_are_clear() {
    let (x, y) = data(8, 3, 0);
    let mut m = model(0);
    let msg = |e: Error| e.to_string();
    let empty = ArrayD::<f64>::zeros(vec![0, 3, 2]);
    let empty_y = ArrayD::<f64>::zeros(vec![0, 1]);
    assert!(msg(m.fit(&empty, &empty_y, quiet()).unwrap_err()).contains("empty"));
    let e = m
        .fit(
            &x,
            &y,
            FitOptions {
                batch_size: 0,
                ..quiet()
            },
        )
        .unwrap_err();
    assert!(msg(e).contains("batch_size"));
    let e = m
        .fit(
            &x,
            &y,
            FitOptions {
                micro_batch_size: Some(0),
                ..quiet()
            },
        )
        .unwrap_err();
    assert!(msg(e).contains("micro_batch_size"));
    let short_y = ArrayD::<f64>::zeros(vec![7, 1]);
    assert!(msg(m.fit(&x, &short_y, quiet()).unwrap_err()).contains("same number of rows"));
    let seq_y = ArrayD::<f64>::zeros(vec![8, 3, 1]);
    assert!(msg(m.fit(&x, &seq_y, quiet()).unwrap_err()).contains("does not fit the model"));
    let wrong_f = ArrayD::<f64>::zeros(vec![8, 3, 5]);
    assert!(msg(m.fit(&wrong_f, &y, quiet()).unwrap_err()).contains("F = 2"));
    assert!(m.predict(&wrong_f).is_err());
    assert!(m.evaluate(&x, &short_y).is_err());
    for split in [1.0, -0.1, 0.95] {
        let e = m
            .fit(
                &x,
                &y,
                FitOptions {
                    validation_split: split,
                    ..quiet()
                },
            )
            .unwrap_err();
        assert!(msg(e).contains("validation_split"));
    }
    let (vx, _) = data(4, 3, 1);
    let e = m
        .fit(
            &x,
            &y,
            FitOptions {
                validation_data: Some((&vx, &y)),
                ..quiet()
            },
        )
        .unwrap_err();
    assert!(msg(e).contains("validation_data"));
    let mut rng = Rng::seed(0);
    let mut uncompiled = Sequential::new().add(lstm(2)).build::<f64>(2, &mut rng).unwrap();
    assert!(msg(uncompiled.fit(&x, &y, quiet()).unwrap_err()).contains("not compiled"));
    assert!(uncompiled.evaluate(&x, &y).is_err());
    assert_eq!(m.epoch(), 0, "nothing ran");
}

#[test]
fn a_non_finite_loss_stops_with_the_epoch_and_batch_or_skips_the_step() {
    let (x, mut y) = data(24, 3, 0);
    y[[17, 0]] = f64::NAN; // row 17: in batch 3 of 8 rows without shuffling.
    let mut m = model(1);
    let before: Vec<ArrayD<f64>> = m.param_list().iter().map(|p| (*p.value()).clone()).collect();
    let e = m
        .fit(
            &x,
            &y,
            FitOptions {
                shuffle: false,
                epochs: 2,
                ..quiet()
            },
        )
        .unwrap_err();
    assert!(
        e.to_string().starts_with("epoch 1 batch 3: fit: the loss is NaN"),
        "{e}"
    );
    assert_ne!(
        before,
        m.param_list()
            .iter()
            .map(|p| (*p.value()).clone())
            .collect::<Vec<_>>()
    );

    let mut m = model(1);
    let h = m
        .fit(
            &x,
            &y,
            FitOptions {
                shuffle: false,
                epochs: 2,
                on_non_finite: OnNonFinite::SkipStep,
                ..quiet()
            },
        )
        .unwrap();
    assert_eq!(h.skipped_steps, 2);
    assert!(h.loss.iter().all(|l| l.is_finite()));
    assert!(m
        .param_list()
        .iter()
        .all(|p| p.value().iter().all(|v| v.is_finite())));
}

#[test]
fn micro_batches_give_the_full_batch_gradient() {
    let (x, y) = data(24, 4, 9);
    let run = |micro: Option<usize>| {
        let mut rng = Rng::seed(3);
        let mut m = Sequential::new()
            .add(lstm(4).return_sequences(true))
            .add(gru(3))
            .add(dense(1))
            .build::<f64>(2, &mut rng)
            .unwrap();
        m.compile(Optim::sgd(0.1), Loss::Mse).unwrap();
        m.fit(
            &x,
            &y,
            FitOptions {
                epochs: 2,
                batch_size: 12,
                micro_batch_size: micro,
                ..quiet()
            },
        )
        .unwrap();
        m.param_list()
            .iter()
            .map(|p| (*p.value()).clone())
            .collect::<Vec<_>>()
    };
    let full = run(None);
    for micro in [5, 4] {
        for (a, b) in full.iter().zip(run(Some(micro))) {
            let d = (a - &b).mapv(f64::abs).fold(0.0f64, |m, &v| m.max(v));
            assert!(d < 1e-12, "micro {micro}: {d}");
        }
    }
}

#[test]
fn clipping_bounds_the_step() {
    let (x, y) = data(8, 3, 9);
    let mut rng = Rng::seed(3);
    let mut m = Sequential::new()
        .add(simple_rnn(3))
        .add(dense(1))
        .build::<f64>(2, &mut rng)
        .unwrap();
    m.compile(Optim::sgd(1.0), Loss::Mse).unwrap();
    let before: Vec<ArrayD<f64>> = m.param_list().iter().map(|p| (*p.value()).clone()).collect();
    m.fit(
        &x,
        &y,
        FitOptions {
            batch_size: 8,
            clip_grad_norm: Some(1e-3),
            ..quiet()
        },
    )
    .unwrap();
    let moved: f64 = m
        .param_list()
        .iter()
        .zip(&before)
        .map(|(p, b)| (&*p.value() - b).mapv(|v| v * v).sum())
        .sum::<f64>()
        .sqrt();
    assert!(moved <= 1e-3 + 1e-12 && moved > 0.0, "{moved}");
    let e = m
        .fit(
            &x,
            &y,
            FitOptions {
                clip_grad_norm: Some(-1.0),
                ..quiet()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("max_norm"), "{e}");
}

#[test]
fn forward_with_lengths_and_masked_loss_on_a_padded_batch() {
    use eddy_nn::data::pad_sequences;
    let mut rng = Rng::seed(0);
    let m = Sequential::new()
        .add(lstm(4).return_sequences(true))
        .add(dense(1))
        .build::<f64>(2, &mut rng)
        .unwrap();
    let seqs: Vec<ArrayD<f64>> = [3usize, 5, 2]
        .iter()
        .map(|&t| ArrayD::from_shape_fn(vec![t, 2], |ix| (ix[0] + ix[1]) as f64 * 0.1))
        .collect();
    let p = pad_sequences(&seqs).unwrap();
    let tape = Tape::new();
    let out = m
        .forward(&tape.constant(p.x.clone()), Some(&p.lengths), &mut rng)
        .unwrap();
    assert_eq!(out.shape(), &[3, 5, 1]);
    // A sequence alone gives the same outputs as inside the padded batch.
    let alone = m
        .forward(
            &tape.constant(seqs[0].clone().insert_axis(ndarray::Axis(0))),
            None,
            &mut rng,
        )
        .unwrap();
    for t in 0..3 {
        assert!((alone.value()[[0, t, 0]] - out.value()[[0, t, 0]]).abs() < 1e-12);
    }
    let target = tape.constant(ArrayD::zeros(vec![3, 5, 1]));
    let loss = Loss::Mse.apply(&out, &target, Some(&p.mask)).unwrap();
    let by_hand: f64 = (0..3)
        .flat_map(|b| (0..p.lengths[b]).map(move |t| (b, t)))
        .map(|(b, t)| out.value()[[b, t, 0]].powi(2))
        .sum::<f64>()
        / 10.0;
    assert!((loss.item().unwrap() - by_hand).abs() < 1e-12);
}

#[test]
fn checkpoint_every_writes_files() {
    let dir = std::env::temp_dir().join(format!("eddy-fit-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (x, y) = data(8, 3, 0);
    let mut m = model(0);
    let path = dir.join("ckpt-{epoch}.safetensors");
    m.fit(
        &x,
        &y,
        FitOptions {
            epochs: 4,
            checkpoint: Some(CheckpointEvery { path, every: 2 }),
            ..quiet()
        },
    )
    .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["ckpt-2.safetensors", "ckpt-4.safetensors"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
