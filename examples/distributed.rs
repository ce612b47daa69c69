//! # The seed's forecast model on 1, 2 and 4 processes (MPI)
//!
//! The seed's Keras model (LSTM(50) → LSTM(50) → Dense(1), Adam(0.01), MSE, batches of 32) on
//! the monthly sunspot windows, trained data-parallel with `eddy::dist` (the `mpi` feature):
//! every rank holds a copy of the model, trains on its shard of each global batch of 32, and the
//! ranks sum their gradients before every step (see `docs/distributed.md`).
//!
//! The questions: how fast is it on more ranks (per-rank throughput, speed-up over one
//! process), and does it learn the same thing? With the same global batch it should: the loss
//! curves of 2 and 4 ranks must agree with the single-process run up to float rounding.
//!
//! ```sh
//! cargo build --release --features mpi --example distributed
//! mpirun -n 4 --oversubscribe -x RAYON_NUM_THREADS=1 target/release/examples/distributed
//! mpirun -n 4 --oversubscribe target/release/examples/distributed --quick   # seconds (CI)
//! mpirun -n 16 --hostfile hosts target/release/examples/distributed --ranks 1,4,16
//! ```
//! One launch trains on every rank count of `--ranks` up to the job's size (the first `k`
//! ranks train, the others wait); one rank trains with the ordinary single-process `fit`.
//! Flags: `--ranks LIST` (default 1,2,4), `--epochs N`, `--window N`, `--hidden N`,
//! `--batch N` (the global batch), `--threads N` (rayon threads per rank, default 1),
//! `--seed N`, `--out DIR`.

#[path = "common/mod.rs"]
mod common;

use common::{sig, step, AnyResult, LinePlot, Series, Table};
use eddy::dist::mpi::topology::{Color, SimpleCommunicator};
use eddy::dist::mpi::traits::*;
use eddy::dist::{BucketOptions, CommStats, DataParallel, Dist};
use eddy::nn::data::{window, Scaler, Targets, Window};
use eddy::nn::fit::{FitOptions, History};
use eddy::nn::parallel::shard_ranges;
use eddy::nn::sequential::{dense, lstm, Loss, Model, Optim, Sequential};
use eddy::prelude::*;
use ndarray::{s, ArrayD, Axis};
use std::time::{Duration, Instant};

const USAGE: &str = "distributed: the seed's forecast model trained on 1, 2 and 4 MPI ranks

  run it under mpirun: mpirun -n 4 --oversubscribe target/release/examples/distributed
  --ranks LIST     the rank counts to train on, each up to the job's size (default: 1,2,4)
  --epochs N       training epochs (default: 20)
  --window N       input window in months (default: 72)
  --hidden N       units per LSTM layer (default: 50, as the seed)
  --batch N        the global batch, split over the ranks (default: 32, as the seed)
  --threads N      rayon threads per rank (default: 1)
  --seed N         the random seed (default: 0)
  --out DIR        where the plot goes (default: out/distributed)
  --quick          a few seconds, for CI (also EDDY_QUICK=1)";

/// Relative agreement the loss curves must reach (float32; the runs here differ by ~1e-7).
const AGREE: f64 = 1e-3;

/// What one rank count's run gives rank 0.
struct Run {
    ranks: usize,
    history: History,
    seconds: f64,
    /// Rows per second of each rank.
    per_rank: Vec<f64>,
    comm: CommStats,
}

