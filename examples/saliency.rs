//! # Opening the black box: input saliency and LSTM gates on a sunspot forecaster
//!
//! **Question.** The seed lists "hard to explain internals" among the RNN's limits. Two cheap
//! looks inside a trained forecaster answer part of it:
//!
//! 1. **Input-gradient saliency**: `∂ŷ/∂x_{t}` for each month of the input window — how much
//!    the forecast would move per unit change of each past month. One reverse pass with the
//!    input as a `tape.input` gives it for a whole batch of windows at once, because batch rows
//!    are independent: the gradient of `Σ_b ŷ_b` with respect to window `b` is `∂ŷ_b/∂x_b`.
//! 2. **Gate activations over time**: the LSTM's `σ(i)`, `σ(f)`, `tanh(g)`, `σ(o)` and
//!    `tanh(c)` for each unit at each month. The fused `LstmPointwise` kernel returns them as a
//!    third output `[B, 5H]`; we unroll the trained cell step by step to collect it.
//!
//! ```sh
//! cargo run --release --example saliency                 # about a minute
//! cargo run --release --example saliency -- --quick      # seconds (CI)
//! cargo run --release --example saliency -- --window 60 --hidden 16 --steps 3000
//! ```

#[path = "common/mod.rs"]
mod common;

use common::*;
use eddy::nn::clip::clip_grad_norm;
use eddy::nn::loss::{mse, Reduction};
use eddy::nn::optim::{Adam, AdamConfig, Optimizer};
use eddy::ops::{linear_add, LstmPointwise};
use eddy::prelude::*;

const USAGE: &str = "saliency: input gradients and gate activations of an LSTM sunspot forecaster

flags:
  --window W      months of history per input (default 48)
  --hidden N      LSTM units (default 16)
  --steps N       training steps (default 1500; quick 100)
  --batch N       windows per step (default 64)
  --lr X          Adam learning rate (default 5e-3)
  --rows N        validation windows in the saliency heat map (default 40)
  --seed N        seed (default 0)
  --out DIR       output folder (default out/saliency)
  --quick         small run for CI (also EDDY_QUICK=1)";

