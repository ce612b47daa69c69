//! `Sequential` and `fit` take any cell (Keras' `RNN(cell)`) and any sequence module: a cell
//! defined here, with only the public API, trains with validation and early stopping, is saved
//! and loaded back to the same predictions, and resumes from a checkpoint bit for bit; the
//! built-in specs are that same path over the built-in cells.

use crate::support::{tmp_dir, Janet};
use eddy_nn::fit::{EarlyStopping, FitOptions, Monitor};
use eddy_nn::schedule::StepLr;
use eddy_nn::sequential::{
    dense, dropout, lstm, module, recurrent, try_recurrent, Loss, Model, Optim, Pass, SequenceLayer,
    Sequential,
};
use eddy_nn::{Module, RecurrentConfig};
use eddy_ops::prelude::*;
use ndarray::ArrayD;

/// Sums of a noisy sine's windows: `y = mean of the last 3 steps` of `x` `[N, 8, 1]`.
fn data(n: usize, seed: u64) -> (ArrayD<f32>, ArrayD<f32>) {
    let mut rng = Rng::seed(seed);
    let x = ArrayD::from_shape_fn(vec![n, 8, 1], |_| rng.uniform_in(-1.0, 1.0) as f32);
    let y = ArrayD::from_shape_fn(vec![n, 1], |ix| {
        (x[[ix[0], 5, 0]] + x[[ix[0], 6, 0]] + x[[ix[0], 7, 0]]) / 3.0
    });
    (x, y)
}

/// JANET (stacked, bidirectional, with both dropouts), dropout, a dense head; Adam and a schedule.
fn janet_model(seed: u64) -> Model<f32> {
    let mut rng = Rng::seed(seed);
    let mut m = Sequential::new()
        .add(
            recurrent(|input, rng| Janet::new(input, 6, rng))
                .named("janet")
                .num_layers(2)
                .bidirectional(true)
                .dropout(0.1)
                .recurrent_dropout(0.1),
        )
        .add(dropout(0.1))
        .add(dense(1))
        .build::<f32>(1, &mut rng)
        .unwrap();
    m.compile(Optim::adam(0.02), Loss::Mse).unwrap();
    m.set_schedule(|opt| StepLr::new(opt, 3, 0.8)).unwrap();
    m
}

fn values(m: &Model<f32>) -> Vec<(String, ArrayD<f32>)> {
    m.params()
        .into_iter()
        .map(|(n, p)| (n, (*p.value()).clone()))
        .collect()
}

