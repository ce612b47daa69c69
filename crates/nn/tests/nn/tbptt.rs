//! Truncated BPTT in `fit` (`FitOptions::tbptt`): one chunk is plain `fit` bit for bit; shorter
//! chunks train exactly as a hand-written PyTorch-style TBPTT loop (state carried as detached
//! values, one optimizer step per chunk); any cell trains under it; it works with validation,
//! early stopping, checkpoints and `fit_distributed`; bad uses are clean errors.

use crate::support::Janet;
use eddy_nn::fit::{CheckpointEvery, EarlyStopping, FitOptions, History, Monitor};
use eddy_nn::loss::{mse, Reduction};
use eddy_nn::optim::{Adam, AdamConfig, Optimizer};
use eddy_nn::sequential::{
    dense, dropout, gru, lstm, module, recurrent, Loss, Model, Optim, Pass, SequenceLayer, Sequential,
};
use eddy_nn::sync::SingleProcess;
use eddy_nn::{carried, Linear, MinGruCell, Module, RecurrentConfig};
use eddy_ops::prelude::*;
use ndarray::{ArrayD, Axis, Slice};

/// `n` sequences of `t` steps, 2 features; sequence targets `[n, t, 2]` (a running mix of the
/// inputs, so the state matters) and last-step targets `[n, 1]`.
fn data(n: usize, t: usize, seed: u64) -> (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>) {
    let mut rng = Rng::seed(seed);
    let x = ArrayD::from_shape_fn(vec![n, t, 2], |_| rng.uniform_in(-1.0, 1.0));
    let mut ys = ArrayD::zeros(vec![n, t, 2]);
    for i in 0..n {
        let mut acc = 0.0;
        for s in 0..t {
            acc = 0.7 * acc + 0.3 * x[[i, s, 0]];
            ys[[i, s, 0]] = acc;
            ys[[i, s, 1]] = x[[i, s, 1]] * 0.5;
        }
    }
    let y1 = ArrayD::from_shape_fn(vec![n, 1], |ix| ys[[ix[0], t - 1, 0]]);
    (x, ys, y1)
}

fn quiet<'a>() -> FitOptions<'a, f64> {
    FitOptions {
        progress: false,
        batch_size: 8,
        ..FitOptions::default()
    }
}

fn seq_model(seed: u64) -> Model<f64> {
    let mut m = Sequential::new()
        .add(lstm(6).return_sequences(true))
        .add(dense(2))
        .build::<f64>(2, &mut Rng::seed(seed))
        .unwrap();
    m.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    m
}

fn last_model(seed: u64) -> Model<f64> {
    let mut m = Sequential::new()
        .add(gru(5).return_sequences(true))
        .add(dropout(0.2))
        .add(lstm(4))
        .add(dense(1))
        .build::<f64>(2, &mut Rng::seed(seed))
        .unwrap();
    m.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    m
}

fn values(m: &Model<f64>) -> Vec<ArrayD<f64>> {
    m.param_list().iter().map(|p| ArrayD::clone(&p.value())).collect()
}

fn assert_bitwise(a: &[ArrayD<f64>], b: &[ArrayD<f64>]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape(), y.shape());
        for (u, v) in x.iter().zip(y) {
            assert_eq!(u.to_bits(), v.to_bits(), "{u} vs {v}");
        }
    }
}

fn assert_same_history(a: &History, b: &History) {
    assert_eq!(a, b);
    assert!(a.loss.iter().all(|l| l.is_finite()));
}

