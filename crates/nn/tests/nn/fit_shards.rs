//! `FitOptions::shards`: data-parallel shards of each batch, one tape each, give the one-tape
//! parameters and history (built-in LSTM, a user cell, micro-batches, a masked loss on padded
//! data); dropout with shards is reproducible and resumes from a checkpoint bit for bit; bad
//! combinations are clear errors.

use crate::support::{tmp_dir, Janet};
use eddy_nn::fit::{FitOptions, History};
use eddy_nn::ragged::RaggedOptions;
use eddy_nn::sequential::{dense, dropout, lstm, recurrent, LayerSpec, Loss, Model, Optim, Sequential};
use eddy_nn::sync::SingleProcess;
use eddy_nn::Module;
use eddy_tape::Rng;
use ndarray::ArrayD;

const LENGTHS: [usize; 11] = [7, 2, 5, 1, 9, 3, 9, 4, 6, 8, 5];
const T: usize = 9;

/// `x` `[11, 9, 2]` and per-step targets `[11, 9, 1]` (a running sum of the inputs), from `seed`.
fn data(seed: u64) -> (ArrayD<f64>, ArrayD<f64>) {
    let mut rng = Rng::seed(seed);
    let x = ArrayD::from_shape_fn(vec![LENGTHS.len(), T, 2], |_| rng.uniform_in(-1.0, 1.0));
    let mut y = ArrayD::zeros(vec![LENGTHS.len(), T, 1]);
    for i in 0..LENGTHS.len() {
        let mut acc = 0.0;
        for t in 0..T {
            acc += x[[i, t, 0]] - 0.5 * x[[i, t, 1]];
            y[[i, t, 0]] = acc;
        }
    }
    (x, y)
}

/// The built-in LSTM and a user cell, each returning sequences into a dense head.
fn specs() -> Vec<(&'static str, LayerSpec<f64>)> {
    vec![
        ("lstm", lstm(5)),
        ("janet", recurrent(|input, rng| Janet::<f64>::new(input, 4, rng))),
    ]
}

fn model(spec: LayerSpec<f64>, drop: bool) -> Model<f64> {
    let mut rng = Rng::seed(11);
    let mut layers = Sequential::new().add(spec.return_sequences(true));
    if drop {
        layers = layers.add(dropout(0.3));
    }
    let mut m = layers.add(dense(1)).build::<f64>(2, &mut rng).unwrap();
    m.compile(Optim::adam(0.05), Loss::Mse).unwrap();
    m
}

fn options<'a>(shards: usize, micro: Option<usize>) -> FitOptions<'a, f64> {
    FitOptions {
        epochs: 3,
        batch_size: 5, // 11 rows: batches of 5, 5 and 1 (fewer rows than 2 or 3 shards)
        micro_batch_size: micro,
        shards,
        progress: false,
        ..FitOptions::default()
    }
}

/// Trains `spec` on `(x, y)` (padded to `lengths` if given: a masked loss); returns the history and
/// the parameters.
fn train(
    spec: LayerSpec<f64>,
    drop: bool,
    (x, y): &(ArrayD<f64>, ArrayD<f64>),
    lengths: Option<&[usize]>,
    options: FitOptions<'_, f64>,
) -> (History, Vec<ArrayD<f64>>) {
    let mut m = model(spec, drop);
    let h = match lengths {
        Some(l) => m.fit_padded(x, l, y, options, RaggedOptions::default()),
        None => m.fit(x, y, options),
    }
    .unwrap();
    (h, m.param_list().iter().map(|p| (*p.value()).clone()).collect())
}

fn max_diff(a: &[ArrayD<f64>], b: &[ArrayD<f64>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).mapv(f64::abs).fold(0.0f64, |m, &v| m.max(v)))
        .fold(0.0, f64::max)
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-12)
}

