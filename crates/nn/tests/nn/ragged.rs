//! `fit`, `evaluate` and `predict` on ragged sequences (`fit_sequences`, `fit_padded`): padding
//! never reaches the loss, the gradients or the parameters, for built-in and user cells,
//! bidirectional included; a one-batch fit is the hand-computed loss over the valid steps and its
//! SGD step; a last-step classifier's outputs are those of each sequence run alone.

use crate::support::Janet;
use eddy_nn::data::{one_hot, pad_sequences};
use eddy_nn::fit::{EarlyStopping, FitOptions, Monitor};
use eddy_nn::ragged::{Bucketing, RaggedOptions};
use eddy_nn::sequential::{
    dense, gru, lstm, recurrent, simple_rnn, LayerSpec, Loss, Metric, Model, Optim, Sequential,
};
use eddy_nn::Module;
use eddy_ops::prelude::*;
use ndarray::{s, ArrayD, Axis};

const LENGTHS: [usize; 10] = [7, 2, 5, 1, 9, 3, 9, 4, 6, 8];
const T: usize = 9;

/// Ragged inputs `[T_i, 2]` (lengths above) and per-step targets `[T_i, 1]`.
fn ragged(seed: u64) -> (Vec<ArrayD<f64>>, Vec<ArrayD<f64>>) {
    let mut rng = Rng::seed(seed);
    let xs: Vec<ArrayD<f64>> = LENGTHS
        .iter()
        .map(|&l| ArrayD::from_shape_fn(vec![l, 2], |_| rng.uniform_in(-1.0, 1.0)))
        .collect();
    let ys = xs
        .iter()
        .map(|x| {
            let mut acc = 0.0;
            ArrayD::from_shape_fn(vec![x.shape()[0], 1], |ix| {
                acc += x[[ix[0], 0]] - 0.5 * x[[ix[0], 1]];
                acc
            })
        })
        .collect();
    (xs, ys)
}

/// `a` (`[N, T, F]`) with every step past each length overwritten by large finite garbage.
fn garbage_padded(a: &ArrayD<f64>, lengths: &[usize], seed: u64) -> ArrayD<f64> {
    let mut rng = Rng::seed(seed);
    let mut out = a.clone();
    for (i, &l) in lengths.iter().enumerate() {
        out.slice_mut(s![i, l.., ..])
            .mapv_inplace(|_| rng.uniform_in(-1.0, 1.0) * 1e4);
    }
    out
}

fn build(spec: LayerSpec<f64>, sequences: bool, out: usize, seed: u64) -> Model<f64> {
    let mut rng = Rng::seed(seed);
    Sequential::new()
        .add(spec.return_sequences(sequences))
        .add(dense(out))
        .build::<f64>(2, &mut rng)
        .unwrap()
}

/// The specs every property runs over: built-ins, stacked, bidirectional, and a user cell.
fn specs() -> Vec<(&'static str, LayerSpec<f64>)> {
    vec![
        ("lstm", lstm(5)),
        ("gru bidirectional", gru(4).bidirectional(true)),
        ("rnn 2 layers", simple_rnn(4).num_layers(2)),
        (
            "janet bidirectional",
            recurrent(|i, rng| Janet::new(i, 4, rng)).bidirectional(true),
        ),
    ]
}

fn params(m: &Model<f64>) -> Vec<ArrayD<f64>> {
    m.param_list().iter().map(|p| ArrayD::clone(&p.value())).collect()
}