#[test]
fn one_chunk_is_plain_fit_bit_for_bit() {
    let (x, ys, y1) = data(20, 9, 1);
    let (vx, vys, vy1) = data(6, 9, 2);
    // Sequence targets, with micro-batches; last-step targets, with dropout and shuffling.
    for k in [9, 10, 1000] {
        let opts = || FitOptions {
            epochs: 2,
            micro_batch_size: Some(3),
            validation_data: Some((&vx, &vys)),
            ..quiet()
        };
        let (mut a, mut b) = (seq_model(3), seq_model(3));
        let ha = a.fit(&x, &ys, opts()).unwrap();
        let hb = b.fit(&x, &ys, opts().tbptt(k)).unwrap();
        assert_same_history(&ha, &hb);
        assert_bitwise(&values(&a), &values(&b));

        let opts = || FitOptions {
            epochs: 2,
            validation_data: Some((&vx, &vy1)),
            ..quiet()
        };
        let (mut a, mut b) = (last_model(4), last_model(4));
        let ha = a.fit(&x, &y1, opts()).unwrap();
        let hb = b.fit(&x, &y1, opts().tbptt(k)).unwrap();
        assert_same_history(&ha, &hb);
        assert_bitwise(&values(&a), &values(&b));
        assert_eq!(a.rng(), b.rng());
    }
}

/// The test's own TBPTT loop, as one writes it in PyTorch: a `Recurrent` LSTM and a `Linear`
/// holding the model's initial parameters, the state carried between chunks as values
/// (`h.detach()`), the loss of each chunk (or, for last-step targets, of the final chunk after
/// the earlier ones ran without gradients), and one Adam step per loss.
fn hand_tbptt(
    model: &Model<f64>,
    x: &ArrayD<f64>,
    y: &ArrayD<f64>,
    k: usize,
    epochs: usize,
    batch: usize,
) -> Vec<ArrayD<f64>> {
    let sequences = model.returns_sequences();
    let (hidden, out) = if sequences { (6, 2) } else { (4, 1) };
    let mut rng = Rng::seed(100);
    let lstm = RecurrentConfig::new(2, hidden)
        .batch_first(true)
        .lstm::<f64>(&mut rng);
    let linear = Linear::<f64>::new(hidden, out, &mut rng);
    let mut mine: Vec<(String, Param<f64>)> = lstm.params();
    mine.extend(linear.params());
    let theirs = model.params();
    assert_eq!(mine.len(), theirs.len());
    for ((n, p), (m, q)) in mine.iter().zip(&theirs) {
        assert!(m.ends_with(n.as_str()), "{m} vs {n}");
        p.set(ArrayD::clone(&q.value()));
    }
    let params: Vec<Param<f64>> = mine.iter().map(|(_, p)| p.clone()).collect();
    let mut adam = Adam::new(
        params.clone(),
        AdamConfig {
            lr: 0.01,
            ..AdamConfig::default()
        },
    )
    .unwrap();
    let mut shuffle = model.rng().clone();
    let (n, t) = (x.shape()[0], x.shape()[1]);
    for _ in 0..epochs {
        let mut order: Vec<usize> = (0..n).collect();
        shuffle.shuffle(&mut order);
        for rows in order.chunks(batch) {
            let (xb, yb) = (x.select(Axis(0), rows), y.select(Axis(0), rows));
            let mut carry: Option<Vec<ArrayD<f64>>> = None;
            for s in (0..t).step_by(k) {
                let e = (s + k).min(t);
                let last = e == t;
                let tape = if sequences || last {
                    Tape::new()
                } else {
                    Tape::no_grad()
                };
                let xc = tape.constant(xb.slice_axis(Axis(1), Slice::from(s..e)).to_owned());
                let init = carry.as_ref().map(|c| carried(&tape, c));
                let o = lstm.forward_with(&xc, init.as_deref(), None, None).unwrap();
                carry = Some(o.carry());
                if !sequences && !last {
                    continue;
                }
                let (h, target) = if sequences {
                    (
                        o.output.clone(),
                        yb.slice_axis(Axis(1), Slice::from(s..e)).to_owned(),
                    )
                } else {
                    (o.h_n().select(0, 0).unwrap(), yb.clone())
                };
                let pred = linear.forward(&h).unwrap();
                let loss = mse(&pred, &tape.constant(target), Reduction::Mean, None).unwrap();
                adam.step(&loss.backward().unwrap()).unwrap();
            }
        }
    }
    params.iter().map(|p| ArrayD::clone(&p.value())).collect()
}

