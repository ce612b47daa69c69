//! Scaling figures of eddy-dist: the bench workloads W2 and W4 (`crates/bench`: an LSTM, a
//! per-step `Linear(H→1)` head, MSE, Adam, float32) as data-parallel train steps over MPI.
//!
//! Each rank trains on its contiguous shard of the global batch (64 rows) and, inside the rank,
//! splits its shard over its rayon threads as `eddy-bench` does (one shard per thread up to
//! hidden size 512; at W4 one shard whose products use the threads). The gradients are summed
//! over the ranks by [`DataParallel`] (buckets reduced while the backward pass runs).
//!
//! Rank 0 prints the step time (the slowest rank's, median over the timed steps), the
//! throughput, the gradient bytes and buckets per step, how long the reductions were in flight
//! per step, how long the rank still waited for them after its backward pass (the part not
//! hidden behind it), and the same reductions timed alone, without a backward pass.
//!
//! ```sh
//! cd crates/dist && cargo build --release --bins
//! # 1 process × 2 threads against 2 processes × 1 thread:
//! mpirun -n 1 --bind-to none -x RAYON_NUM_THREADS=2 target/release/dist-bench W2 --steps 20
//! mpirun -n 2 --bind-to none -x RAYON_NUM_THREADS=1 target/release/dist-bench W2 --steps 20
//! ```
//!
//! `tiny` instead of `W2`/`W4` is a seconds-long smoke run of the same code; `W2L2` is W2 with
//! two LSTM layers, where the top layer's reduction can run behind the bottom layer's sweep
//! when it has a bucket of its own: `--bucket-mib 2` (the buckets after the first are capped at
//! 25 MiB by default, which puts both layers' weights, 3.7 MB, in one bucket that starts only
//! when the pass ends).

use eddy_dist::{BucketOptions, DataParallel, Dist};
use eddy_nn::loss::{mse, Reduction};
use eddy_nn::optim::{Adam, AdamConfig, Optimizer};
use eddy_nn::parallel::{data_parallel, shard_ranges};
use eddy_nn::{init, GradientSync, Linear, Module, RecurrentConfig};
use eddy_tape::{Error, Float, Grads, Result, Rng, Tape};
use mpi::collective::CommunicatorCollectives;
use ndarray::{ArrayD, Axis, Slice};
use std::time::Instant;

const USAGE: &str = "usage: dist-bench W2|W2L2|W4|tiny [--steps N] [--warmup N] [--bucket-mib N]
  run under mpirun; threads per rank from RAYON_NUM_THREADS";

/// The sizes of a workload (as in crates/bench/src/workloads.rs).
#[derive(Debug, Clone, Copy)]
struct Shape {
    input: usize,
    hidden: usize,
    batch: usize,
    steps: usize,
    layers: usize,
}

fn shape(id: &str) -> Option<Shape> {
    match id {
        "W2" => Some(Shape {
            input: 128,
            hidden: 256,
            batch: 64,
            steps: 100,
            layers: 1,
        }),
        // W2 with a second LSTM layer: the top layer's bucket can be reduced while the
        // bottom layer's reverse sweep runs (the overlap a one-layer model cannot show).
        "W2L2" => Some(Shape {
            input: 128,
            hidden: 256,
            batch: 64,
            steps: 100,
            layers: 2,
        }),
        "W4" => Some(Shape {
            input: 512,
            hidden: 1024,
            batch: 64,
            steps: 50,
            layers: 1,
        }),
        "tiny" => Some(Shape {
            input: 8,
            hidden: 16,
            batch: 8,
            steps: 10,
            layers: 1,
        }),
        _ => None,
    }
}

struct Args {
    id: String,
    steps: usize,
    warmup: usize,
    /// The cap of the buckets after the first, in MiB (PyTorch DDP's 25 by default).
    bucket_mib: usize,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        id: String::new(),
        steps: 20,
        warmup: 3,
        bucket_mib: 25,
    };
    while let Some(a) = it.next() {
        let mut number = |name: &str| -> std::result::Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--steps" => args.steps = number("--steps")?.max(1),
            "--warmup" => args.warmup = number("--warmup")?,
            "--bucket-mib" => args.bucket_mib = number("--bucket-mib")?.max(1),
            id if shape(id).is_some() && args.id.is_empty() => args.id = id.to_string(),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if args.id.is_empty() {
        return Err("which workload?".into());
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("dist-bench: {e}\n{USAGE}");
        std::process::exit(2)
    });
    let dist = Dist::init().unwrap_or_else(|e| {
        eprintln!("dist-bench: {e}");
        std::process::exit(1)
    });
    let report = run(&dist, &args);
    if let Some(lines) = dist.check(report) {
        println!("{lines}");
    }
}