/// A barrier that sleeps while it waits: the ranks that sit out a run must not spin on the
/// cores the training ranks use (Open MPI's blocking calls poll).
fn quiet_barrier(world: &SimpleCommunicator) {
    let mut request = world.immediate_barrier();
    loop {
        match request.test() {
            Ok(_) => return,
            Err(r) => request = r,
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn build(hidden: usize, seed: u64) -> Result<Model<f32>> {
    let mut model = Sequential::new()
        .add(lstm(hidden).return_sequences(true))
        .add(lstm(hidden).return_sequences(true))
        .add(dense(1))
        .build(1, &mut Rng::seed(seed))?;
    model.compile(Optim::adam(0.01), Loss::Mse)?;
    Ok(model)
}

/// The rows rank `rank` of `ranks` trains on per epoch: its shard of every global batch.
fn rows_of(rank: usize, ranks: usize, rows: usize, batch: usize) -> usize {
    (0..rows)
        .step_by(batch)
        .map(|start| shard_ranges((rows - start).min(batch), ranks)[rank].len())
        .sum()
}

fn main() -> AnyResult {
    let args = common::Args::parse("distributed", USAGE);
    let dist = Dist::init()?;
    let (rank, size) = (dist.rank(), dist.size());
    let lead = rank == 0;
    let ranks: Vec<usize> = args.list("ranks", &[1, 2, 4]);
    let epochs: usize = if args.quick { 2 } else { args.get("epochs", 20) };
    let window_len: usize = if args.quick { 24 } else { args.get("window", 72) };
    let hidden: usize = if args.quick { 16 } else { args.get("hidden", 50) };
    let batch: usize = args.get("batch", 32);
    let threads: usize = args.get("threads", 1);
    let seed: u64 = args.get("seed", 0);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let say = |text: String| {
        if lead {
            println!("{text}");
        }
    };

    if lead {
        step(1, "The job");
    }
    let mut counts: Vec<usize> = ranks.iter().copied().filter(|&k| k >= 1 && k <= size).collect();
    counts.dedup();
    say(format!(
        "{size} rank(s), {threads} thread(s) each. Training on {counts:?} rank(s){}.",
        if counts.len() < ranks.len() {
            format!(" (of {ranks:?}: launch more ranks for the rest)")
        } else {
            String::new()
        }
    ));
    if counts.is_empty() {
        return Err(format!("none of --ranks {ranks:?} fits a job of {size} rank(s)").into());
    }

    if lead {
        step(2, "The data: sunspot windows, as examples/forecast.rs cuts them");
    }
    let series = common::sunspots()?;
    let n = series.len();
    let (train_end, val_end) = (n * 70 / 100, n * 85 / 100);
    let raw = ArrayD::from_shape_vec(vec![n], series.iter().map(|&v| v as f32).collect())?;
    let scaler = Scaler::min_max(&raw.slice(s![..train_end]).to_owned().into_dyn())?;
    let scaled = scaler.transform(&raw)?;
    let w = Window {
        input_len: window_len,
        horizon: 1,
        targets: Targets::Sequence,
    };
    let (x_all, y_all) = window(&scaled, &w)?;
    // A window belongs to the part its last input month is in, and its targets stay there.
    let origin = |i: usize| i + window_len - 1;
    let stride = if args.quick { 8 } else { 1 };
    let pick = |lo: usize, hi: usize, stride: usize| -> Vec<usize> {
        (0..x_all.shape()[0])
            .filter(|&i| origin(i) >= lo && origin(i) + 1 < hi)
            .step_by(stride)
            .collect()
    };
    let (train_rows, val_rows) = (pick(0, train_end, stride), pick(train_end, val_end, stride));
    let (x, y) = (
        x_all.select(Axis(0), &train_rows),
        y_all.select(Axis(0), &train_rows),
    );
    let (x_val, y_val) = (x_all.select(Axis(0), &val_rows), y_all.select(Axis(0), &val_rows));
    let rows = train_rows.len();
    say(format!(
        "{rows} training windows of {window_len} months, {} validation windows; global batch {batch}, {epochs} epochs.",
        val_rows.len()
    ));

    if lead {
        step(
            3,
            "Train on each rank count: the same model, seed and global batches",
        );
    }
    let world = dist.world();
    let mut runs: Vec<Run> = Vec::new();
    for &k in &counts {
        let color = if rank < k {
            Color::with_value(0)
        } else {
            Color::undefined()
        };
        let group = world.split_by_color(color);
        if let Some(group) = &group {
            let mut model = dist.check(build(hidden, seed));
            let options = FitOptions {
                epochs,
                batch_size: batch,
                validation_data: Some((&x_val, &y_val)),
                clip_grad_norm: Some(1.0),
                progress: false,
                ..FitOptions::default()
            };
            group.barrier();
            let start = Instant::now();
            let (history, comm) = if k == 1 {
                // The reference: the ordinary single-process `fit`.
                (dist.check(model.fit(&x, &y, options)), CommStats::default())
            } else {
                let mut sync: DataParallel<f32> = DataParallel::over(group, BucketOptions::default());
                let h = dist.check(model.fit_distributed(&x, &y, options, &mut sync));
                (h, sync.take_stats())
            };
            let seconds = start.elapsed().as_secs_f64();
            let mine = (rows_of(rank, k, rows, batch) * history.epoch.len()) as f64 / seconds;
            let mut per_rank = vec![0.0f64; k];
            group.all_gather_into(&mine, &mut per_rank[..]);
            if lead {
                println!(
                    "{k} rank(s): {} epochs in {:.2} s, final loss {}",
                    history.epoch.len(),
                    seconds,
                    sig(*history.loss.last().unwrap_or(&f64::NAN), 4)
                );
                runs.push(Run {
                    ranks: k,
                    history,
                    seconds,
                    per_rank,
                    comm,
                });
            }
        }
        quiet_barrier(world);
    }
    if !lead {
        return Ok(());
    }

    step(4, "Throughput and speed-up over one process");
    let one = runs[0].seconds;
    let mut table = Table::new(&[
        "ranks",
        "time (s)",
        "rows/s per rank",
        "rows/s in all",
        "speed-up",
        "allreduce ms/step",
        "hidden behind backward",
    ]);
    for r in &runs {
        let (lo, hi) = r
            .per_rank
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let steps = r.comm.steps.max(1) as f64;
        let flight = r.comm.in_flight.as_secs_f64() * 1e3 / steps;
        let waiting = r.comm.waiting.as_secs_f64() * 1e3 / steps;
        table.row(vec![
            r.ranks.to_string(),
            format!("{:.2}", r.seconds),
            if r.ranks == 1 {
                format!("{lo:.0}")
            } else {
                format!("{lo:.0}–{hi:.0}")
            },
            format!("{:.0}", r.per_rank.iter().sum::<f64>()),
            format!("{:.2}×", one / r.seconds),
            if r.ranks == 1 {
                "-".into()
            } else {
                format!("{flight:.3}")
            },
            if r.ranks == 1 || flight == 0.0 {
                "-".into()
            } else {
                format!("{:.0}%", 100.0 * (1.0 - waiting / flight).max(0.0))
            },
        ]);
    }
    table.print();
    println!(
        "\nEach rank computes 1/k of every batch, so the work per rank shrinks with k; the speed-up \
         also needs a core per rank (with more ranks than cores, as `--oversubscribe` on a small \
         machine allows, the ranks take turns and there is none). The model's parameters fit in \
         one gradient bucket, which starts only when the last gradient is final, near the end of \
         the backward pass: little of the reduction can hide behind it. Models of several MiB of \
         parameters fill several buckets that start earlier (crates/dist's dist-bench measures \
         W2 and W4)."
    );

    step(
        5,
        "Do the loss curves agree with one process on the same global batch?",
    );
    let reference = &runs[0].history;
    let rel = |a: &[f64], b: &[f64]| -> f64 {
        if a.len() != b.len() {
            return f64::INFINITY;
        }
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1e-12))
            .fold(0.0, f64::max)
    };
    let mut worst = 0.0f64;
    for r in &runs[1..] {
        let (dl, dv) = (
            rel(&r.history.loss, &reference.loss),
            rel(&r.history.val_loss, &reference.val_loss),
        );
        worst = worst.max(dl).max(dv);
        println!(
            "{} ranks: training loss within {} and validation loss within {} (relative) of one process, every epoch.",
            r.ranks,
            sig(dl, 2),
            sig(dv, 2)
        );
    }
    if runs.len() == 1 {
        println!("Only one rank count ran: launch with mpirun -n 2 or more to compare.");
    }
    if worst > AGREE {
        return Err(format!("the loss curves differ by {worst:e} (relative), more than {AGREE:e}").into());
    }
    println!(
        "They agree to float32 rounding: the ranks sum their shards' gradients into the global \
         batch's mean gradient, in a fixed order, and take the same Adam step."
    );

    let mut plot = LinePlot::new("training loss by rank count", "epoch", "MSE (scaled)").log_y();
    for (i, r) in runs.iter().enumerate() {
        let points = r
            .history
            .epoch
            .iter()
            .map(|&e| e as f64)
            .zip(r.history.loss.clone())
            .collect();
        let series = Series::new(format!("{} rank(s)", r.ranks), i, points);
        plot = plot.series(if i == 0 { series } else { series.dashed() });
    }
    let path = args.out_file("loss.svg")?;
    plot.save(&path)?;
    println!("Wrote {}.", path.display());
    args.finish();
    Ok(())
}
