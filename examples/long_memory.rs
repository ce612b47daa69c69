//! # Long memory: which cells remember across thousands of steps, and at what cost?
//!
//! **Question.** The recurrences researchers use now — minGRU and minLSTM (Feng et al. 2024),
//! Griffin's RG-LRU (De et al. 2024), xLSTM's sLSTM and mLSTM (Beck et al. 2024) — claim to
//! carry information across long sequences at least as well as the LSTM and GRU, and the
//! linear ones to train faster because their recurrence is a scan. Which of them learn two
//! long-memory tasks here, and what does each cost in seconds and memory?
//!
//! **Tasks.**
//! - *The adding problem* (Hochreiter & Schmidhuber 1997): two channels, a value in `[0, 1]` and
//!   a marker set at one step in each half; the target is the sum of the two marked values.
//!   Answering 1 always scores an MSE of `1/6 ≈ 0.167`.
//! - *Selective copying* (Gu & Dao 2023, the Mamba paper's synthetic task): `K` tokens from a
//!   vocabulary of `V` are scattered at random positions among blanks; in the last `K` steps a
//!   marker asks for them back, in order. Chance accuracy is `1/V`.
//!
//! Every model is the same stack: `Linear(input → H)`, one recurrent layer of `H` units, a
//! linear head (on the last step for adding, on the last `K` steps for copying); Adam, gradient
//! clipping, fresh random batches. An *epoch* here is `--epoch` batches.
//!
//! ```sh
//! cargo run --release --example long_memory                 # full run: T up to 4096, long
//! cargo run --release --example long_memory -- --quick      # T = 64, seconds (CI)
//! cargo run --release --example long_memory -- --lengths 256,1024 --cells mingru,lstm
//! ```

#[path = "common/mod.rs"]
mod common;

use common::*;
use eddy::nn::clip::clip_grad_norm;
use eddy::nn::loss::{cross_entropy, mse, Reduction};
use eddy::nn::optim::{Adam, AdamConfig, Optimizer};
use eddy::prelude::*;
use ndarray::ArrayD;

const USAGE: &str = "long_memory: LSTM, GRU, minGRU, minLSTM, RG-LRU, sLSTM, mLSTM on two long-memory tasks

flags:
  --lengths 256,1024,4096  sequence lengths T (quick: 64)
  --cells lstm,gru,mingru,minlstm,rglru,slstm,mlstm   which cells to train
  --tasks adding,copy      which tasks
  --epochs N               epochs per run (default 6; quick 2)
  --epoch N                batches per epoch (default 50; quick 20)
  --hidden N               hidden units, a multiple of 4 (default 64; quick 16)
  --batch N                sequences per batch (default 16)
  --lr X                   Adam learning rate (default 3e-3)
  --tokens K               tokens to copy (default 4)
  --vocab V                token vocabulary (default 8)
  --test N                 test sequences (default 256; quick 64)
  --seed N                 seed of data and weights (default 0)
  --out DIR                output folder (default out/long_memory)
  --quick                  small run for CI (also EDDY_QUICK=1)";

/// The knobs of one run, read from the flags.
#[derive(Clone)]
struct Setup {
    epochs: usize,
    epoch: usize,
    hidden: usize,
    batch: usize,
    lr: f64,
    tokens: usize,
    vocab: usize,
    test: usize,
    seed: u64,
}