fn main() -> AnyResult {
    let args = Args::parse("saliency", USAGE);
    let quick = args.quick;
    let window: usize = args.get("window", 48);
    let hidden: usize = args.get("hidden", 16);
    let steps: usize = args.get("steps", if quick { 100 } else { 1500 });
    let batch: usize = args.get("batch", 64);
    let lr: f64 = args.get("lr", 5e-3);
    let rows: usize = args.get("rows", 40);
    let seed: u64 = args.get("seed", 0);

    // -----------------------------------------------------------------------------------------
    step(1, "Data: monthly sunspots, windows of the past → next month");
    let raw = sunspots()?;
    let split = raw.len() * 4 / 5;
    let scale = raw[..split].iter().cloned().fold(0.0, f64::max);
    let series: Vec<f64> = raw.iter().map(|v| v / scale).collect();
    let (train_x, train_y) = windows(&series, window, 0..split);
    let (val_x, val_y) = windows(&series, window, split..series.len());
    println!(
        "{} training windows, {} validation windows of {window} months; values scaled by 1/{scale:.1}.",
        train_x.len(),
        val_x.len()
    );

    // -----------------------------------------------------------------------------------------
    step(
        2,
        "Train the forecaster: LSTM → linear head on the last hidden state",
    );
    let mut rng = Rng::seed(seed);
    let lstm = RecurrentConfig::new(1, hidden).lstm::<f32>(&mut rng);
    let head = Linear::<f32>::new(hidden, 1, &mut rng);
    let params: Vec<Param<f32>> = lstm.param_list().into_iter().chain(head.param_list()).collect();
    let mut opt = Adam::new(
        params,
        AdamConfig {
            lr,
            ..AdamConfig::default()
        },
    )?;
    let predict = |x: &Var<f32>| -> Result<Var<f32>> { head.forward(&lstm.forward(x)?.h_n().select(0, 0)?) };
    let all_val: Vec<usize> = (0..val_x.len()).collect();
    let val_rmse = || -> AnyResult<f64> {
        let (x, y) = batch_arrays(&val_x, &val_y, &all_val);
        let tape = Tape::no_grad();
        let loss = mse(
            &predict(&tape.constant(x))?,
            &tape.constant(y),
            Reduction::Mean,
            None,
        )?;
        Ok((loss.item()? as f64).sqrt() * scale)
    };
    let mut t = Table::new(&["step", "validation RMSE"]);
    t.row(vec!["0".into(), format!("{:.2}", val_rmse()?)]);
    for step in 1..=steps {
        let idx: Vec<usize> = (0..batch).map(|_| rng.below(train_x.len())).collect();
        let (x, y) = batch_arrays(&train_x, &train_y, &idx);
        let tape = Tape::new();
        let loss = mse(
            &predict(&tape.constant(x))?,
            &tape.constant(y),
            Reduction::Mean,
            None,
        )?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, 1.0)?;
        opt.step(&grads)?;
        if step % (steps / 5).max(1) == 0 {
            t.row(vec![step.to_string(), format!("{:.2}", val_rmse()?)]);
        }
    }
    t.print();
    let persistence = (split..series.len())
        .map(|i| ((series[i - 1] - series[i]) * scale).powi(2))
        .sum::<f64>()
        / (series.len() - split) as f64;
    println!(
        "(persistence, next month = this month: {:.2})",
        persistence.sqrt()
    );

    // -----------------------------------------------------------------------------------------
    step(
        3,
        "Saliency: ∂forecast/∂x_t for every month of every validation window",
    );
    let (x, _) = batch_arrays(&val_x, &val_y, &all_val);
    let tape = Tape::new();
    let xv = tape.input(x); // [W, B, 1]: an input, so the tape keeps its gradient
    let forecast = predict(&xv)?.sum_all()?; // Σ_b ŷ_b: rows are independent
    let grads = tape.grad(&[&forecast], None, &[&xv], GradOptions::default())?;
    let g = grads[0]
        .as_ref()
        .ok_or("the forecast does not depend on the input")?;
    let g = g.value(); // [W, B, 1]
                       // saliency[b][k] = ∂ŷ_b/∂x_{b, k}; column k = month k of the window (k = W−1: the latest).
    let saliency: Vec<Vec<f64>> = (0..val_x.len())
        .map(|b| (0..window).map(|k| g[[k, b, 0]] as f64).collect())
        .collect();
    let mean_abs: Vec<f64> = (0..window)
        .map(|k| saliency.iter().map(|r| r[k].abs()).sum::<f64>() / saliency.len() as f64)
        .collect();
    let mut order: Vec<usize> = (0..window).collect();
    order.sort_by(|a, b| mean_abs[*b].total_cmp(&mean_abs[*a]));
    let mut t = Table::new(&[
        "months before the forecast",
        "mean abs(∂ŷ/∂x)",
        "mean ∂ŷ/∂x",
        "share of the total abs",
    ]);
    let total: f64 = mean_abs.iter().sum();
    for &k in order.iter().take(6) {
        let mean = saliency.iter().map(|r| r[k]).sum::<f64>() / saliency.len() as f64;
        t.row(vec![
            (window - k).to_string(),
            sig(mean_abs[k], 3),
            sig(mean, 3),
            format!("{:.0}%", 100.0 * mean_abs[k] / total),
        ]);
    }
    t.print();
    let recent: f64 = mean_abs[window.saturating_sub(12)..].iter().sum::<f64>() / total;
    println!(
        "\nThe last 12 months carry {:.0}% of the total saliency. (A gradient is a local, linear \
         answer: it says how the forecast moves under small changes, not why it is what it is.)",
        100.0 * recent
    );

    // -----------------------------------------------------------------------------------------
    step(
        4,
        "Gate activations: unroll the trained cell and keep LstmPointwise's third output",
    );
    // One window: the one whose target is the largest in the validation set (a cycle peak).
    let peak = (0..val_y.len())
        .max_by(|a, b| val_y[*a].total_cmp(&val_y[*b]))
        .unwrap_or(0);
    let (x1, _) = batch_arrays(&val_x, &val_y, &[peak]);
    let gates = unroll_gates(&lstm, &x1)?; // [T] × [5H]
    let names = [
        "input gate σ(i)",
        "forget gate σ(f)",
        "candidate tanh(g)",
        "output gate σ(o)",
        "cell tanh(c)",
    ];
    let mut t = Table::new(&["gate", "mean", "min", "max", "share with abs > 0.9"]);
    for (k, name) in names.iter().enumerate() {
        let vals: Vec<f64> = gates
            .iter()
            .flat_map(|row| row[k * hidden..(k + 1) * hidden].to_vec())
            .collect();
        let (m, _) = mean_std(&vals);
        let lo = vals.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sat = vals.iter().filter(|v| v.abs() > 0.9).count() as f64 / vals.len() as f64;
        t.row(vec![
            name.to_string(),
            sig(m, 3),
            sig(lo, 3),
            sig(hi, 3),
            format!("{:.0}%", 100.0 * sat),
        ]);
    }
    t.print();
    let first_month = split + peak; // index of the target month in the series
    let month = |i: usize| format!("{}-{:02}", 1749 + i / 12, i % 12 + 1);
    println!(
        "\nWindow: {} … {} → forecast of {} (actual {:.1}).",
        month(first_month - window),
        month(first_month - 1),
        month(first_month),
        raw[first_month]
    );

    // -----------------------------------------------------------------------------------------
    step(5, "Heat maps");
    // Saliency: `rows` validation windows spread evenly over the validation period.
    let picks: Vec<usize> = (0..rows.min(val_x.len()))
        .map(|r| r * (val_x.len() - 1) / rows.max(2).saturating_sub(1).max(1))
        .map(|b| b.min(val_x.len() - 1))
        .collect();
    let map = Heatmap {
        title: "∂forecast/∂x_t per validation window (rows) and input month (columns)".into(),
        x_label: "months before the forecast month (negative = past)".into(),
        y_label: "forecast month".into(),
        values: picks.iter().map(|&b| saliency[b].clone()).collect(),
        row_names: picks.iter().map(|&b| month(split + b)).collect(),
        x_start: -(window as f64),
        x_step: 1.0,
        scale: Scale::Diverging,
        range: None,
    };
    let path = args.out_file("saliency_heatmap.svg")?;
    save_heatmaps(
        &path,
        "Input-gradient saliency of the LSTM forecaster",
        &[map],
        720,
    )?;
    println!("wrote {}", path.display());

    let mut plot = LinePlot::new(
        "Mean |∂forecast/∂x_t| over the validation windows",
        "months before the forecast month",
        "mean |∂ŷ/∂x| (log scale)",
    )
    .log_y();
    let pts = (0..window)
        .map(|k| (k as f64 - window as f64, mean_abs[k]))
        .collect();
    plot = plot.series(Series::new("LSTM forecaster", 0, pts));
    let path = args.out_file("saliency_by_lag.svg")?;
    plot.save(&path)?;
    println!("wrote {}", path.display());

    let maps: Vec<Heatmap> = names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let sigmoid = k != 2 && k != 4;
            Heatmap {
                title: name.to_string(),
                x_label: "months before the forecast month".into(),
                y_label: "unit".into(),
                // rows = units, columns = time
                values: (0..hidden)
                    .map(|u| gates.iter().map(|row| row[k * hidden + u]).collect())
                    .collect(),
                row_names: (0..hidden).map(|u| u.to_string()).collect(),
                x_start: -(window as f64),
                x_step: 1.0,
                scale: if sigmoid {
                    Scale::Sequential
                } else {
                    Scale::Diverging
                },
                range: Some(if sigmoid { (0.0, 1.0) } else { (-1.0, 1.0) }),
            }
        })
        .collect();
    let path = args.out_file("gates_heatmap.svg")?;
    let title = format!(
        "LSTM gate activations while reading {} … {}",
        month(first_month - window),
        month(first_month - 1)
    );
    save_heatmaps(&path, &title, &maps, 260)?;
    println!("wrote {}", path.display());

    args.finish();
    Ok(())
}