#[test]
fn a_user_cell_trains_validates_stops_early_saves_and_loads() {
    let (x, y) = data(64, 1);
    let (vx, vy) = data(32, 2);
    let mut m = janet_model(0);
    let names: Vec<String> = m.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "layers.0.weight_ih_l0");
    assert!(names.contains(&"layers.0.weight_hh_l1_reverse".to_string()));
    assert_eq!(names.last().unwrap(), "layers.2.bias");
    assert_eq!(m.layers[0].kind(), "janet");

    let before = m.evaluate(&vx, &vy).unwrap().loss;
    let h = m
        .fit(
            &x,
            &y,
            FitOptions {
                epochs: 60,
                batch_size: 16,
                validation_data: Some((&vx, &vy)),
                early_stopping: Some(EarlyStopping {
                    monitor: Monitor::ValLoss,
                    patience: 3,
                    min_delta: 1e-4,
                    restore_best_weights: true,
                }),
                progress: false,
                ..FitOptions::default()
            },
        )
        .unwrap();
    let after = m.evaluate(&vx, &vy).unwrap().loss;
    assert!(
        after < 0.5 * before,
        "validation loss {before} → {after}: the cell did not learn"
    );
    assert_eq!(h.val_loss.len(), h.epoch.len());
    let stopped = h.stopped_epoch.expect("early stopping fires within 60 epochs");
    assert!(stopped < 60);
    // restore_best_weights: the model is the best epoch's.
    let best = h.best_epoch.unwrap();
    assert!((after - h.val_loss[best - 1]).abs() < 1e-6 * after.max(1e-3));

    let dir = tmp_dir("seqcells", "save");
    let path = dir.join("janet.safetensors");
    m.save_weights(&path).unwrap();
    let loaded = janet_model(77);
    assert!(loaded.predict(&vx).unwrap() != m.predict(&vx).unwrap());
    loaded.load_weights(&path).unwrap();
    assert_eq!(loaded.predict(&vx).unwrap(), m.predict(&vx).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_user_cell_resumes_from_a_checkpoint_bit_for_bit() {
    let dir = tmp_dir("seqcells", "resume");
    let (x, y) = data(48, 3);
    let (vx, vy) = data(16, 4);
    let opts = |epochs| FitOptions {
        epochs,
        batch_size: 16,
        validation_data: Some((&vx, &vy)),
        progress: false,
        ..FitOptions::default()
    };
    let (n, k) = (6, 2);
    let mut straight = janet_model(5);
    let h_straight = straight.fit(&x, &y, opts(n)).unwrap();

    let mut first = janet_model(5);
    first.fit(&x, &y, opts(k)).unwrap();
    let path = dir.join("ckpt.safetensors");
    first.save_checkpoint(&path).unwrap();
    drop(first);
    let mut resumed = janet_model(99);
    resumed.load_checkpoint(&path).unwrap();
    let h_resumed = resumed.fit(&x, &y, opts(n - k)).unwrap();

    assert_eq!(h_resumed.loss[..], h_straight.loss[k..]);
    assert_eq!(h_resumed.val_loss[..], h_straight.val_loss[k..]);
    assert_eq!(values(&straight), values(&resumed));
    assert_eq!(straight.rng(), resumed.rng());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_builtin_specs_are_the_generic_layer_over_the_builtin_cells() {
    // lstm(4) in a model computes what RecurrentConfig::lstm does from the same draws.
    let mut rng = Rng::seed(3);
    let model = Sequential::new()
        .add(lstm(4).return_sequences(true))
        .build::<f64>(2, &mut rng)
        .unwrap();
    let mut rng = Rng::seed(3);
    let layer = RecurrentConfig::new(2, 4).batch_first(true).lstm::<f64>(&mut rng);
    let (x, _) = data(3, 9);
    let x = ArrayD::from_shape_fn(vec![3, 5, 2], |ix| f64::from(x[[ix[0], ix[1], 0]]) * ix[2] as f64);
    let tape = Tape::no_grad();
    let want = layer
        .forward(&tape.constant(x.clone()))
        .unwrap()
        .output
        .value()
        .clone();
    assert_eq!(model.predict(&x).unwrap(), want);
    let names: Vec<String> = model.params().into_iter().map(|(n, _)| n).collect();
    let theirs: Vec<String> = layer
        .params()
        .into_iter()
        .map(|(n, _)| format!("layers.0.{n}"))
        .collect();
    assert_eq!(names, theirs);
}

#[test]
fn a_stacked_bidirectional_layer_returns_the_last_layers_final_outputs() {
    // return_sequences(false) of 2 layers × 2 directions = the last layer's h_n, concatenated.
    let mut rng = Rng::seed(4);
    let model = Sequential::new()
        .add(
            recurrent(|i, rng| Janet::<f64>::new(i, 3, rng))
                .num_layers(2)
                .bidirectional(true),
        )
        .build::<f64>(2, &mut rng)
        .unwrap();
    assert_eq!(model.output_features(), 6);
    let mut rng = Rng::seed(4);
    let layer = RecurrentConfig::new(2, 3)
        .num_layers(2)
        .bidirectional(true)
        .batch_first(true)
        .build(|i, _, rng| Janet::<f64>::new(i, 3, rng), &mut rng);
    let x = ArrayD::from_shape_fn(vec![2, 4, 2], |ix| {
        (ix[0] + 2 * ix[1]) as f64 * 0.1 - ix[2] as f64 * 0.3
    });
    let tape = Tape::no_grad();
    let h_n = layer
        .forward(&tape.constant(x.clone()))
        .unwrap()
        .h_n()
        .value()
        .clone();
    let got = model.predict(&x).unwrap();
    for b in 0..2 {
        for k in 0..3 {
            assert_eq!(got[[b, k]], h_n[[2, b, k]]);
            assert_eq!(got[[b, 3 + k]], h_n[[3, b, k]]);
        }
    }
}

/// A sequence module: a per-feature gain, then the mean over time (so it returns `[B, F]`).
#[derive(Clone)]
struct GainMean {
    gain: Param<f32>,
}

impl Module<f32> for GainMean {
    fn params(&self) -> Vec<(String, Param<f32>)> {
        vec![("gain".into(), self.gain.clone())]
    }
}

impl SequenceLayer<f32> for GainMean {
    fn forward(&self, x: &Var<f32>, _: &mut Pass<'_>) -> Result<Var<f32>> {
        (x * &x.tape().param(&self.gain))?.mean(1, false)
    }
}

#[test]
fn a_module_layer_is_sized_by_its_output_and_trains() {
    let mut rng = Rng::seed(6);
    let mut m = Sequential::new()
        .add(recurrent(|i, rng| Janet::new(i, 5, rng)).return_sequences(true))
        .add(module(|features, _| GainMean {
            gain: Param::new("gain", ArrayD::ones(vec![features])),
        }))
        .add(dense(1))
        .build::<f32>(1, &mut rng)
        .unwrap();
    assert!(!m.returns_sequences());
    let names: Vec<String> = m.params().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"layers.1.gain".to_string()));
    assert_eq!(m.layers[2].layer().params()[0].1.shape(), &[1, 5]);
    m.compile(Optim::adam(0.02), Loss::Mse).unwrap();
    let (x, y) = data(32, 7);
    let h = m
        .fit(
            &x,
            &y,
            FitOptions {
                epochs: 5,
                batch_size: 8,
                progress: false,
                ..FitOptions::default()
            },
        )
        .unwrap();
    assert!(h.loss[4] < h.loss[0]);
}

