//! # Forecasting the sunspot cycle with the seed's LSTM
//!
//! The seed's Keras program, in eddy, on the monthly sunspot numbers (1749–2009):
//!
//! ```python
//! model.add(LSTM(50, return_sequences=True)); model.add(LSTM(50, return_sequences=True))
//! model.add(Dense(1)); model.compile(optimizer=Adam(lr=0.01), loss='mse')
//! model.fit(X_train, y_train, epochs=100, batch_size=32)
//! ```
//!
//! The question: how well does it forecast 1, 6 and 12 months ahead, against the forecasts
//! every forecaster must beat — persistence (the last value) and the seasonal-naive forecast
//! (the value one 11-year cycle earlier)?
//!
//! ```sh
//! cargo run --release --example forecast                      # the full run, a few minutes
//! cargo run --release --example forecast -- --quick           # seconds (CI)
//! cargo run --release --example forecast -- --csv my.csv --column value --season 12
//! ```
//! Flags: `--epochs N`, `--window N` (input months), `--hidden N`, `--seed N`, `--out DIR`.

#[path = "common/mod.rs"]
mod common;

use common::{step, AnyResult, LinePlot, Series, Table};
use eddy::nn::data::{window, Scaler, Targets, Window};
use eddy::nn::fit::{EarlyStopping, FitOptions, Monitor};
use eddy::nn::sequential::{dense, lstm, Loss, Model, Optim, Sequential};
use eddy::prelude::*;
use ndarray::{s, Array1, Array3, ArrayD, Axis};
use std::path::{Path, PathBuf};

/// The forecast horizons of the report, in months.
const HORIZONS: [usize; 3] = [1, 6, 12];

const USAGE: &str = "forecast: the seed's LSTM(50) → LSTM(50) → Dense(1) on a monthly series

  --csv FILE       a CSV file with a header row (default: data/sunspots_monthly.csv)
  --column NAME    the column to forecast (default: sunspots)
  --season N       the seasonal-naive lag in steps (default: 132, one 11-year solar cycle)
  --epochs N       training epochs, with early stopping on the validation loss (default: 40)
  --window N       input window in months (default: 72)
  --hidden N       units per LSTM layer (default: 50, as the seed)
  --seed N         the random seed (default: 0)
  --out DIR        where the plots go (default: out/forecast)
  --quick          a few seconds, for CI (also EDDY_QUICK=1)";

/// Reads one numeric column of a CSV file with a header row.
fn read_column(path: &Path, column: &str) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let col = header
        .iter()
        .position(|h| *h == column)
        .ok_or_else(|| Error::file(path, format!("no column {column:?}; the columns are {header:?}")))?;
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let cell = l.split(',').nth(col).unwrap_or("").trim();
            cell.parse::<f64>()
                .map_err(|_| Error::file(path, format!("line {}: {cell:?} is not a number", i + 2)))
        })
        .collect()
}

/// The `date` column as fractional years (`1749-03` → 1749.167), if every row has one.
fn read_dates(path: &Path) -> Option<Vec<f64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let col = lines.next()?.split(',').position(|h| h.trim() == "date")?;
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (y, m) = l.split(',').nth(col)?.trim().split_once('-')?;
            Some(y.parse::<f64>().ok()? + (m.parse::<f64>().ok()? - 1.0) / 12.0)
        })
        .collect()
}

fn rmse(a: &[f64], b: &[f64]) -> f64 {
    (a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len().max(1) as f64).sqrt()
}

/// Forecasts `max_h` steps ahead from each input window by feeding each prediction back in:
/// `forecasts[h - 1][i]` is the forecast `h` steps after window `i` (in scaled units).
fn recursive_forecast(model: &Model<f32>, x: &ArrayD<f32>, max_h: usize) -> Result<Vec<Vec<f32>>> {
    let mut x = x
        .clone()
        .into_dimensionality::<ndarray::Ix3>()
        .expect("[M, L, 1]");
    let (m, l) = (x.shape()[0], x.shape()[1]);
    let mut out = Vec::with_capacity(max_h);
    for _ in 0..max_h {
        let pred = model.predict(&x.clone().into_dyn())?; // [M, L, 1]: a forecast after every step
        let next: Vec<f32> = (0..m).map(|i| pred[[i, l - 1, 0]]).collect();
        let mut shifted = Array3::<f32>::zeros((m, l, 1));
        shifted
            .slice_mut(s![.., ..l - 1, ..])
            .assign(&x.slice(s![.., 1.., ..]));
        shifted
            .slice_mut(s![.., l - 1, 0])
            .assign(&Array1::from(next.clone()));
        x = shifted;
        out.push(next);
    }
    Ok(out)
}