/// Runs layer 0 of `lstm` over `x` (`[T, 1, 1]`) one step at a time, as `LstmCell::step` does,
/// but keeps the gate activations: one row of `5H` values per time step.
fn unroll_gates(lstm: &Lstm<f32>, x: &ndarray::ArrayD<f32>) -> AnyResult<Vec<Vec<f64>>> {
    let tape = Tape::no_grad();
    let cell = &lstm.cells[0];
    let projected = cell.project(&tape.constant(x.clone()))?; // W_ih x + b_ih, [T, 1, 4H]
    let (mut h, mut c) = cell.zero_state(&tape, 1)?;
    let w_hh = tape.param(&cell.weight_hh);
    let b_hh = cell.biases.as_ref().map(|(_, b)| tape.param(b));
    let mut rows = Vec::new();
    for x_t in projected.unstack(0)? {
        let gates = linear_add(&h, &w_hh, b_hh.as_ref(), Some(&x_t))?; // [1, 4H]
        let [h2, c2, acts]: [Var<f32>; 3] = tape
            .apply_multi(LstmPointwise, &[&gates, &c])?
            .try_into()
            .map_err(|_| "LstmPointwise returns three outputs")?;
        rows.push(acts.value().iter().map(|v| *v as f64).collect());
        (h, c) = (h2, c2);
    }
    // Check: the same final state as the layer's own forward pass.
    let layer_h = lstm.forward(&tape.constant(x.clone()))?.h_n().select(0, 0)?;
    let diff = (&layer_h - &h)?
        .value()
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    if diff > 1e-5 {
        return Err(format!("the hand unroll differs from the layer by {diff}").into());
    }
    Ok(rows)
}
