//! The MPI test scenarios of eddy-dist, one per first argument; `tests/mpi.rs` launches them
//! under `mpirun`. Rank 0 prints `ok: …` when a scenario's checks pass; a failed check aborts
//! the job with a message.
//!
//! - `equal`: a small f64 LSTM trained on all ranks equals one process on the full global
//!   batch (to 1e-12), and every rank holds bit-identical parameters.
//! - `fail RANK` / `panic RANK`: that rank gives `fit` bad data / panics mid-training.
//! - `train DIR EPOCHS`: trains EPOCHS epochs, a checkpoint after each
//!   (`DIR/ckpt-{epoch}.safetensors`), and rank 0 writes `DIR/final-{ranks}.safetensors`.
//! - `resume DIR FROM EPOCHS FINAL`: resumes `DIR/ckpt-FROM.safetensors`, trains up to EPOCHS
//!   and compares with the weights file FINAL (to 1e-12).
//! - `overlap`: a two-layer LSTM whose top layer fills the first bucket; that bucket's
//!   reduction must finish while the bottom layer's reverse sweep computes (before the pass's
//!   last gradient report), which only the communication thread can make happen.

use eddy_dist::{BucketOptions, DataParallel, Dist};
use eddy_nn::checkpoint::float_tensors;
use eddy_nn::fit::{CheckpointEvery, EarlyStopping, History, Monitor};
use eddy_nn::io::TensorFile;
use eddy_nn::sequential::{dense, lstm, Loss, Model, Optim, Sequential};
use eddy_nn::{FitOptions, Module, SingleProcess};
use eddy_tape::{Error, Result, Rng};
use mpi::collective::CommunicatorCollectives;
use ndarray::{Array2, Array3, ArrayD};
use std::path::PathBuf;

const ROWS: usize = 26;
const VAL_ROWS: usize = 9;
const STEPS: usize = 5;
const FEATURES: usize = 3;

/// `(x, y)` of `n` windows starting at `offset`: a smooth signal, the target a mix of it.
fn data(n: usize, offset: usize) -> (ArrayD<f64>, ArrayD<f64>) {
    let x = Array3::from_shape_fn((n, STEPS, FEATURES), |(i, t, f)| {
        (0.37 * (i + offset) as f64 + 0.71 * t as f64 + 1.3 * f as f64).sin()
    });
    let y = Array2::from_shape_fn((n, 1), |(i, _)| {
        (0..STEPS)
            .map(|t| x[[i, t, 0]] * 0.3 - x[[i, t, 2]] * 0.1)
            .sum::<f64>()
    });
    (x.into_dyn(), y.into_dyn())
}

/// The same small model on every rank (same seed): an LSTM, a dense head, Adam.
fn model() -> Result<Model<f64>> {
    let mut m = Sequential::new()
        .add(lstm(6).return_sequences(true))
        .add(lstm(5))
        .add(dense(1))
        .build::<f64>(FEATURES, &mut Rng::seed(11))?;
    m.compile(Optim::adam(0.02), Loss::Mse)?;
    Ok(m)
}

/// Small buckets, so the model's gradients span several of them.
fn buckets() -> BucketOptions {
    BucketOptions {
        first_bucket_bytes: 256,
        bucket_bytes: 1024,
    }
}

fn options<'a>(epochs: usize, val: &'a (ArrayD<f64>, ArrayD<f64>)) -> FitOptions<'a, f64> {
    FitOptions {
        epochs,
        batch_size: 8,
        validation_data: Some((&val.0, &val.1)),
        early_stopping: Some(EarlyStopping {
            monitor: Monitor::ValLoss,
            patience: 10,
            ..EarlyStopping::default()
        }),
        clip_grad_norm: Some(5.0),
        progress: false,
        ..FitOptions::default()
    }
}

