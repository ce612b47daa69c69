//! # How many hidden units? Rolling-origin cross-validation on the sunspot series
//!
//! **Question.** The seed's FAQ: "the number of hidden units is an important hyper-parameter;
//! choose it by cross-validation." For a time series, ordinary k-fold cross-validation leaks
//! the future into the past, so we use *rolling-origin* (forward-chaining) validation: fold
//! `k` trains on everything before an origin `o_k` and validates on the block that follows it;
//! the origins move forward fold by fold.
//!
//! ```text
//! fold 1: [== train ==========][val]
//! fold 2: [== train ===============][val]
//! fold 3: [== train ====================][val]
//! ```
//!
//! **Data.** Monthly mean sunspot numbers 1749–2009 (`data/sunspots_monthly.csv`). Inputs are
//! windows of the last `W` months, the target is the next month; values are divided by the
//! maximum of the data before the first origin (known to every fold, so nothing leaks).
//!
//! **Model.** LSTM(1 → H) → Linear(H → 1) on the last hidden state, Adam (lr 0.01 as in the
//! seed's Keras model), MSE. Every (H, fold) pair is an independent job on rayon's thread
//! pool: parameters are `Send + Sync`, each job owns its model and builds its own tapes.
//!
//! ```sh
//! cargo run --release --example hidden_size_search                # a few minutes
//! cargo run --release --example hidden_size_search -- --quick     # seconds (CI)
//! cargo run --release --example hidden_size_search -- --sizes 8,16,32 --folds 5 --steps 800
//! ```

#[path = "common/mod.rs"]
mod common;

use common::*;
use eddy::nn::clip::clip_grad_norm;
use eddy::nn::loss::{mse, Reduction};
use eddy::nn::optim::{Adam, AdamConfig, Optimizer};
use eddy::prelude::*;
use rayon::prelude::*;

const USAGE: &str = "hidden_size_search: rolling-origin cross-validation of the LSTM's hidden size

flags:
  --sizes 4,8,16,32,64   hidden sizes to compare (quick: 4,16)
  --folds K              rolling-origin folds (default 4; quick 2)
  --val-len N            months in each validation block (default 240)
  --window W             months of history per input window (default 24)
  --steps N              training steps per fold (default 600; quick 60)
  --batch N              windows per step (default 64)
  --lr X                 Adam learning rate (default 0.01)
  --seed N               seed (default 0)
  --out DIR              output folder (default out/hidden_size_search)
  --quick                small run for CI (also EDDY_QUICK=1)";

#[derive(Clone)]
struct Setup {
    window: usize,
    steps: usize,
    batch: usize,
    lr: f64,
    seed: u64,
}

/// One fold: train on windows whose target is before `origin`, validate on `origin..end`.
#[derive(Clone, Copy)]
struct Fold {
    origin: usize,
    end: usize,
}