fn main() -> AnyResult {
    let args = Args::parse("long_memory", USAGE);
    let quick = args.quick;
    let lengths: Vec<usize> = args.list("lengths", if quick { &[64] } else { &[256, 1024, 4096] });
    let s = Setup {
        epochs: args.get("epochs", if quick { 2 } else { 6 }),
        epoch: args.get("epoch", if quick { 20 } else { 50 }),
        hidden: args.get("hidden", if quick { 16 } else { 64 }),
        batch: args.get("batch", 16),
        lr: args.get("lr", 3e-3),
        tokens: args.get("tokens", 4),
        vocab: args.get("vocab", 8),
        test: args.get("test", if quick { 64 } else { 256 }),
        seed: args.get("seed", 0),
    };
    let kinds: Vec<Kind> = args
        .list("cells", &Kind::ALL.map(|k| k.flag().to_string()))
        .iter()
        .map(|n| Kind::parse(n))
        .collect::<AnyResult<_>>()?;
    let tasks: Vec<Task> = args
        .list("tasks", &["adding".to_string(), "copy".into()])
        .iter()
        .map(|n| Task::parse(n))
        .collect::<AnyResult<_>>()?;
    if !s.hidden.is_multiple_of(4) {
        return Err(format!(
            "--hidden {} must be a multiple of 4 (sLSTM and mLSTM use 4 heads)",
            s.hidden
        )
        .into());
    }
    if lengths.iter().any(|&t| t < 2 * s.tokens + 2) {
        return Err(format!(
            "every length must be at least {} for {} tokens",
            2 * s.tokens + 2,
            s.tokens
        )
        .into());
    }
    if quick {
        println!(
            "(quick mode: T = {lengths:?}, {} epochs of {} batches — too short to show who remembers)",
            s.epochs, s.epoch
        );
    }

    // -----------------------------------------------------------------------------------------
    step(1, "The tasks, on one short example each");
    let example = selective_copy(&mut Rng::seed(1), 1, 16, &s);
    let row: Vec<String> = (0..16)
        .map(|t| {
            if example.x[[t, 0, s.vocab + 1]] == 1.0 {
                "?".to_string()
            } else {
                let token = (0..=s.vocab).find(|&v| example.x[[t, 0, v]] == 1.0).unwrap_or(0);
                if token == 0 {
                    ".".into()
                } else {
                    token.to_string()
                }
            }
        })
        .collect();
    println!(
        "selective copy, T = 16 ('.' blank, '?' recall): {}",
        row.join(" ")
    );
    println!("  answer: {:?}", example.targets);
    let adding = adding_batch(&mut Rng::seed(2), 1, 16);
    let marked: Vec<String> = (0..16)
        .filter(|&t| adding.x[[t, 0, 1]] == 1.0)
        .map(|t| format!("t = {t}: {:.3}", adding.x[[t, 0, 0]]))
        .collect();
    println!(
        "adding, T = 16: marked {} → target {:.3}",
        marked.join(", "),
        adding.y[[0, 0]]
    );

    // -----------------------------------------------------------------------------------------
    step(2, "Train every cell on every task and length");
    println!(
        "{} hidden units, Adam lr {}, batch {}, {} epochs of {} batches, gradient norm clipped at 1; \
         runs one after another so each one's time and peak memory are its own.",
        s.hidden, s.lr, s.batch, s.epochs, s.epoch
    );
    let mut runs = Vec::new();
    for &task in &tasks {
        for &len in &lengths {
            let test = task.batch(&mut Rng::seed(1000 + len as u64), s.test, len, &s);
            for &kind in &kinds {
                let run = train(kind, task, len, &test, &s)?;
                println!(
                    "  {:<7} {:<6} T = {:<5} {} {:>7}   {:>8} s/epoch   peak RSS {}",
                    task.name(),
                    kind.name(),
                    len,
                    task.metric(),
                    sig(run.score, 3),
                    sig(run.seconds_per_epoch, 3),
                    run.peak_mib.map_or("—".to_string(), |m| format!("{m:.0} MiB")),
                );
                runs.push(run);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    step(3, "Who remembers, and at what cost");
    for &task in &tasks {
        println!("\n{} ({}; {})", task.name(), task.metric(), task.reference(&s));
        let mut header = vec!["cell".to_string()];
        for len in &lengths {
            header.push(format!("T = {len}"));
            header.push("s/epoch".into());
            header.push("peak MiB".into());
        }
        let header: Vec<&str> = header.iter().map(|h| h.as_str()).collect();
        let mut t = Table::new(&header);
        for &kind in &kinds {
            let mut row = vec![kind.name().to_string()];
            for &len in &lengths {
                let r = runs
                    .iter()
                    .find(|r| r.task == task && r.kind == kind && r.len == len)
                    .expect("a run");
                row.push(sig(r.score, 3));
                row.push(sig(r.seconds_per_epoch, 3));
                row.push(r.peak_mib.map_or("—".into(), |m| format!("{m:.0}")));
            }
            t.row(row);
        }
        t.print();
    }

    // -----------------------------------------------------------------------------------------
    step(4, "Plots: final score and cost against T");
    let mut panels = Vec::new();
    for &task in &tasks {
        let mut score = LinePlot::new(
            format!("{}: final {}", task.name(), task.metric()),
            "T",
            task.metric(),
        );
        let mut cost = LinePlot::new(
            format!("{}: seconds per epoch", task.name()),
            "T",
            "s per epoch (log)",
        )
        .log_y();
        for (c, &kind) in kinds.iter().enumerate() {
            let of = |f: &dyn Fn(&Run) -> f64| -> Vec<(f64, f64)> {
                lengths
                    .iter()
                    .filter_map(|&len| {
                        runs.iter()
                            .find(|r| r.task == task && r.kind == kind && r.len == len)
                    })
                    .map(|r| (r.len as f64, f(r)))
                    .collect()
            };
            score = score.series(Series::new(kind.name(), c, of(&|r| r.score)));
            cost = cost.series(Series::new(kind.name(), c, of(&|r| r.seconds_per_epoch)));
        }
        panels.push(score);
        panels.push(cost);
    }
    let path = args.out_file("long_memory.svg")?;
    save_panels(&path, "Long memory: who remembers, at what cost", &panels, 2)?;
    println!("wrote {}", path.display());
    args.finish();
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Lstm,
    Gru,
    MinGru,
    MinLstm,
    RgLru,
    Slstm,
    Mlstm,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Lstm,
        Kind::Gru,
        Kind::MinGru,
        Kind::MinLstm,
        Kind::RgLru,
        Kind::Slstm,
        Kind::Mlstm,
    ];

    fn flag(self) -> &'static str {
        ["lstm", "gru", "mingru", "minlstm", "rglru", "slstm", "mlstm"][self as usize]
    }

    fn name(self) -> &'static str {
        ["LSTM", "GRU", "minGRU", "minLSTM", "RG-LRU", "sLSTM", "mLSTM"][self as usize]
    }

    fn parse(name: &str) -> AnyResult<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.flag().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!(
                    "unknown cell {name:?}: expected one of lstm, gru, mingru, minlstm, rglru, slstm, mlstm"
                )
                .into()
            })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Task {
    Adding,
    Copy,
}

