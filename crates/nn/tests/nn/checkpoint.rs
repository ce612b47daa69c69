//! Training checkpoints: resuming is bit-for-bit, writes are atomic under an injected crash,
//! and corrupt or foreign files are clear errors that change nothing.

use crate::support::tmp_dir;
use eddy_nn::checkpoint::training_bytes;
use eddy_nn::fit::{CheckpointEvery, EarlyStopping, FitOptions, Monitor};
use eddy_nn::io::{self, Entry};
use eddy_nn::schedule::StepLr;
use eddy_nn::sequential::{dense, dropout, gru, lstm, Loss, Model, Optim, Sequential};
use eddy_nn::Module;
use eddy_tape::{Error, Rng};
use ndarray::ArrayD;
use std::collections::HashMap;

fn data() -> (ArrayD<f32>, ArrayD<f32>) {
    let mut rng = Rng::seed(11);
    let x = ArrayD::from_shape_fn(vec![40, 6, 2], |_| rng.uniform_in(-1.0, 1.0) as f32);
    let y = ArrayD::from_shape_fn(vec![40, 1], |ix| x[[ix[0], 5, 0]] * x[[ix[0], 4, 1]]);
    (x, y)
}

/// Dropout (plain and recurrent), a schedule and Adam: every piece of state a resume needs.
fn model(seed: u64, hidden: usize) -> Model<f32> {
    let mut rng = Rng::seed(seed);
    let mut m = Sequential::new()
        .add(lstm(hidden).return_sequences(true).recurrent_dropout(0.2))
        .add(dropout(0.2))
        .add(gru(5))
        .add(dense(1))
        .build::<f32>(2, &mut rng)
        .unwrap();
    m.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    m.set_schedule(|opt| StepLr::new(opt, 2, 0.7)).unwrap();
    m
}

fn opts<'a>(epochs: usize, vx: &'a ArrayD<f32>, vy: &'a ArrayD<f32>) -> FitOptions<'a, f32> {
    FitOptions {
        epochs,
        batch_size: 8,
        validation_data: Some((vx, vy)),
        progress: false,
        ..FitOptions::default()
    }
}

fn values(m: &Model<f32>) -> Vec<(String, ArrayD<f32>)> {
    m.params()
        .into_iter()
        .map(|(n, p)| (n, (*p.value()).clone()))
        .collect()
}