#[test]
fn padding_changes_no_loss_gradient_or_parameter() {
    let (xs, ys) = ragged(1);
    let px = pad_sequences(&xs).unwrap();
    let py = pad_sequences(&ys).unwrap().x;
    let (gx, gy) = (
        garbage_padded(&px.x, &px.lengths, 7),
        garbage_padded(&py, &px.lengths, 8),
    );
    let labels: Vec<usize> = (0..LENGTHS.len()).map(|i| i % 3).collect();
    let classes = one_hot::<f64>(&labels, 3).unwrap();
    for (name, spec) in specs() {
        for sequences in [true, false] {
            let (y_clean, y_garbage, loss, out) = if sequences {
                (&py, &gy, Loss::Mse, 1)
            } else {
                (&classes, &classes, Loss::CrossEntropy, 3)
            };
            let model = || {
                let mut m = build(spec.clone(), sequences, out, 3);
                m.compile(Optim::adam(0.01), loss).unwrap();
                m
            };
            // One forward and backward on the whole padded batch: the same loss and gradients.
            let grads = |x: &ArrayD<f64>, y: &ArrayD<f64>| {
                let m = model();
                let tape = Tape::new();
                let pred = m
                    .forward(
                        &tape.constant(x.clone()),
                        Some(&px.lengths[..]),
                        &mut Rng::seed(0),
                    )
                    .unwrap();
                let mask = sequences.then_some(&px.mask);
                let l = loss.apply(&pred, &tape.constant(y.clone()), mask).unwrap();
                let g = l.backward().unwrap();
                let gs: Vec<ArrayD<f64>> = m
                    .param_list()
                    .iter()
                    .map(|p| g.param(p).unwrap().clone())
                    .collect();
                (l.item().unwrap(), gs)
            };
            let (clean, garbage) = (grads(&px.x, y_clean), grads(&gx, y_garbage));
            assert_eq!(clean.0, garbage.0, "{name} sequences {sequences}: loss");
            assert_eq!(clean.1, garbage.1, "{name} sequences {sequences}: gradients");
            assert!(clean.1.iter().all(|g| g.iter().all(|v| v.is_finite())));
            // fit with bucketing, micro-batches and validation: the same history and parameters.
            let fit = |x: &ArrayD<f64>, y: &ArrayD<f64>| {
                let mut m = model();
                let options = FitOptions {
                    epochs: 3,
                    batch_size: 4,
                    micro_batch_size: Some(3),
                    validation_split: 0.2,
                    progress: false,
                    ..FitOptions::default()
                };
                let bucketing = Some(Bucketing {
                    pool_batches: Some(1),
                });
                let ragged = RaggedOptions {
                    bucketing,
                    ..RaggedOptions::default()
                };
                let h = m.fit_padded(x, &px.lengths, y, options, ragged).unwrap();
                (h, params(&m), m.predict_padded(x, &px.lengths).unwrap())
            };
            let (a, b) = (fit(&px.x, y_clean), fit(&gx, y_garbage));
            assert_eq!(a.0, b.0, "{name} sequences {sequences}: history");
            assert_eq!(a.1, b.1, "{name} sequences {sequences}: parameters");
            assert_eq!(a.2, b.2, "{name} sequences {sequences}: predictions");
            assert_ne!(a.1, params(&model()), "{name}: fit trained");
        }
    }
}

#[test]
fn one_batch_fit_is_the_loss_over_the_valid_steps_and_its_sgd_step() {
    let (xs, ys) = ragged(2);
    for (name, spec) in specs() {
        let lr = 0.1;
        let mut m = build(spec.clone(), true, 1, 5);
        m.compile(Optim::sgd(lr), Loss::Mse).unwrap();
        // By hand: each sequence alone (no padding, no lengths), squared errors summed over all
        // valid steps, divided by their count.
        let mut twin = build(spec, true, 1, 5);
        twin.compile(Optim::sgd(lr), Loss::Mse).unwrap();
        let tape = Tape::new();
        let mut total: Option<Var<f64>> = None;
        for (x, y) in xs.iter().zip(&ys) {
            let pred = twin
                .forward(
                    &tape.constant(x.clone().insert_axis(Axis(0))),
                    None,
                    &mut Rng::seed(0),
                )
                .unwrap();
            let d = (&pred - &tape.constant(y.clone().insert_axis(Axis(0)))).unwrap();
            let sq = (&d * &d).unwrap().sum_all().unwrap();
            total = Some(match total {
                None => sq,
                Some(t) => (&t + &sq).unwrap(),
            });
        }
        let steps: usize = LENGTHS.iter().sum();
        let by_hand = total.unwrap().scale(1.0 / steps as f64).unwrap();
        let grads = by_hand.backward().unwrap();
        let options = FitOptions {
            epochs: 1,
            batch_size: LENGTHS.len(),
            shuffle: false,
            progress: false,
            ..FitOptions::default()
        };
        let h = m
            .fit_sequences(&xs, &ys, options, RaggedOptions::default())
            .unwrap();
        let want = by_hand.item().unwrap();
        assert!(
            (h.loss[0] - want).abs() < 1e-12 * want.max(1.0),
            "{name}: {} vs {want}",
            h.loss[0]
        );
        for ((n, p), q) in m.params().iter().zip(twin.param_list()) {
            let g = grads.param(&q).unwrap();
            let stepped = &*q.value() - &(g * lr);
            let err = (&*p.value() - &stepped)
                .mapv(f64::abs)
                .fold(0.0f64, |a, &b| a.max(b));
            assert!(err < 1e-12, "{name} {n}: {err}");
        }
        // evaluate over the valid steps only: the same value before the step, by the twin.
        let ev = twin.evaluate_sequences(&xs, &ys).unwrap();
        assert!((ev.loss - want).abs() < 1e-12, "{name}");
    }
}