fn main() -> AnyResult {
    let args = Args::parse("hidden_size_search", USAGE);
    let quick = args.quick;
    let sizes: Vec<usize> = args.list("sizes", if quick { &[4, 16] } else { &[4, 8, 16, 32, 64] });
    let folds: usize = args.get("folds", if quick { 2 } else { 4 });
    let val_len: usize = args.get("val-len", 240);
    let s = Setup {
        window: args.get("window", 24),
        steps: args.get("steps", if quick { 60 } else { 600 }),
        batch: args.get("batch", 64),
        lr: args.get("lr", 0.01),
        seed: args.get("seed", 0),
    };

    // -----------------------------------------------------------------------------------------
    step(1, "Load and scale the series");
    let raw = sunspots()?;
    let n = raw.len();
    let first_origin = n
        .checked_sub(folds * val_len)
        .ok_or("--folds × --val-len exceeds the series")?;
    let scale = raw[..first_origin].iter().cloned().fold(0.0, f64::max);
    let series: Vec<f64> = raw.iter().map(|v| v / scale).collect();
    println!(
        "{n} months (1749-01 … 2009-06), range {:.1} … {:.1}; scaled by 1/{scale:.1} (the maximum before the first origin).",
        raw.iter().cloned().fold(f64::INFINITY, f64::min),
        raw.iter().cloned().fold(0.0, f64::max)
    );

    // -----------------------------------------------------------------------------------------
    step(2, "The folds");
    let folds: Vec<Fold> = (0..folds)
        .map(|k| Fold {
            origin: first_origin + k * val_len,
            end: first_origin + (k + 1) * val_len,
        })
        .collect();
    let month = |i: usize| format!("{}-{:02}", 1749 + i / 12, i % 12 + 1);
    let mut t = Table::new(&["fold", "train targets", "train windows", "validation targets"]);
    for (k, f) in folds.iter().enumerate() {
        t.row(vec![
            (k + 1).to_string(),
            format!("{} … {}", month(s.window), month(f.origin - 1)),
            (f.origin - s.window).to_string(),
            format!("{} … {}", month(f.origin), month(f.end - 1)),
        ]);
    }
    t.print();
    // A reference point: "next month = this month" (persistence).
    let persistence: Vec<f64> = folds
        .iter()
        .map(|f| rmse((f.origin..f.end).map(|i| (series[i - 1] - series[i]) * scale)))
        .collect();
    let (p_mean, _) = mean_std(&persistence);
    println!("\nPersistence forecast (next month = this month): validation RMSE {p_mean:.2} on average.");

    // -----------------------------------------------------------------------------------------
    step(3, "Train every (hidden size, fold) pair in parallel");
    let jobs: Vec<(usize, usize)> = sizes
        .iter()
        .flat_map(|&h| (0..folds.len()).map(move |k| (h, k)))
        .collect();
    println!(
        "{} jobs: {} steps each of {} windows, Adam lr {}, on {} threads.",
        jobs.len(),
        s.steps,
        s.batch,
        s.lr,
        rayon::current_num_threads()
    );
    let results: Vec<AnyResult<f64>> = jobs
        .par_iter()
        .map(|&(h, k)| train_fold(h, &series, folds[k], &s).map(|e| e * scale))
        .collect();
    let errors: Vec<f64> = results.into_iter().collect::<AnyResult<_>>()?;
    let of = |h: usize| -> Vec<f64> {
        jobs.iter()
            .zip(&errors)
            .filter(|((size, _), _)| *size == h)
            .map(|(_, e)| *e)
            .collect()
    };

    // -----------------------------------------------------------------------------------------
    step(4, "Validation RMSE per hidden size (sunspot units)");
    let mut header = vec![
        "hidden".to_string(),
        "parameters".to_string(),
        "mean ± std".to_string(),
    ];
    header.extend((1..=folds.len()).map(|k| format!("fold {k}")));
    let header: Vec<&str> = header.iter().map(|s| s.as_str()).collect();
    let mut t = Table::new(&header);
    let mut summary = Vec::new();
    for &h in &sizes {
        let e = of(h);
        let (m, sd) = mean_std(&e);
        let params = Forecaster::new(h, &mut Rng::seed(0))
            .params()
            .iter()
            .map(|p| p.len())
            .sum::<usize>();
        let mut row = vec![h.to_string(), params.to_string(), format!("{m:.2} ± {sd:.2}")];
        row.extend(e.iter().map(|v| format!("{v:.2}")));
        t.row(row);
        summary.push((h, m, sd, e));
    }
    let mut row = vec!["persistence".to_string(), "0".to_string()];
    let (pm, psd) = mean_std(&persistence);
    row.push(format!("{pm:.2} ± {psd:.2}"));
    row.extend(persistence.iter().map(|v| format!("{v:.2}")));
    t.row(row);
    t.print();
    let best = summary
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or("no hidden sizes")?;
    // The one-standard-error rule: the smallest model within one standard error of the best.
    let se = best.2 / (folds.len() as f64).sqrt();
    let simplest = summary.iter().find(|r| r.1 <= best.1 + se).unwrap_or(best);
    println!(
        "\nChosen hidden size: {} (lowest mean validation RMSE, {:.2}). The smallest size within one \
         standard error of it ({:.2}) is {}: prefer it if parameters cost.",
        best.0, best.1, se, simplest.0
    );

    // -----------------------------------------------------------------------------------------
    step(5, "Plot");
    let names: Vec<String> = sizes.iter().map(|h| h.to_string()).collect();
    let mut plot = LinePlot::new(
        "Rolling-origin CV on sunspots: validation RMSE by hidden size",
        "hidden units",
        "validation RMSE (mean, bars: min … max over folds)",
    );
    plot.x_names = Some(names);
    let means = summary.iter().enumerate().map(|(i, r)| (i as f64, r.1)).collect();
    let band = summary
        .iter()
        .map(|r| {
            let lo = r.3.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = r.3.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            (lo, hi)
        })
        .collect();
    plot = plot.series(Series::new("LSTM, mean over folds", 0, means).with_band(band));
    let last = sizes.len() as f64 - 1.0;
    plot = plot.series(Series::new("persistence (mean)", 7, vec![(0.0, pm), (last, pm)]).dashed());
    let path = args.out_file("cv_hidden_size.svg")?;
    plot.save(&path)?;
    println!("wrote {}", path.display());

    args.finish();
    Ok(())
}