fn flat(m: &Model<f64>) -> Vec<f64> {
    m.param_list()
        .iter()
        .flat_map(|p| p.value().iter().copied().collect::<Vec<_>>())
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn ensure(dist: &Dist, ok: bool, what: String) {
    if !ok {
        dist.check::<()>(Err(Error::invalid("dist-check", what)));
    }
}

fn compare_histories(dist: &Dist, a: &History, b: &History) {
    ensure(
        dist,
        a.epoch == b.epoch,
        format!("epochs differ: {:?} vs {:?}", a.epoch, b.epoch),
    );
    for (name, x, y) in [("loss", &a.loss, &b.loss), ("val_loss", &a.val_loss, &b.val_loss)] {
        let d = max_diff(x, y);
        ensure(
            dist,
            x.len() == y.len() && d <= 1e-12,
            format!("{name} differs by {d:e}: {x:?} vs {y:?}"),
        );
    }
}

/// Every rank's parameters must have the same bits as rank 0's.
fn check_identical(dist: &Dist, params: &[f64]) {
    let n = params.len();
    let mut all = vec![0.0f64; n * dist.size()];
    dist.world().all_gather_into(params, &mut all[..]);
    for (r, row) in all.chunks_exact(n).enumerate() {
        let same = row.iter().zip(&all[..n]).all(|(a, b)| a.to_bits() == b.to_bits());
        ensure(dist, same, format!("rank {r}'s parameters differ from rank 0's"));
    }
}

fn equal(dist: &Dist) -> Result<()> {
    let (x, y) = data(ROWS, 0);
    let val = data(VAL_ROWS, 100);
    let mut sync: DataParallel<f64> = dist.data_parallel(buckets());
    let mut m = model()?;
    let h = m.fit_distributed(&x, &y, options(3, &val), &mut sync)?;
    check_identical(dist, &flat(&m));
    // One process on the full global batches.
    let mut reference = model()?;
    let hr = reference.fit(&x, &y, options(3, &val))?;
    compare_histories(dist, &h, &hr);
    let d = max_diff(&flat(&m), &flat(&reference));
    ensure(
        dist,
        d <= 1e-12,
        format!("parameters differ from one process by {d:e}"),
    );
    // Micro-batches of 3 rows on each rank: still the global batch's gradient.
    let mut micro = model()?;
    let mut o = options(2, &val);
    o.micro_batch_size = Some(3);
    micro.fit_distributed(&x, &y, o, &mut sync)?;
    check_identical(dist, &flat(&micro));
    let mut reference = model()?;
    reference.fit_distributed(&x, &y, options(2, &val), &mut SingleProcess)?;
    let d = max_diff(&flat(&micro), &flat(&reference));
    ensure(
        dist,
        d <= 1e-12,
        format!("micro-batched parameters differ from one process by {d:e}"),
    );
    let stats = sync.take_stats();
    if dist.rank() == 0 {
        println!(
            "ok: {} ranks equal one process (max difference {d:e}), bit-identical across ranks; \
             {} buckets, {} steps",
            dist.size(),
            stats.buckets,
            stats.steps
        );
    }
    Ok(())
}

fn fail(dist: &Dist, rank: usize, panic: bool) -> Result<()> {
    let (x, y) = data(ROWS, 0);
    let val = data(VAL_ROWS, 100);
    let mut sync: DataParallel<f64> = dist.data_parallel(buckets());
    let mut m = model()?;
    // Every rank trains a first epoch; then the chosen rank fails while the others go on.
    m.fit_distributed(&x, &y, options(1, &val), &mut sync)?;
    if dist.rank() == rank {
        if panic {
            panic!("dist-check: a deliberate panic on rank {rank}");
        }
        let bad_y = ArrayD::<f64>::zeros(vec![ROWS, 2]);
        m.fit_distributed(&x, &bad_y, options(1, &val), &mut sync)?;
    } else {
        m.fit_distributed(&x, &y, options(1, &val), &mut sync)?;
    }
    Ok(())
}

fn train(dist: &Dist, dir: PathBuf, epochs: usize) -> Result<()> {
    let (x, y) = data(ROWS, 0);
    let val = data(VAL_ROWS, 100);
    let mut sync: DataParallel<f64> = dist.data_parallel(buckets());
    let mut m = model()?;
    let mut o = options(epochs, &val);
    o.checkpoint = Some(CheckpointEvery {
        path: dir.join("ckpt-{epoch}.safetensors"),
        every: 1,
    });
    m.fit_distributed(&x, &y, o, &mut sync)?;
    if dist.rank() == 0 {
        m.save_weights(dir.join(format!("final-{}.safetensors", dist.size())))?;
        println!("ok: trained {epochs} epochs on {} ranks", dist.size());
    }
    Ok(())
}

fn resume(dist: &Dist, dir: PathBuf, from: usize, epochs: usize, fin: PathBuf) -> Result<()> {
    let (x, y) = data(ROWS, 0);
    let val = data(VAL_ROWS, 100);
    let mut sync: DataParallel<f64> = dist.data_parallel(buckets());
    let mut m = model()?;
    if dist.rank() == 0 {
        m.load_checkpoint(dir.join(format!("ckpt-{from}.safetensors")))?;
    }
    m.fit_distributed(&x, &y, options(epochs - from, &val), &mut sync)?;
    let want = float_tensors(&TensorFile::read(&fin)?);
    let mut worst = 0.0f64;
    for (name, p) in m.params() {
        let w = want
            .get(&name)
            .ok_or_else(|| Error::invalid("dist-check", format!("{fin:?} has no {name}")))?;
        let got: Vec<f64> = p.value().iter().copied().collect();
        let w: Vec<f64> = w.iter().copied().collect();
        worst = worst.max(max_diff(&got, &w));
    }
    ensure(
        dist,
        worst <= 1e-12,
        format!("the resumed run differs from {fin:?} by {worst:e}"),
    );
    if dist.rank() == 0 {
        println!(
            "ok: resumed epoch {from} on {} ranks, equal to the uninterrupted run (max difference {worst:e})",
            dist.size()
        );
    }
    Ok(())
}

/// The top layer's reduction runs behind the bottom layer's reverse sweep.
fn overlap(dist: &Dist) -> Result<()> {
    const ROWS: usize = 32;
    const T: usize = 200;
    const EPOCHS: usize = 6;
    let x = Array3::from_shape_fn((ROWS, T, FEATURES), |(i, t, f)| {
        (0.37 * i as f64 + 0.11 * t as f64 + 1.3 * f as f64).sin() as f32
    })
    .into_dyn();
    let y = ArrayD::<f32>::from_elem(vec![ROWS, 1], 0.5);
    // A wide bottom layer (a long reverse sweep, the end of the pass) under a narrow top one.
    let mut m = Sequential::new()
        .add(lstm(128).return_sequences(true))
        .add(lstm(4))
        .add(dense(1))
        .build::<f32>(FEATURES, &mut Rng::seed(3))?;
    m.compile(Optim::adam(1e-3), Loss::Mse)?;
    // The first bucket holds exactly the layers above the bottom one.
    let params = m.params();
    let bottom = params[0].0.split('.').next().unwrap_or_default().to_string();
    let top: usize = params
        .iter()
        .filter(|(name, _)| !name.starts_with(&format!("{bottom}.")))
        .map(|(_, p)| p.len())
        .sum();
    let options = BucketOptions {
        first_bucket_bytes: top * std::mem::size_of::<f32>(),
        ..BucketOptions::default()
    };
    let mut sync: DataParallel<f32> = dist.data_parallel(options);
    let o = FitOptions {
        epochs: EPOCHS,
        batch_size: ROWS,
        progress: false,
        ..FitOptions::default()
    };
    m.fit_distributed(&x, &y, o, &mut sync)?;
    let stats = sync.take_stats();
    ensure(
        dist,
        sync.threaded(),
        "no communication thread: MPI gave less than Serialized".into(),
    );
    ensure(
        dist,
        stats.buckets == 2 && stats.steps == EPOCHS,
        format!("expected 2 buckets and {EPOCHS} steps: {stats:?}"),
    );
    // Rank skew could delay a step's top bucket past the sweep now and then; most must not.
    ensure(
        dist,
        2 * stats.finished_in_backward >= stats.steps,
        format!("the top layer's reduction did not finish behind the bottom layer's sweep: {stats:?}"),
    );
    if dist.rank() == 0 {
        println!(
            "ok: {} of {} steps finished the top layer's reduction behind the bottom layer's sweep \
             (in flight {:?}, waited {:?} after the backward passes)",
            stats.finished_in_backward, stats.steps, stats.in_flight, stats.waiting
        );
    }
    Ok(())
}

fn main() {
    let dist = match Dist::init() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("dist-check: {e}");
            std::process::exit(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> String {
        args.get(i).cloned().unwrap_or_else(|| {
            dist.check::<String>(Err(Error::invalid("dist-check", format!("missing argument {i}"))))
        })
    };
    let num = |i: usize| -> usize {
        let a = arg(i);
        dist.check(
            a.parse()
                .map_err(|_| Error::invalid("dist-check", format!("not a number: {a}"))),
        )
    };
    let result = match arg(0).as_str() {
        "equal" => equal(&dist),
        "fail" => fail(&dist, num(1), false),
        "panic" => fail(&dist, num(1), true),
        "train" => train(&dist, arg(1).into(), num(2)),
        "overlap" => overlap(&dist),
        "resume" => resume(&dist, arg(1).into(), num(2), num(3), arg(4).into()),
        other => Err(Error::invalid(
            "dist-check",
            format!("unknown scenario {other:?}"),
        )),
    };
    dist.check(result);
}