#[test]
fn tbptt_is_a_hand_written_tbptt_loop_to_the_last_bit() {
    let (x, ys, y1) = data(19, 10, 5);
    for k in [1, 3, 4, 9] {
        let mut m = seq_model(7);
        let want = hand_tbptt(&m, &x, &ys, k, 2, 8);
        let h = m
            .fit(&x, &ys, FitOptions { epochs: 2, ..quiet() }.tbptt(k))
            .unwrap();
        assert!(h.loss.iter().all(|l| l.is_finite()));
        assert_bitwise(&values(&m), &want);

        let mut m = Sequential::new()
            .add(lstm(4))
            .add(dense(1))
            .build::<f64>(2, &mut Rng::seed(8))
            .unwrap();
        m.compile(Optim::adam(0.01), Loss::Mse).unwrap();
        let want = hand_tbptt(&m, &x, &y1, k, 2, 8);
        m.fit(&x, &y1, FitOptions { epochs: 2, ..quiet() }.tbptt(k))
            .unwrap();
        assert_bitwise(&values(&m), &want);
    }
    // Chunks change the training: k = 3 is not plain fit.
    let (mut a, mut b) = (seq_model(7), seq_model(7));
    a.fit(&x, &ys, quiet()).unwrap();
    b.fit(&x, &ys, quiet().tbptt(3)).unwrap();
    assert_ne!(values(&a), values(&b));
}

#[test]
fn a_user_cell_and_min_gru_train_under_tbptt() {
    let (x, ys, _) = data(32, 24, 9);
    let specs = [
        recurrent(|i, rng| Janet::new(i, 8, rng)).return_sequences(true),
        recurrent(|i, rng| MinGruCell::new(i, 8, true, rng)).return_sequences(true),
    ];
    for spec in specs {
        let build = || {
            let mut m = Sequential::new()
                .add(spec.clone())
                .add(dense(2))
                .build::<f64>(2, &mut Rng::seed(11))
                .unwrap();
            m.compile(Optim::adam(0.02), Loss::Mse).unwrap();
            m
        };
        let mut m = build();
        let h = m
            .fit(
                &x,
                &ys,
                FitOptions {
                    epochs: 12,
                    ..quiet()
                }
                .tbptt(5),
            )
            .unwrap();
        assert!(h.loss[11] < 0.5 * h.loss[0], "{:?}", h.loss);
        // One chunk is plain fit here too (minGRU runs as one scan from the carried state).
        let (mut a, mut b) = (build(), build());
        let ha = a.fit(&x, &ys, quiet()).unwrap();
        let hb = b.fit(&x, &ys, quiet().tbptt(24)).unwrap();
        assert_same_history(&ha, &hb);
        assert_bitwise(&values(&a), &values(&b));
    }
}