#[test]
fn shards_give_the_one_tape_parameters_and_history() {
    let d = data(1);
    for (name, spec) in specs() {
        for (ragged, lengths) in [("equal", None), ("padded", Some(&LENGTHS[..]))] {
            for micro in [None, Some(3)] {
                let (h1, p1) = train(spec.clone(), false, &d, lengths, options(1, micro));
                for shards in [2, 3] {
                    let (h, p) = train(spec.clone(), false, &d, lengths, options(shards, micro));
                    let what = format!("{name} {ragged} micro {micro:?} shards {shards}");
                    let diff = max_diff(&p1, &p);
                    assert!(diff < 1e-12, "{what}: parameters differ by {diff}");
                    assert!(close(&h1.loss, &h.loss), "{what}: {:?} vs {:?}", h1.loss, h.loss);
                    assert!(close(&h1.metrics["mae"], &h.metrics["mae"]), "{what}: mae");
                }
            }
            // The comparison can fail: other data trains other parameters and losses.
            let (h1, p1) = train(spec.clone(), false, &d, lengths, options(1, None));
            let (h2, p2) = train(spec.clone(), false, &data(2), lengths, options(2, None));
            assert!(max_diff(&p1, &p2) > 1e-6, "{name} {ragged}: other data");
            assert!(!close(&h1.loss, &h2.loss), "{name} {ragged}: other data");
        }
    }
}

#[test]
fn a_masked_loss_weights_shards_by_their_valid_steps() {
    // Rows 0..5 of a batch of 5 in 2 shards: rows 0..3 hold 14 valid steps, rows 3..5 hold 10;
    // weighting by rows (3/5, 2/5) instead of steps (14/24, 10/24) would move the parameters.
    let d = data(3);
    let one = FitOptions {
        epochs: 1,
        shuffle: false,
        ..options(1, None)
    };
    let two = FitOptions {
        shards: 2,
        ..one.clone()
    };
    let spec = lstm(5);
    let (_, p1) = train(spec.clone(), false, &d, Some(&LENGTHS), one);
    let (_, p2) = train(spec, false, &d, Some(&LENGTHS), two);
    assert!(max_diff(&p1, &p2) < 1e-12);
}

#[test]
fn dropout_with_shards_is_reproducible() {
    let d = data(4);
    for (name, spec) in specs() {
        let run = |shards| train(spec.clone(), true, &d, None, options(shards, None));
        let (a, b) = (run(2), run(2));
        assert_eq!(a.0, b.0, "{name}: history");
        assert_eq!(a.1, b.1, "{name}: parameters");
        // Dropout is live, and the shards draw from their own streams, not the model's RNG.
        let one = run(1);
        assert!(max_diff(&a.1, &one.1) > 1e-9, "{name}: shards 2 vs 1");
        assert!(max_diff(&a.1, &run(3).1) > 1e-9, "{name}: shards 2 vs 3");
    }
}

#[test]
fn dropout_with_shards_resumes_bit_for_bit_from_a_checkpoint() {
    let (x, y) = data(6);
    let epochs = |n| FitOptions {
        epochs: n,
        ..options(2, None)
    };
    let mut whole = model(lstm(4), true);
    whole.fit(&x, &y, epochs(3)).unwrap();
    let dir = tmp_dir("fit-shards", "resume");
    let path = dir.join("ckpt.safetensors");
    let mut first = model(lstm(4), true);
    first.fit(&x, &y, epochs(1)).unwrap();
    first.save_checkpoint(&path).unwrap();
    let mut resumed = model(lstm(4), true);
    resumed.load_checkpoint(&path).unwrap();
    resumed.fit(&x, &y, epochs(2)).unwrap();
    let values = |m: &Model<f64>| {
        m.param_list()
            .iter()
            .map(|p| (*p.value()).clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(values(&whole), values(&resumed));
    assert_ne!(values(&whole), values(&first));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_shard_options_are_clear_errors() {
    let (x, y) = data(5);
    let mut m = model(lstm(3), false);
    let e = m.fit(&x, &y, options(0, None)).unwrap_err().to_string();
    assert!(e.contains("shards must be at least 1, got 0"), "{e}");
    let tbptt = FitOptions {
        tbptt: Some(3),
        ..options(2, None)
    };
    let e = m.fit(&x, &y, tbptt).unwrap_err().to_string();
    assert!(e.contains("shards = 2 with tbptt is not supported"), "{e}");
    let e = m
        .fit_distributed(&x, &y, options(2, None), &mut SingleProcess)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("shards = 2 with fit_distributed is not supported"),
        "{e}"
    );
    // Each is an error of the options alone: shards = 1 trains.
    m.fit_distributed(&x, &y, options(1, None), &mut SingleProcess)
        .unwrap();
}