fn rmse(errors: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = errors.fold((0.0, 0usize), |(s, n), e| (s + e * e, n + 1));
    (sum / n.max(1) as f64).sqrt()
}

/// The forecaster: LSTM over the window, a linear head on the last hidden state.
struct Forecaster {
    lstm: Lstm<f32>,
    head: Linear<f32>,
}

impl Forecaster {
    fn new(hidden: usize, rng: &mut Rng) -> Forecaster {
        Forecaster {
            lstm: RecurrentConfig::new(1, hidden).lstm(rng),
            head: Linear::new(hidden, 1, rng),
        }
    }

    fn params(&self) -> Vec<Param<f32>> {
        self.lstm
            .param_list()
            .into_iter()
            .chain(self.head.param_list())
            .collect()
    }

    /// `x` is `[W, B, 1]`; the forecast is `[B, 1]`.
    fn forward(&self, x: &Var<f32>) -> Result<Var<f32>> {
        let out = self.lstm.forward(x)?;
        self.head.forward(&out.h_n().select(0, 0)?)
    }
}

/// Trains one model on a fold's training windows; returns its validation RMSE (scaled units).
fn train_fold(hidden: usize, series: &[f64], fold: Fold, s: &Setup) -> AnyResult<f64> {
    let mut rng = Rng::seed(s.seed + hidden as u64);
    let model = Forecaster::new(hidden, &mut rng);
    let mut opt = Adam::new(
        model.params(),
        AdamConfig {
            lr: s.lr,
            ..AdamConfig::default()
        },
    )?;
    let (train_x, train_y) = windows(series, s.window, 0..fold.origin);
    let (val_x, val_y) = windows(series, s.window, fold.origin..fold.end);
    let mut order: Vec<usize> = (0..train_x.len()).collect();
    let mut cursor = order.len();
    for _ in 0..s.steps {
        if cursor + s.batch > order.len() {
            rng.shuffle(&mut order);
            cursor = 0;
        }
        let idx = &order[cursor..cursor + s.batch];
        cursor += s.batch;
        let (x, y) = batch_arrays(&train_x, &train_y, idx);
        let tape = Tape::new();
        let loss = mse(
            &model.forward(&tape.constant(x))?,
            &tape.constant(y),
            Reduction::Mean,
            None,
        )?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, 1.0)?;
        opt.step(&grads)?;
    }
    let all: Vec<usize> = (0..val_x.len()).collect();
    let (x, y) = batch_arrays(&val_x, &val_y, &all);
    let tape = Tape::no_grad();
    let loss = mse(
        &model.forward(&tape.constant(x))?,
        &tape.constant(y),
        Reduction::Mean,
        None,
    )?;
    Ok((loss.item()? as f64).sqrt())
}