/// Runs the workload on every rank; rank 0 gets the report.
fn run(dist: &Dist, args: &Args) -> Result<Option<String>> {
    let s = shape(&args.id).expect("checked by parse_args");
    let (rank, ranks) = (dist.rank(), dist.size());
    let threads = rayon::current_num_threads();
    if ranks > s.batch {
        return Err(Error::invalid(
            "dist-bench",
            format!("{ranks} ranks for a batch of {}", s.batch),
        ));
    }
    // The same seed on every rank: the same weights and data, no broadcast needed.
    let mut rng = Rng::seed(0);
    let rnn = RecurrentConfig::new(s.input, s.hidden)
        .num_layers(s.layers)
        .lstm::<f32>(&mut rng);
    let head = Linear::<f32>::new(rnn.output_size(), 1, &mut rng);
    let x: ArrayD<f32> = init::uniform(&[s.steps, s.batch, s.input], 1.0, &mut rng);
    let target: ArrayD<f32> = init::uniform(&[s.steps, s.batch, 1], 1.0, &mut rng);
    let mut params = rnn.param_list();
    params.extend(head.param_list());
    let mut opt = Adam::new(
        params.clone(),
        AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        },
    )?;
    let buckets = BucketOptions {
        bucket_bytes: args.bucket_mib << 20,
        ..BucketOptions::default()
    };
    let mut sync: DataParallel<f32> = dist.data_parallel(buckets);
    let mine = shard_ranges(s.batch, ranks)[rank].clone();
    let share = mine.len() as f64 / s.batch as f64;
    // Inside the rank: one shard per thread, except for hidden size 1024 (see eddy-bench).
    let shards = if s.hidden >= 1024 {
        1
    } else {
        threads.min(mine.len())
    };
    let loss_of = |rows: std::ops::Range<usize>, tape: &Tape<f32>| -> Result<_> {
        let xs = x.slice_axis(Axis(1), Slice::from(rows.clone())).to_owned();
        let ys = target.slice_axis(Axis(1), Slice::from(rows)).to_owned();
        let out = rnn.forward(&tape.constant(xs))?;
        let pred = head.forward(&out.output)?;
        mse(&pred, &tape.constant(ys), Reduction::Mean, None)
    };

    let mut last = Grads::default();
    let mut step = |sync: &mut DataParallel<f32>| -> Result<Grads<f32>> {
        let grads = if shards == 1 {
            let tape = Tape::new();
            let loss = loss_of(mine.clone(), &tape)?;
            sync.backward(Some((&loss, f32::of(share))), Grads::default(), &params)?
        } else {
            let base = mine.start;
            let (_, partial) = data_parallel(mine.len(), shards, |r, w| {
                let tape = Tape::new();
                let rows = base + r.start..base + r.end;
                let loss = loss_of(rows, &tape)?.scale(w * f32::of(share))?;
                Ok((loss.item()? as f64, loss.backward()?))
            })?;
            sync.backward(None, partial, &params)?
        };
        opt.step(&grads)?;
        Ok(grads)
    };

    for _ in 0..args.warmup {
        last = step(&mut sync)?;
    }
    sync.take_stats();
    let world = dist.world();
    let mut times = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        world.barrier();
        let start = Instant::now();
        last = step(&mut sync)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let stats = sync.take_stats();
    // The same reductions alone: the last step's gradients as every rank's part, no backward.
    let mut alone = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        world.barrier();
        let start = Instant::now();
        sync.backward(None, last.clone(), &params)?;
        alone.push(start.elapsed().as_secs_f64() * 1e3);
    }

    // The slowest rank sets each step's time.
    let mut all = vec![0.0f64; args.steps * ranks];
    world.all_gather_into(&times[..], &mut all[..]);
    let slowest: Vec<f64> = (0..args.steps)
        .map(|i| (0..ranks).map(|r| all[r * args.steps + i]).fold(0.0, f64::max))
        .collect();
    if rank != 0 {
        return Ok(None);
    }
    let (med, min, max) = summary(&slowest);
    let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / stats.steps.max(1) as f64;
    let (flight, waiting) = (per_step(stats.in_flight), per_step(stats.waiting));
    let hidden = if ranks > 1 && flight > 0.0 {
        format!("{:.0}%", 100.0 * (1.0 - waiting / flight).max(0.0))
    } else {
        "-".into()
    };
    let (alone_med, _, _) = summary(&alone);
    Ok(Some(format!(
        "dist-bench {id}: {ranks} rank(s) × {threads} thread(s), {l}-layer LSTM {i}→{h}, T {t}, global batch {b} \
         ({rows} rows on rank 0), {n} steps after {w} warm-up\n\
         step: median {med:.2} ms (min {min:.2}, max {max:.2}), {sps:.1} samples/s\n\
         gradients: {mb:.2} MB per step in {buckets} bucket(s); reductions in flight {flight:.3} ms/step, \
         waited after the backward pass {waiting:.3} ms/step ({hidden} hidden behind it); \
         {early:.1} bucket(s) per step finished before the pass's last gradient{thread}\n\
         reductions alone (no backward pass): median {alone_med:.3} ms/step",
        id = args.id,
        l = s.layers,
        i = s.input,
        h = s.hidden,
        t = s.steps,
        b = s.batch,
        rows = mine.len(),
        n = args.steps,
        w = args.warmup,
        sps = s.batch as f64 / (med / 1e3),
        mb = stats.bytes_per_step as f64 / 1e6,
        buckets = stats.buckets,
        early = stats.finished_in_backward as f64 / stats.steps.max(1) as f64,
        thread = if sync.threaded() {
            ""
        } else {
            " (no communication thread: MPI gave less than Serialized)"
        },
    )))
}

/// (median, min, max) of at least one sample.
fn summary(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (med, v[0], v[n - 1])
}