#[test]
fn last_step_classification_matches_each_sequence_alone() {
    let (xs, _) = ragged(3);
    let labels: Vec<usize> = xs
        .iter()
        .map(|x| usize::from(x[[x.shape()[0] - 1, 0]] > 0.0))
        .collect();
    let y = one_hot::<f64>(&labels, 2).unwrap();
    for (name, spec) in specs() {
        let mut m = build(spec, false, 2, 11);
        m.compile(Optim::adam(0.02), Loss::CrossEntropy).unwrap();
        m.set_metrics(&[Metric::Accuracy]).unwrap();
        let options = FitOptions {
            epochs: 2,
            batch_size: 3,
            progress: false,
            ..FitOptions::default()
        };
        let ragged = RaggedOptions {
            bucketing: Some(Bucketing::default()),
            ..RaggedOptions::default()
        };
        m.fit_sequences(&xs, &y, options, ragged).unwrap();
        let batched = m.predict_sequences(&xs).unwrap();
        let mut ce = 0.0;
        let mut hits = 0;
        for (i, x) in xs.iter().enumerate() {
            let alone = m.predict(&x.clone().insert_axis(Axis(0))).unwrap();
            let alone = alone.index_axis(Axis(0), 0);
            let err = (&alone - &batched[i])
                .mapv(f64::abs)
                .fold(0.0f64, |a, &b| a.max(b));
            assert!(err < 1e-12, "{name} sequence {i}: {err}");
            let lse = alone.mapv(f64::exp).sum().ln();
            ce += lse - alone[labels[i]];
            hits += usize::from((alone[1] > alone[0]) == (labels[i] == 1));
        }
        let ev = m.evaluate_sequences(&xs, &y).unwrap();
        assert!((ev.loss - ce / xs.len() as f64).abs() < 1e-12, "{name}");
        assert_eq!(ev.metrics["accuracy"], hits as f64 / xs.len() as f64, "{name}");
        // predict_padded and evaluate_padded are the same on the padded batch.
        let p = pad_sequences(&xs).unwrap();
        let padded = m.predict_padded(&p.x, &p.lengths).unwrap();
        for (i, b) in batched.iter().enumerate() {
            assert_eq!(padded.index_axis(Axis(0), i), b.view());
        }
        assert_eq!(m.evaluate_padded(&p.x, &p.lengths, &y).unwrap(), ev);
    }
}

#[test]
fn per_step_predictions_are_zero_past_each_length_and_match_alone() {
    let (xs, _) = ragged(4);
    let m = build(gru(3).bidirectional(true), true, 2, 2);
    let p = pad_sequences(&xs).unwrap();
    let padded = m.predict_padded(&p.x, &p.lengths).unwrap();
    assert_eq!(padded.shape(), &[LENGTHS.len(), T, 2]);
    let listed = m.predict_sequences(&xs).unwrap();
    for (i, x) in xs.iter().enumerate() {
        let l = LENGTHS[i];
        assert!(padded.slice(s![i, l.., ..]).iter().all(|&v| v == 0.0));
        let alone = m.predict(&x.clone().insert_axis(Axis(0))).unwrap();
        let err = (&alone.index_axis(Axis(0), 0) - &listed[i])
            .mapv(f64::abs)
            .fold(0.0f64, |a, &b| a.max(b));
        assert!(err < 1e-12, "sequence {i}: {err}");
    }
}

#[test]
fn ragged_validation_and_early_stopping() {
    let (xs, ys) = ragged(5);
    let (vx, vy) = ragged(6);
    let pv = pad_sequences(&vx).unwrap();
    let pvy = pad_sequences(&vy).unwrap().x;
    let mut m = build(lstm(4), true, 1, 1);
    m.compile(Optim::adam(0.05), Loss::Mse).unwrap();
    let options = FitOptions {
        epochs: 40,
        batch_size: 4,
        early_stopping: Some(EarlyStopping {
            monitor: Monitor::ValLoss,
            patience: 2,
            min_delta: 1e-3,
            restore_best_weights: true,
        }),
        progress: false,
        ..FitOptions::default()
    };
    let ragged = RaggedOptions {
        validation_data: Some((&pv.x, &pv.lengths[..], &pvy)),
        bucketing: Some(Bucketing::default()),
    };
    let h = m.fit_sequences(&xs, &ys, options, ragged).unwrap();
    assert_eq!(h.val_loss.len(), h.loss.len());
    // The validation loss is evaluate_padded's (over valid steps), and garbage in the padding
    // of the validation data changes nothing.
    let ev = m.evaluate_padded(&pv.x, &pv.lengths, &pvy).unwrap();
    let best = h.val_loss.iter().copied().fold(f64::INFINITY, f64::min);
    assert!((ev.loss - best).abs() < 1e-12, "{} vs {best}", ev.loss);
    let garbage = garbage_padded(&pv.x, &pv.lengths, 1);
    assert_eq!(m.evaluate_padded(&garbage, &pv.lengths, &pvy).unwrap(), ev);
    assert!(h.val_loss[0] > best);
}