/// The month a window's forecast starts from: its last input month.
fn origin(i: usize, window_len: usize) -> usize {
    i + window_len - 1
}

/// The windows that belong to months `lo..hi`: their forecast origin is in that part and every
/// target up to the longest horizon `max_h` stays in it, so no test month leaks into training.
fn windows_in(n_windows: usize, window_len: usize, max_h: usize, lo: usize, hi: usize) -> Vec<usize> {
    (0..n_windows)
        .filter(|&i| origin(i, window_len) >= lo && origin(i, window_len) + max_h < hi)
        .collect()
}

/// A scaled value back in the series' units.
fn unscale(scaler: &Scaler, v: f32) -> f64 {
    scaler
        .inverse_transform(&ArrayD::from_elem(vec![1], v))
        .map(|a| a[0] as f64)
        .unwrap_or(f64::NAN)
}

fn verdict(ours: f64, theirs: f64) -> &'static str {
    if ours < theirs {
        "beats"
    } else {
        "does not beat"
    }
}

/// The x coordinate of month `o`: its year when the file has dates, else its index.
fn month_of(dates: &Option<Vec<f64>>, o: usize) -> f64 {
    dates.as_ref().map_or(o as f64, |d| d[o])
}

fn main() -> AnyResult {
    let args = common::Args::parse("forecast", USAGE);
    let default_csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sunspots_monthly.csv");
    let csv = PathBuf::from(args.get("csv", default_csv.display().to_string()));
    let column: String = args.get("column", "sunspots".to_string());
    let season: usize = args.get("season", 132);
    let epochs: usize = if args.quick { 2 } else { args.get("epochs", 40) };
    let window_len: usize = args.get("window", 72);
    let hidden: usize = args.get("hidden", 50);
    let seed: u64 = args.get("seed", 0);

    step(1, "The data");
    let series = read_column(&csv, &column)?;
    let n = series.len();
    let (train_end, val_end) = (n * 70 / 100, n * 85 / 100);
    println!("{n} monthly values of {column:?} from {}.", csv.display());
    println!("Split in time order: train months 0..{train_end}, validation {train_end}..{val_end}, test {val_end}..{n}.");

    step(2, "Scale on the training months only, and cut windows");
    let raw = ArrayD::from_shape_vec(vec![n], series.iter().map(|&v| v as f32).collect()).expect("1-D");
    let scaler = Scaler::min_max(&raw.slice(s![..train_end]).to_owned().into_dyn())?;
    let scaled = scaler.transform(&raw)?;
    let w = Window {
        input_len: window_len,
        horizon: 1,
        targets: Targets::Sequence, // as the seed: a next-month target after every input month
    };
    let (x_all, y_all) = window(&scaled, &w)?; // window i covers months i .. i + window_len
    let max_h = *HORIZONS.last().expect("horizons");
    // A window belongs to the part its forecast origin (its last month) is in, and is used only
    // if every target up to the longest horizon stays in that part: no test month leaks.
    let n_windows = x_all.shape()[0];
    let stride = if args.quick { 8 } else { 1 };
    let train_rows: Vec<usize> = windows_in(n_windows, window_len, max_h, 0, train_end)
        .into_iter()
        .step_by(stride)
        .collect();
    let val_rows = windows_in(n_windows, window_len, max_h, train_end, val_end);
    let test_rows = windows_in(n_windows, window_len, max_h, val_end, n);
    let (x_train, y_train) = (
        x_all.select(Axis(0), &train_rows),
        y_all.select(Axis(0), &train_rows),
    );
    let (x_val, y_val) = (x_all.select(Axis(0), &val_rows), y_all.select(Axis(0), &val_rows));
    println!(
        "Windows of {window_len} months: {} train, {} validation, {} test.",
        train_rows.len(),
        val_rows.len(),
        test_rows.len()
    );

    step(
        3,
        "The seed's model: LSTM → LSTM → Dense(1), Adam(0.01), MSE, batches of 32",
    );
    let mut rng = Rng::seed(seed);
    let mut model: Model<f32> = Sequential::new()
        .add(lstm(hidden).return_sequences(true))
        .add(lstm(hidden).return_sequences(true))
        .add(dense(1))
        .build(1, &mut rng)?;
    model.compile(Optim::adam(0.01), Loss::Mse)?;
    println!(
        "{} parameters; up to {epochs} epochs, early stopping on the validation loss.",
        model.num_params()
    );
    let history = model.fit(
        &x_train,
        &y_train,
        FitOptions {
            epochs,
            batch_size: 32,
            validation_data: Some((&x_val, &y_val)),
            early_stopping: Some(EarlyStopping {
                monitor: Monitor::ValLoss,
                patience: 8,
                min_delta: 0.0,
                restore_best_weights: true,
            }),
            clip_grad_norm: Some(1.0),
            ..FitOptions::default()
        },
    )?;
    let best = history.best_epoch.unwrap_or(history.epoch.len());
    let best_val = history.val_loss.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "Trained {} epochs; best validation MSE {best_val:.5} (scaled units) at epoch {best}.",
        history.epoch.len()
    );

    step(
        4,
        "Forecast the test months; compare with the baselines (RMSE in sunspot units)",
    );
    let x_test = x_all.select(Axis(0), &test_rows);
    let forecasts = recursive_forecast(&model, &x_test, max_h)?;
    let mut table = Table::new(&[
        "horizon",
        "LSTM",
        "persistence",
        &format!("seasonal naive ({season})"),
    ]);
    let mut rows = Vec::new();
    for &h in &HORIZONS {
        let (mut truth, mut ours, mut persist, mut seasonal) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (k, &i) in test_rows.iter().enumerate() {
            let o = origin(i, window_len);
            if o + h < season {
                continue;
            }
            truth.push(series[o + h]);
            ours.push(unscale(&scaler, forecasts[h - 1][k]));
            persist.push(series[o]);
            seasonal.push(series[o + h - season]);
        }
        let r = (
            h,
            rmse(&ours, &truth),
            rmse(&persist, &truth),
            rmse(&seasonal, &truth),
        );
        table.row(vec![
            format!("{h} months"),
            format!("{:.1}", r.1),
            format!("{:.1}", r.2),
            format!("{:.1}", r.3),
        ]);
        rows.push(r);
    }
    table.print();
    let (h1, h12) = (rows[0], rows[rows.len() - 1]);
    println!(
        "\nOne month ahead the LSTM {} persistence ({:.1} vs {:.1}): on noisy monthly data the last value is a strong forecast.",
        verdict(h1.1, h1.2),
        h1.1,
        h1.2
    );
    println!(
        "Twelve months ahead it {} persistence ({:.1} vs {:.1}) and {} the seasonal-naive forecast ({:.1}).",
        verdict(h12.1, h12.2),
        h12.1,
        h12.2,
        verdict(h12.1, h12.3),
        h12.3
    );

    step(5, "Plot the forecasts against the truth");
    // Years on the x axis when the file has a `date` column of `YYYY-MM`, else month indices.
    let dates = read_dates(&csv).filter(|d| d.len() == n);
    let truth: Vec<(f64, f64)> = (val_end..n).map(|m| (month_of(&dates, m), series[m])).collect();
    let mut plot = LinePlot::new(
        format!("{column}: test months, forecasts vs truth"),
        if dates.is_some() {
            "year"
        } else {
            "month (index in the series)"
        },
        column.as_str(),
    )
    .series(Series::new("truth", 7, truth));
    for (color, &h) in [(0, &1usize), (3, &12usize)] {
        let points = test_rows
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                (
                    month_of(&dates, origin(i, window_len) + h),
                    unscale(&scaler, forecasts[h - 1][k]),
                )
            })
            .collect();
        plot = plot.series(Series::new(format!("LSTM, {h} month(s) ahead"), color, points));
    }
    let path = args.out_file("forecast.svg")?;
    plot.save(&path)?;
    let curves = LinePlot::new("training curves", "epoch", "MSE (scaled)")
        .log_y()
        .series(Series::new(
            "train",
            0,
            history
                .epoch
                .iter()
                .map(|&e| e as f64)
                .zip(history.loss.clone())
                .collect(),
        ))
        .series(Series::new(
            "validation",
            1,
            history
                .epoch
                .iter()
                .map(|&e| e as f64)
                .zip(history.val_loss.clone())
                .collect(),
        ));
    curves.save(&args.out_file("training.svg")?)?;
    println!("Wrote {} and training.svg.", path.display());
    args.finish();
    Ok(())
}