impl Task {
    fn parse(name: &str) -> AnyResult<Task> {
        match name {
            "adding" => Ok(Task::Adding),
            "copy" => Ok(Task::Copy),
            other => Err(format!("unknown task {other:?}: expected adding or copy").into()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Task::Adding => "adding",
            Task::Copy => "copy",
        }
    }

    fn metric(self) -> &'static str {
        match self {
            Task::Adding => "test MSE",
            Task::Copy => "test accuracy",
        }
    }

    fn reference(self, s: &Setup) -> String {
        match self {
            Task::Adding => "answering 1 scores 0.167; lower is better".into(),
            Task::Copy => format!("chance is {:.3}; higher is better", 1.0 / s.vocab as f64),
        }
    }

    fn input_size(self, s: &Setup) -> usize {
        match self {
            Task::Adding => 2,
            Task::Copy => s.vocab + 2,
        }
    }

    fn batch(self, rng: &mut Rng, n: usize, len: usize, s: &Setup) -> Data {
        match self {
            Task::Adding => {
                let b = adding_batch(rng, n, len);
                Data {
                    x: b.x,
                    y: b.y,
                    targets: Vec::new(),
                }
            }
            Task::Copy => selective_copy(rng, n, len, s),
        }
    }
}

/// A batch: inputs `[T, B, input]`, and the adding targets `[B, 1]` or the tokens to copy
/// (`B·K`, sequence-major, each `0..V`).
struct Data {
    x: ArrayD<f32>,
    y: ArrayD<f32>,
    targets: Vec<usize>,
}

/// Selective copying: `K` tokens (`1..=V`, one-hot channels `1..=V`; channel 0 is the blank) at
/// random distinct steps of the first `T − K`, then `K` recall steps (channel `V + 1`). The
/// targets are the tokens in order of position, as classes `0..V`.
fn selective_copy(rng: &mut Rng, n: usize, len: usize, s: &Setup) -> Data {
    let (k, v) = (s.tokens, s.vocab);
    let mut x = ArrayD::zeros(vec![len, n, v + 2]);
    let mut targets = Vec::with_capacity(n * k);
    for b in 0..n {
        let mut positions: Vec<usize> = Vec::with_capacity(k);
        while positions.len() < k {
            let p = rng.below(len - k);
            if !positions.contains(&p) {
                positions.push(p);
            }
        }
        positions.sort_unstable();
        for t in 0..len - k {
            x[[t, b, 0]] = 1.0;
        }
        for &p in &positions {
            let token = 1 + rng.below(v);
            x[[p, b, 0]] = 0.0;
            x[[p, b, token]] = 1.0;
            targets.push(token - 1);
        }
        for t in len - k..len {
            x[[t, b, v + 1]] = 1.0;
        }
    }
    Data {
        x,
        y: ArrayD::zeros(vec![0]),
        targets,
    }
}

/// What one training run leaves.
struct Run {
    task: Task,
    kind: Kind,
    len: usize,
    score: f64,
    seconds_per_epoch: f64,
    peak_mib: Option<f64>,
}