#[test]
fn bad_lengths_and_counts_are_clean_errors() {
    let (xs, ys) = ragged(7);
    let p = pad_sequences(&xs).unwrap();
    let py = pad_sequences(&ys).unwrap().x;
    let mut m = build(lstm(3), true, 1, 0);
    m.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    let opts = || FitOptions {
        progress: false,
        ..FitOptions::default()
    };
    let fit = |m: &mut Model<f64>, lengths: &[usize]| {
        m.fit_padded(&p.x, lengths, &py, opts(), RaggedOptions::default())
            .unwrap_err()
            .to_string()
    };
    let mut zero = p.lengths.clone();
    zero[3] = 0;
    let e = fit(&mut m, &zero[..]);
    assert!(e.contains("length 0 of sequence 3") && e.contains("1..=9"), "{e}");
    let mut long = p.lengths.clone();
    long[1] = 10;
    let e = fit(&mut m, &long[..]);
    assert!(e.contains("length 10 of sequence 1"), "{e}");
    let e = fit(&mut m, &p.lengths[..4]);
    assert!(e.contains("4 lengths for 10 sequences"), "{e}");
    let e = m
        .fit_sequences(&xs, &ys[..9], opts(), RaggedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("10 sequences but 9 targets"), "{e}");
    let mut short = ys.clone();
    short[2] = short[2].slice(s![..1, ..]).to_owned().into_dyn();
    let e = m
        .fit_sequences(&xs, &short, opts(), RaggedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("target 2 has 1 steps, its sequence 5"), "{e}");
    let mut empty = xs.clone();
    empty[0] = ArrayD::zeros(vec![0, 2]);
    let e = m.predict_sequences(&empty).unwrap_err().to_string();
    assert!(e.contains("sequence 0 is empty"), "{e}");
    let e = m.predict_padded(&p.x, &long).unwrap_err().to_string();
    assert!(e.contains("predict") && e.contains("length 10"), "{e}");
    let e = m.evaluate_padded(&p.x, &zero, &py).unwrap_err().to_string();
    assert!(e.contains("evaluate") && e.contains("length 0"), "{e}");
    let twice = FitOptions {
        validation_data: Some((&p.x, &py)),
        ..opts()
    };
    let ragged = RaggedOptions {
        validation_data: Some((&p.x, &p.lengths[..], &py)),
        bucketing: None,
    };
    let e = m
        .fit_padded(&p.x, &p.lengths, &py, twice, ragged)
        .unwrap_err()
        .to_string();
    assert!(e.contains("validation data given twice"), "{e}");
    // The model is untouched by the failed calls.
    assert_eq!(m.epoch(), 0);
}

#[test]
fn per_step_cross_entropy_is_the_mean_over_valid_steps() {
    // Logits [N, T, C], one-hot targets, a [N, T, 1] mask: the mean of −log softmax at the target
    // class over the valid steps, by hand.
    let lengths = [3usize, 1];
    let logits = ArrayD::from_shape_fn(vec![2, 3, 4], |ix| {
        ((ix[0] * 12 + ix[1] * 4 + ix[2]) as f64 * 0.37).sin()
    });
    let classes = [[1usize, 3, 0], [2, 0, 0]];
    let target = ArrayD::from_shape_fn(vec![2, 3, 4], |ix| {
        f64::from(u8::from(classes[ix[0]][ix[1]] == ix[2]))
    });
    let mask = ArrayD::from_shape_fn(vec![2, 3, 1], |ix| f64::from(u8::from(ix[1] < lengths[ix[0]])));
    let tape = Tape::new();
    let loss = Loss::CrossEntropy
        .apply(
            &tape.constant(logits.clone()),
            &tape.constant(target),
            Some(&mask),
        )
        .unwrap()
        .item()
        .unwrap();
    let mut sum = 0.0;
    for (b, &l) in lengths.iter().enumerate() {
        for t in 0..l {
            let row: Vec<f64> = (0..4).map(|c| logits[[b, t, c]]).collect();
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            sum += lse - row[classes[b][t]];
        }
    }
    assert!((loss - sum / 4.0).abs() < 1e-12, "{loss} vs {}", sum / 4.0);
}