#[test]
fn resuming_from_a_checkpoint_is_bit_for_bit() {
    let dir = tmp_dir("ckpt", "resume");
    let (x, y) = data();
    let (vx, vy) = (x.clone(), y.clone());
    let (n, k) = (7, 3);

    let mut straight = model(1, 6);
    let h_straight = straight.fit(&x, &y, opts(n, &vx, &vy)).unwrap();

    let mut first = model(1, 6);
    first.fit(&x, &y, opts(k, &vx, &vy)).unwrap();
    let path = dir.join("ckpt.safetensors");
    first.save_checkpoint(&path).unwrap();
    drop(first);

    // A fresh model from another seed: everything must come from the file.
    let mut resumed = model(99, 6);
    resumed.load_checkpoint(&path).unwrap();
    assert_eq!(resumed.epoch(), k);
    let h_resumed = resumed.fit(&x, &y, opts(n - k, &vx, &vy)).unwrap();

    assert_eq!(h_resumed.epoch, (k + 1..=n).collect::<Vec<_>>());
    assert_eq!(h_resumed.loss[..], h_straight.loss[k..]);
    assert_eq!(h_resumed.val_loss[..], h_straight.val_loss[k..]);
    assert_eq!(h_resumed.lr[..], h_straight.lr[k..]);
    let (a, b) = (values(&straight), values(&resumed));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(va == vb, "{na} differs after resuming");
    }
    assert_eq!(straight.rng(), resumed.rng());
    assert_eq!(
        straight.optimizer().unwrap().state(),
        resumed.optimizer().unwrap().state()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_crash_half_way_through_a_save_leaves_the_previous_checkpoint() {
    let dir = tmp_dir("ckpt", "fault");
    let (x, y) = data();
    let path = dir.join("ckpt.safetensors");
    let mut m = model(2, 6);
    m.fit(&x, &y, opts(1, &x, &y)).unwrap();
    m.save_checkpoint(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let saved = values(&m);

    m.fit(&x, &y, opts(1, &x, &y)).unwrap();
    let e = m
        .save_checkpoint_with_fault(&path, Some(good.len() / 2))
        .unwrap_err();
    assert!(e.to_string().contains("injected fault"), "{e}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "the previous checkpoint is untouched"
    );

    let mut fresh = model(3, 6);
    fresh.load_checkpoint(&path).unwrap();
    assert_eq!(fresh.epoch(), 1);
    assert_eq!(values(&fresh), saved);

    // The failed save removed its temporary file; the next save works.
    m.save_checkpoint(&path).unwrap();
    fresh.load_checkpoint(&path).unwrap();
    assert_eq!(fresh.epoch(), 2);
    assert_eq!(values(&fresh), values(&m));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Loading `bytes` fails with a message containing `needle`, changes neither the model nor the
/// good checkpoint beside it.
fn assert_rejected(dir: &std::path::Path, name: &str, bytes: &[u8], needle: &str) {
    let good_path = dir.join("good.safetensors");
    let good = std::fs::read(&good_path).unwrap();
    let bad = dir.join(name);
    std::fs::write(&bad, bytes).unwrap();
    let mut m = model(5, 6);
    let before = values(&m);
    let optim_before = m.optimizer().unwrap().state();
    let errs: Vec<Error> = vec![
        m.load_checkpoint(&bad).unwrap_err(),
        m.load_weights(&bad).unwrap_err(),
    ];
    for e in errs {
        assert!(matches!(e.root(), Error::File { .. }), "{name}: {e:?}");
        assert!(e.to_string().contains(needle), "{name}: {e}");
    }
    assert_eq!(values(&m), before, "{name}: the model changed");
    assert_eq!(m.optimizer().unwrap().state(), optim_before);
    assert_eq!(m.epoch(), 0);
    assert_eq!(std::fs::read(&good_path).unwrap(), good);
}

#[test]
fn corrupt_and_foreign_files_are_clear_errors() {
    let dir = tmp_dir("ckpt", "corrupt");
    let (x, y) = data();
    let mut m = model(4, 6);
    m.fit(&x, &y, opts(1, &x, &y)).unwrap();
    let good_path = dir.join("good.safetensors");
    m.save_checkpoint(&good_path).unwrap();
    let good = std::fs::read(&good_path).unwrap();

    assert_rejected(
        &dir,
        "truncated",
        &good[..good.len() / 2],
        "not a valid safetensors file",
    );
    assert_rejected(&dir, "header-only", &good[..8], "not a valid safetensors file");
    assert_rejected(&dir, "empty", &[], "not a valid safetensors file");
    let mut rng = Rng::seed(0);
    let garbage: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    assert_rejected(&dir, "garbage", &garbage, "not a valid safetensors file");
    let mut huge = (1u64 << 40).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert_rejected(&dir, "huge-header", &huge, "not a valid safetensors file");
    let mut flipped = good.clone();
    flipped[12] ^= 0x5a; // inside the JSON header
    assert_rejected(&dir, "flipped", &flipped, "");

    // Files of other models.
    let save = |other: Model<f32>, name: &str| {
        let p = dir.join(name);
        other.save_checkpoint(&p).unwrap();
        std::fs::read(p).unwrap()
    };
    assert_rejected(
        &dir,
        "wider",
        &save(model(4, 7), "w"),
        "has shape [28, 2], the model expects [24, 2]",
    );
    let mut r = Rng::seed(0);
    let mut fewer = Sequential::new()
        .add(lstm(6).return_sequences(true))
        .add(dropout(0.2))
        .add(gru(5))
        .build::<f32>(2, &mut r)
        .unwrap();
    fewer.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    fewer.set_schedule(|opt| StepLr::new(opt, 2, 0.7)).unwrap();
    assert_rejected(
        &dir,
        "fewer",
        &save(fewer, "f"),
        "missing tensor \"layers.3.weight\"",
    );
    let mut more = Sequential::new()
        .add(lstm(6).return_sequences(true))
        .add(dropout(0.2))
        .add(gru(5))
        .add(dense(1))
        .add(dense(1))
        .build::<f32>(2, &mut r)
        .unwrap();
    more.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    more.set_schedule(|opt| StepLr::new(opt, 2, 0.7)).unwrap();
    assert_rejected(
        &dir,
        "more",
        &save(more, "m"),
        "unexpected tensor \"layers.4.bias\"",
    );

    // A parameter stored as integers.
    let params: Vec<(String, ArrayD<f32>)> = values(&m);
    let ints = ArrayD::<i64>::zeros(params[0].1.shape());
    let mut entries: Vec<(String, Entry<'_>)> = vec![(params[0].0.clone(), Entry::I64(&ints))];
    entries.extend(params[1..].iter().map(|(n, v)| (n.clone(), Entry::F32(v))));
    let rng = ArrayD::<i64>::from_elem(vec![4], 1);
    let lr = ArrayD::<f64>::from_elem(vec![], 0.01);
    let schedule = ArrayD::<f64>::from_shape_vec(vec![2], vec![1.0, 0.01]).unwrap();
    entries.push(("train.rng".into(), Entry::I64(&rng)));
    entries.push(("train.optim_scalar.lr".into(), Entry::F64(&lr)));
    entries.push(("train.schedule".into(), Entry::F64(&schedule)));
    let meta = HashMap::from([
        ("format".to_string(), "eddy-training-checkpoint".to_string()),
        ("epoch".to_string(), "1".to_string()),
        ("optimizer".to_string(), "Adam".to_string()),
    ]);
    let bytes = io::to_bytes(&entries, &meta).unwrap();
    assert_rejected(&dir, "int", &bytes, "has dtype I64, expected a float dtype");

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn training_state_mismatches_are_errors_that_roll_back() {
    let dir = tmp_dir("ckpt", "mismatch");
    let (x, y) = data();
    let mut m = model(4, 6);
    m.fit(&x, &y, opts(2, &x, &y)).unwrap();
    let ckpt = dir.join("adam.safetensors");
    m.save_checkpoint(&ckpt).unwrap();
    let weights = dir.join("weights.safetensors");
    m.save_weights(&weights).unwrap();

    // Another optimizer: the parameters, loaded first, are rolled back.
    let mut sgd = model(5, 6);
    sgd.compile(Optim::sgd(0.1), Loss::Mse).unwrap();
    sgd.set_schedule(|opt| StepLr::new(opt, 2, 0.7)).unwrap();
    let before = values(&sgd);
    let e = sgd.load_checkpoint(&ckpt).unwrap_err();
    assert!(e.to_string().contains("optimizer state"), "{e}");
    assert_eq!(values(&sgd), before);
    assert_eq!(sgd.epoch(), 0);

    // No schedule in the model, one in the file.
    let mut plain = model(5, 6);
    plain.compile(Optim::adam(0.01), Loss::Mse).unwrap();
    let e = plain.load_checkpoint(&ckpt).unwrap_err();
    assert!(e.to_string().contains("schedule"), "{e}");

    // A weights file is not a training checkpoint, but its weights load.
    let e = plain.load_checkpoint(&weights).unwrap_err();
    assert!(e.to_string().contains("not a training checkpoint"), "{e}");
    plain.load_weights(&weights).unwrap();
    assert_eq!(values(&plain), values(&m));
    // The weights of a training checkpoint load too.
    let other = model(6, 6);
    other.load_weights(&ckpt).unwrap();
    assert_eq!(values(&other), values(&m));

    // Missing file; uncompiled model; a directory that does not exist.
    let e = plain.load_checkpoint(dir.join("nope.safetensors")).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
    let mut r = Rng::seed(0);
    let mut bare = Sequential::new().add(lstm(2)).build::<f32>(2, &mut r).unwrap();
    assert!(bare.save_checkpoint(dir.join("x")).is_err());
    assert!(bare.load_checkpoint(&ckpt).is_err());
    assert!(m.save_checkpoint(dir.join("no/such/dir/x.safetensors")).is_err());

    // A tampered training tensor.
    let mut state = m.training_state().unwrap();
    state
        .optimizer
        .buffers
        .insert("0.exp_avg".into(), ArrayD::zeros(vec![3]));
    let p = dir.join("tampered.safetensors");
    std::fs::write(&p, training_bytes(&m, &state).unwrap()).unwrap();
    let mut fresh = model(7, 6);
    let before = values(&fresh);
    assert!(fresh.load_checkpoint(&p).is_err());
    assert_eq!(values(&fresh), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn out_of_range_training_state_is_an_error_naming_the_field() {
    let dir = tmp_dir("ckpt", "range");
    let (x, y) = data();
    let mut m = model(4, 6);
    m.fit(&x, &y, opts(1, &x, &y)).unwrap();
    let good = m.training_state().unwrap();
    type Edit = Box<dyn Fn(&mut eddy_nn::checkpoint::TrainingState)>;
    let scalar = |key: &'static str, v: f64| -> Edit {
        Box::new(move |s| {
            assert!(s.optimizer.scalars.contains_key(key), "{key}");
            s.optimizer.scalars.insert(key.into(), v);
        })
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "step 2^64",
            scalar("0.step", 2f64.powi(64)),
            "step count \"0.step\"",
        ),
        ("step 1e300", scalar("3.step", 1e300), "step count \"3.step\""),
        ("step -1", scalar("0.step", -1.0), "step count \"0.step\""),
        ("step 1.5", scalar("0.step", 1.5), "step count \"0.step\""),
        (
            "lr NaN",
            scalar("lr", f64::NAN),
            "scalar \"lr\" must be finite and >= 0, got NaN",
        ),
        (
            "lr -1",
            scalar("lr", -1.0),
            "scalar \"lr\" must be finite and >= 0, got -1",
        ),
        (
            "lr inf",
            scalar("lr", f64::INFINITY),
            "scalar \"lr\" must be finite and >= 0, got inf",
        ),
        (
            "epoch u64::MAX",
            Box::new(|s| s.epoch = usize::MAX),
            "metadata \"epoch\" must be a whole number in [0, 2^53], got \"18446744073709551615\"",
        ),
        (
            "rng zeros",
            Box::new(|s| s.rng = [0; 4]),
            "tensor \"train.rng\" is all zeros",
        ),
    ];
    for (name, edit, needle) in cases {
        let mut state = good.clone();
        edit(&mut state);
        let p = dir.join(format!("{}.safetensors", name.replace(' ', "_")));
        std::fs::write(&p, training_bytes(&m, &state).unwrap()).unwrap();
        let mut fresh = model(7, 6);
        let before = values(&fresh);
        let e = fresh.load_checkpoint(&p).unwrap_err();
        assert!(e.to_string().contains(needle), "{name}: {e}");
        assert_eq!(values(&fresh), before, "{name}: the model changed");
        assert_eq!(fresh.epoch(), 0, "{name}");
        // The model still trains after the refused load.
        fresh.fit(&x, &y, opts(1, &x, &y)).unwrap();
    }
    // The largest valid counts load, and training counts on from them without overflow.
    let mut state = good.clone();
    state.epoch = 1 << 53;
    state.optimizer.scalars.insert("0.step".into(), 2f64.powi(53));
    let p = dir.join("max.safetensors");
    std::fs::write(&p, training_bytes(&m, &state).unwrap()).unwrap();
    let mut fresh = model(7, 6);
    fresh.load_checkpoint(&p).unwrap();
    let h = fresh.fit(&x, &y, opts(1, &x, &y)).unwrap();
    assert_eq!(h.epoch, vec![(1 << 53) + 1]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Early stopping on the validation loss of held-out data, with restored best weights.
fn early_opts<'a>(
    epochs: usize,
    vx: &'a ArrayD<f32>,
    vy: &'a ArrayD<f32>,
    checkpoint: Option<CheckpointEvery>,
) -> FitOptions<'a, f32> {
    FitOptions {
        early_stopping: Some(EarlyStopping {
            monitor: Monitor::ValLoss,
            patience: 3,
            min_delta: 1e-3,
            restore_best_weights: true,
        }),
        checkpoint,
        ..opts(epochs, vx, vy)
    }
}

#[test]
fn a_resumed_run_stops_early_at_the_same_epoch_with_the_same_weights() {
    let dir = tmp_dir("ckpt", "early");
    let (x, y) = data();
    let (x, y, vx, vy) = (
        x.slice_axis(ndarray::Axis(0), (..24).into()).to_owned(),
        y.slice_axis(ndarray::Axis(0), (..24).into()).to_owned(),
        x.slice_axis(ndarray::Axis(0), (24..).into()).to_owned(),
        y.slice_axis(ndarray::Axis(0), (24..).into()).to_owned(),
    );
    let max = 60;
    let mut straight = model(2, 6);
    let h_straight = straight.fit(&x, &y, early_opts(max, &vx, &vy, None)).unwrap();
    let stopped = h_straight.stopped_epoch.expect("early stopping fires");
    let best = h_straight.best_epoch.expect("a best epoch");
    assert!(stopped > 4 && best < stopped, "stopped {stopped}, best {best}");

    // Interrupted after epoch k (a checkpoint every epoch, max epochs k), then resumed from the
    // checkpoint file in a fresh model: mid-patience (k = stopped − 1) and early on.
    for k in [2, stopped - 1] {
        let every = CheckpointEvery {
            path: dir.join("ckpt-{epoch}.safetensors"),
            every: 1,
        };
        let mut first = model(2, 6);
        let h_first = first
            .fit(&x, &y, early_opts(k, &vx, &vy, Some(every.clone())))
            .unwrap();
        assert_eq!(h_first.stopped_epoch, None);
        drop(first);
        let mut resumed = model(99, 6);
        resumed.load_checkpoint(every.path_for(k)).unwrap();
        let h = resumed.fit(&x, &y, early_opts(max - k, &vx, &vy, None)).unwrap();
        assert_eq!(h.stopped_epoch, Some(stopped), "k = {k}");
        assert_eq!(h.best_epoch, Some(best), "k = {k}");
        assert_eq!(h.val_loss[..], h_straight.val_loss[k..], "k = {k}");
        assert_eq!(h.loss[..], h_straight.loss[k..], "k = {k}");
        assert_eq!(
            values(&resumed),
            values(&straight),
            "k = {k}: the restored best weights"
        );
        assert_eq!(resumed.rng(), straight.rng());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn early_stopping_counters_in_a_checkpoint_are_validated() {
    let dir = tmp_dir("ckpt", "early-range");
    let (x, y) = data();
    let mut m = model(4, 6);
    m.fit(&x, &y, early_opts(2, &x, &y, None)).unwrap();
    let good = m.training_state().unwrap();
    let early = good
        .early_stopping
        .clone()
        .expect("counters of the run under way");
    assert_eq!(
        early.best_weights.as_ref().map(|w| w.len()),
        Some(m.params().len())
    );
    type Edit = Box<dyn Fn(&mut eddy_nn::checkpoint::EarlyStoppingState)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "best NaN",
            Box::new(|e| e.best = f64::NAN),
            "the best value must not be NaN",
        ),
        (
            "wait 2^60",
            Box::new(|e| e.wait = 1 << 60),
            "the epochs without improvement must be a whole number",
        ),
        (
            "best epoch after the epoch",
            Box::new(|e| e.best_epoch = Some(3)),
            "the best epoch must be a whole number in [0, 2]",
        ),
        (
            "a best weight's shape",
            Box::new(|e| {
                let w = e.best_weights.as_mut().unwrap();
                w.insert("layers.3.bias".into(), ArrayD::zeros(vec![2]));
            }),
            "\"train.early_best.layers.3.bias\" has shape [2], the parameter [1]",
        ),
        (
            "a missing best weight",
            Box::new(|e| {
                e.best_weights.as_mut().unwrap().remove("layers.3.bias");
            }),
            "early stopping's best weights",
        ),
    ];
    for (name, edit, needle) in cases {
        let mut state = good.clone();
        edit(state.early_stopping.as_mut().unwrap());
        let p = dir.join(format!("{}.safetensors", name.replace(' ', "_")));
        std::fs::write(&p, training_bytes(&m, &state).unwrap()).unwrap();
        let mut fresh = model(7, 6);
        let before = values(&fresh);
        let e = fresh.load_checkpoint(&p).unwrap_err();
        assert!(e.to_string().contains(needle), "{name}: {e}");
        assert_eq!(values(&fresh), before, "{name}: the model changed");
    }
    // The good state round-trips through the file.
    let p = dir.join("good.safetensors");
    m.save_checkpoint(&p).unwrap();
    let mut fresh = model(7, 6);
    fresh.load_checkpoint(&p).unwrap();
    assert_eq!(fresh.training_state().unwrap(), good);
    std::fs::remove_dir_all(&dir).unwrap();
}