#[test]
fn build_errors_name_the_layer() {
    let mut rng = Rng::seed(0);
    // A user cell's constructor error, named with the layer.
    let e = Sequential::<f32>::new()
        .add(try_recurrent(|i, rng| {
            if i == 3 {
                Err(Error::invalid("janet", "input must not be 3"))
            } else {
                Ok(Janet::new(i, 2, rng))
            }
        }))
        .build::<f32>(3, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer 0") && e.contains("input must not be 3"), "{e}");
    // A recurrent layer after one that returns its last step.
    let e = Sequential::new()
        .add(recurrent(|i, rng| Janet::<f32>::new(i, 2, rng)))
        .add(recurrent(|i, rng| Janet::<f32>::new(i, 2, rng)))
        .build::<f32>(1, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer 1") && e.contains("return_sequences(true)"),
        "{e}"
    );
    let e = Sequential::new()
        .add(recurrent(|i, rng| Janet::<f32>::new(i, 2, rng)).num_layers(0))
        .build::<f32>(1, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(e.contains("num_layers"), "{e}");
    // A module that breaks the batch axis.
    let e = Sequential::new()
        .add(module(|_, _| GainMean {
            gain: Param::new("gain", ArrayD::ones(vec![1])),
        }))
        .add(module(|_, _| GainMean {
            gain: Param::new("gain", ArrayD::ones(vec![1])),
        }))
        .build::<f32>(1, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer 1"), "{e}");
    // An input of the wrong width names the layer and the cell's kind at fit time.
    let mut m = janet_model(1);
    let (x, y) = data(8, 1);
    let wide = ArrayD::<f32>::zeros(vec![8, 8, 2]);
    assert!(m.fit(&wide, &y, FitOptions::default()).is_err());
    m.fit(
        &x,
        &y,
        FitOptions {
            progress: false,
            ..FitOptions::default()
        },
    )
    .unwrap();
}