/// Builds the layer of `kind` (every cell maps `H` features to `H` units) and trains it.
fn train(kind: Kind, task: Task, len: usize, test: &Data, s: &Setup) -> AnyResult<Run> {
    let mut rng = Rng::seed(s.seed);
    let config = RecurrentConfig::new(s.hidden, s.hidden);
    let heads = 4;
    match kind {
        Kind::Lstm => fit(kind, task, len, config.lstm(&mut rng), test, s, rng),
        Kind::Gru => fit(kind, task, len, config.gru(&mut rng), test, s, rng),
        Kind::MinGru => {
            let layer = config.build(|i, h, r| MinGruCell::new(i, h, true, r), &mut rng);
            fit(kind, task, len, layer, test, s, rng)
        }
        Kind::MinLstm => {
            let layer = config.build(|i, h, r| MinLstmCell::new(i, h, true, r), &mut rng);
            fit(kind, task, len, layer, test, s, rng)
        }
        Kind::RgLru => {
            let layer = config.try_build(RgLruCell::new, &mut rng)?;
            fit(kind, task, len, layer, test, s, rng)
        }
        Kind::Slstm => {
            let layer = config.try_build(|i, h, r| SlstmCell::new(i, h, heads, r), &mut rng)?;
            fit(kind, task, len, layer, test, s, rng)
        }
        Kind::Mlstm => {
            let layer = config.try_build(|i, h, r| MlstmCell::new(i, h, heads, r), &mut rng)?;
            fit(kind, task, len, layer, test, s, rng)
        }
    }
}

/// The model: `Linear(input → H)`, the recurrent layer, a linear head.
struct Model<C: Cell<f32>> {
    embed: Linear<f32>,
    rnn: Recurrent<f32, C>,
    head: Linear<f32>,
}

impl<C: Cell<f32>> Model<C> {
    /// The loss of a batch, and the score (MSE, or accuracy) of its predictions.
    fn loss(&self, task: Task, tape: &Tape<f32>, data: &Data, s: &Setup) -> Result<(Var<f32>, f64)> {
        let x = self.embed.forward(&tape.constant(data.x.clone()))?;
        let out = self.rnn.forward(&x)?.output; // [T, B, H]
        let steps = out.shape()[0];
        match task {
            Task::Adding => {
                let y = self.head.forward(&out.select(0, steps - 1)?)?;
                let loss = mse(&y, &tape.constant(data.y.clone()), Reduction::Mean, None)?;
                let score = loss.item()? as f64;
                Ok((loss, score))
            }
            Task::Copy => {
                // The last K steps, sequence-major: [B, K, H] → [B·K, V].
                let k = s.tokens;
                let batch = out.shape()[1];
                let last = out
                    .narrow(0, steps - k, k)?
                    .transpose(0, 1)?
                    .reshape(&[batch * k, s.hidden])?;
                let logits = self.head.forward(&last)?;
                let loss = cross_entropy(&logits, &data.targets[..], Reduction::Mean, None)?;
                let right = logits
                    .value()
                    .rows()
                    .into_iter()
                    .zip(&data.targets)
                    .filter(|(row, &t)| {
                        let best =
                            row.iter()
                                .enumerate()
                                .fold((0, f32::MIN), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
                        best.0 == t
                    })
                    .count();
                Ok((loss, right as f64 / data.targets.len() as f64))
            }
        }
    }
}

/// The training loop: a fresh tape per batch, backward, clip, Adam; time and peak memory.
fn fit<C: Cell<f32>>(
    kind: Kind,
    task: Task,
    len: usize,
    rnn: Recurrent<f32, C>,
    test: &Data,
    s: &Setup,
    mut rng: Rng,
) -> AnyResult<Run> {
    let outputs = match task {
        Task::Adding => 1,
        Task::Copy => s.vocab,
    };
    let model = Model {
        embed: Linear::new(task.input_size(s), s.hidden, &mut rng),
        head: Linear::new(s.hidden, outputs, &mut rng),
        rnn,
    };
    let params: Vec<Param<f32>> = [
        model.embed.param_list(),
        model.rnn.param_list(),
        model.head.param_list(),
    ]
    .concat();
    let mut opt = Adam::new(
        params,
        AdamConfig {
            lr: s.lr,
            ..AdamConfig::default()
        },
    )?;
    let mut data_rng = Rng::seed(s.seed * 7919 + len as u64);
    reset_peak_rss();
    let start = std::time::Instant::now();
    for _ in 0..s.epochs * s.epoch {
        let batch = task.batch(&mut data_rng, s.batch, len, s);
        let tape = Tape::new();
        let (loss, _) = model.loss(task, &tape, &batch, s)?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, 1.0)?;
        opt.step(&grads)?;
    }
    let seconds_per_epoch = start.elapsed().as_secs_f64() / s.epochs as f64;
    let peak_mib = peak_rss_mib();
    let (_, score) = model.loss(task, &Tape::no_grad(), test, s)?;
    Ok(Run {
        task,
        kind,
        len,
        score,
        seconds_per_epoch,
        peak_mib,
    })
}

/// Resets the process's peak resident set (Linux: `5` to `/proc/self/clear_refs`), so that the
/// next reading is this run's own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set since the last reset, in MiB (`VmHWM`), where the system reports it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