#[test]
fn validation_early_stopping_and_checkpoints_work_per_chunk_step() {
    let (x, ys, _) = data(24, 12, 12);
    let (vx, vys, _) = data(8, 12, 13);
    let dir = std::env::temp_dir().join(format!("eddy-tbptt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ck-{epoch}.eddy");
    let opts = |epochs| {
        FitOptions {
            epochs,
            validation_data: Some((&vx, &vys)),
            early_stopping: Some(EarlyStopping {
                monitor: Monitor::ValLoss,
                patience: 2,
                restore_best_weights: true,
                ..EarlyStopping::default()
            }),
            checkpoint: Some(CheckpointEvery {
                path: path.clone(),
                every: 1,
            }),
            ..quiet()
        }
        .tbptt(5)
    };
    let mut whole = seq_model(21);
    let hw = whole.fit(&x, &ys, opts(6)).unwrap();
    assert_eq!(hw.val_loss.len(), hw.loss.len());
    assert!(*hw.val_loss.last().unwrap() < hw.val_loss[0] || hw.stopped_epoch.is_some());
    // Resume from epoch 3's checkpoint: the rest of the run is the same, bit for bit.
    let mut resumed = seq_model(99);
    resumed.load_checkpoint(dir.join("ck-3.eddy")).unwrap();
    let hr = resumed.fit(&x, &ys, opts(3)).unwrap();
    assert_eq!(hr.loss[..], hw.loss[3..]);
    assert_eq!(hr.val_loss[..], hw.val_loss[3..]);
    assert_bitwise(&values(&resumed), &values(&whole));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fit_distributed_runs_tbptt_as_fit() {
    let (x, ys, y1) = data(20, 11, 14);
    let (mut a, mut b) = (seq_model(15), seq_model(15));
    let ha = a
        .fit(&x, &ys, FitOptions { epochs: 2, ..quiet() }.tbptt(4))
        .unwrap();
    let hb = b
        .fit_distributed(
            &x,
            &ys,
            FitOptions { epochs: 2, ..quiet() }.tbptt(4),
            &mut SingleProcess,
        )
        .unwrap();
    assert_same_history(&ha, &hb);
    assert_bitwise(&values(&a), &values(&b));

    let mut m = Sequential::new()
        .add(lstm(4))
        .add(dense(1))
        .build::<f64>(2, &mut Rng::seed(16))
        .unwrap();
    m.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    let mut n = Sequential::new()
        .add(lstm(4))
        .add(dense(1))
        .build::<f64>(2, &mut Rng::seed(16))
        .unwrap();
    n.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    let ha = m.fit(&x, &y1, quiet().tbptt(3)).unwrap();
    let hb = n
        .fit_distributed(&x, &y1, quiet().tbptt(3), &mut SingleProcess)
        .unwrap();
    assert_same_history(&ha, &hb);
    assert_bitwise(&values(&m), &values(&n));
}

/// A module that mixes time steps (a mean over time): it cannot run chunk by chunk.
#[derive(Clone)]
struct MeanOverTime {
    gain: Param<f64>,
}

impl Module<f64> for MeanOverTime {
    fn params(&self) -> Vec<(String, Param<f64>)> {
        vec![("gain".into(), self.gain.clone())]
    }
}

impl SequenceLayer<f64> for MeanOverTime {
    fn forward(&self, x: &Var<f64>, _: &mut Pass<'_>) -> Result<Var<f64>> {
        (x * &x.tape().param(&self.gain))?.mean(1, false)
    }
}

#[test]
fn bad_uses_are_clean_errors() {
    let (x, ys, y1) = data(8, 6, 17);
    let mut m = seq_model(18);
    let before = values(&m);
    let e = m.fit(&x, &ys, quiet().tbptt(0)).unwrap_err().to_string();
    assert!(e.contains("tbptt") && e.contains("got 0"), "{e}");
    assert_bitwise(&values(&m), &before);

    let mut bi = Sequential::new()
        .add(lstm(3).return_sequences(true).bidirectional(true))
        .add(dense(2))
        .build::<f64>(2, &mut Rng::seed(1))
        .unwrap();
    bi.compile(Optim::sgd(0.1), Loss::Mse).unwrap();
    let e = bi.fit(&x, &ys, quiet().tbptt(2)).unwrap_err().to_string();
    assert!(
        e.contains("epoch 1 batch 1") && e.contains("layers.0") && e.contains("bidirectional"),
        "{e}"
    );

    let mut mean = Sequential::new()
        .add(lstm(3).return_sequences(true))
        .add(module(|f, _| MeanOverTime {
            gain: Param::new("gain", ArrayD::ones(vec![f])),
        }))
        .add(dense(1))
        .build::<f64>(2, &mut Rng::seed(1))
        .unwrap();
    mean.compile(Optim::sgd(0.1), Loss::Mse).unwrap();
    let e = mean.fit(&x, &y1, quiet().tbptt(2)).unwrap_err().to_string();
    assert!(e.contains("layers.1") && e.contains("forward_carry"), "{e}");
    // Ragged sequences (lengths) cannot be cut into chunks: a clear error before any step.
    let lengths = vec![6, 3, 5, 6, 1, 2, 6, 4];
    let ragged = eddy_nn::ragged::RaggedOptions::default();
    let e = m
        .fit_padded(&x, &lengths, &ys, quiet().tbptt(2), ragged)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tbptt") && e.contains("ragged"), "{e}");
    assert_bitwise(&values(&m), &before);
    // Without tbptt the same models train.
    mean.fit(&x, &y1, quiet()).unwrap();
    bi.fit(&x, &ys, quiet()).unwrap();
}
