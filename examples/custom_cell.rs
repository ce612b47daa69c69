//! # A new cell from scratch: JANET, the forget-gate-only LSTM
//!
//! **Question.** Can a researcher add a cell that eddy does not ship, prove its gradients,
//! get a stacked bidirectional layer for free, train it with Keras-style `Sequential` + `fit`
//! (validation, early stopping) next to the built-in LSTM on a real forecast, and save and load
//! it — in one file?
//!
//! **The cell.** JANET ("Just Another NETwork", van der Westhuizen & Lasenby 2018, *The
//! unreasonable effectiveness of the forget gate*) keeps only the LSTM's forget gate, ties the
//! input gate to it, and drops the output gate:
//!
//! ```text
//! s  = W_f x + U_f h + b_f
//! c̃  = tanh(W_c x + U_c h + b_c)
//! h' = σ(s) ⊙ h + (1 − σ(s − β)) ⊙ c̃          (β = 1; the state is h = c)
//! ```
//!
//! Half the LSTM's parameters, one state part instead of two. The forget bias gets the
//! "chrono" initialisation `b_f = log U(1, T_max − 1)` (Tallec & Ollivier 2018), which makes
//! the cell remember over horizons up to `T_max` at the start of training.
//!
//! ```sh
//! cargo run --release --example custom_cell                 # a minute or two
//! cargo run --release --example custom_cell -- --quick      # seconds (CI)
//! cargo run --release --example custom_cell -- --hidden 64 --epochs 60
//! ```

#[path = "common/mod.rs"]
mod common;

use common::*;
use eddy::nn::fit::{EarlyStopping, FitOptions, History, Monitor};
use eddy::nn::init;
use eddy::nn::sequential::{dense, lstm, recurrent, LayerSpec, Loss, Model, Optim, Sequential};
use eddy::prelude::*;
use ndarray::{Array2, ArrayD, Ix2};

const USAGE: &str =
    "custom_cell: a JANET cell from scratch, gradchecked, trained with fit against the LSTM on sunspots

flags:
  --hidden N      hidden units of both cells (default 32)
  --window W      months of history per input (default 36)
  --epochs N      at most this many epochs (default 40; quick 2)
  --patience N    early stopping: epochs without improvement (default 5)
  --batch N       windows per step (default 64)
  --lr X          Adam learning rate (default 5e-3)
  --seed N        seed (default 0)
  --out DIR       output folder (default out/custom_cell)
  --quick         small run for CI (also EDDY_QUICK=1)";

// ---------------------------------------------------------------------------------------------
// The cell: its parameters, its Module impl (names → checkpoint keys), its Cell impl.
// ---------------------------------------------------------------------------------------------

/// JANET: a forget gate, a candidate, and nothing else. Generic over the float type: `f32`
/// to train, `f64` to check gradients.
#[derive(Clone)]
struct JanetCell<F: Float = f32> {
    weight_ih: Param<F>, // [2H, I]: rows of W_f, then of W_c
    weight_hh: Param<F>, // [2H, H]: rows of U_f, then of U_c
    bias: Param<F>,      // [2H]:    b_f, then b_c
    beta: f64,
}

impl<F: Float> JanetCell<F> {
    fn new(input: usize, hidden: usize, t_max: usize, rng: &mut Rng) -> Self {
        let mut bias: ArrayD<F> = init::pytorch_default(&[2 * hidden], hidden, rng);
        // Chrono initialisation of the forget bias: log U(1, T_max − 1).
        for b in bias.iter_mut().take(hidden) {
            *b = F::of(rng.uniform_in(1.0, (t_max as f64 - 1.0).max(1.5)).ln());
        }
        JanetCell {
            weight_ih: Param::new("weight_ih", init::xavier_uniform(&[2 * hidden, input], 1.0, rng)),
            weight_hh: Param::new("weight_hh", init::orthogonal(2 * hidden, hidden, 1.0, rng)),
            bias: Param::new("bias", bias),
            beta: 1.0,
        }
    }
}

impl<F: Float> Module<F> for JanetCell<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        vec![
            ("weight_ih".into(), self.weight_ih.clone()),
            ("weight_hh".into(), self.weight_hh.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}

impl<F: Float> Cell<F> for JanetCell<F> {
    type State = Var<F>; // h = c, [B, H]

    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.weight_hh.shape()[1]]
    }

    /// `W x + b` for all time steps in one GEMM: `[T, B, I] → [T, B, 2H]`.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        let t = x.tape();
        x.linear(&t.param(&self.weight_ih), Some(&t.param(&self.bias)))
    }

    /// One step: `[B, 2H]` projected input and `h` `[B, H]` → `h'` `[B, H]`.
    fn step(&self, xw: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
        let t = xw.tape();
        let gates = (xw + h.matmul_t(&t.param(&self.weight_hh))?)?;
        let [s, candidate]: [Var<F>; 2] = gates.chunk(2, 1)?.try_into().expect("two chunks");
        let forget = s.sigmoid()?;
        let input = s.neg()?.shift(F::of(self.beta))?.sigmoid()?; // 1 − σ(s − β) = σ(β − s)
        (forget * h)? + (input * candidate.tanh()?)?
    }
}

// ---------------------------------------------------------------------------------------------
// The notebook
// ---------------------------------------------------------------------------------------------

fn main() -> AnyResult {
    let args = Args::parse("custom_cell", USAGE);
    let quick = args.quick;
    let hidden: usize = args.get("hidden", 32);
    let window: usize = args.get("window", 36);
    let epochs: usize = args.get("epochs", if quick { 2 } else { 40 });
    let patience: usize = args.get("patience", 5);
    let batch: usize = args.get("batch", 64);
    let lr: f64 = args.get("lr", 5e-3);
    let seed: u64 = args.get("seed", 0);

    // -----------------------------------------------------------------------------------------
    step(1, "One step against the equations, by hand");
    // gradcheck proves the gradients of whatever the cell computes; it cannot see a wrong
    // equation. So first compare one step with the formulas written out in ndarray.
    let mut rng = Rng::seed(seed);
    let cell = JanetCell::<f64>::new(3, 4, 10, &mut rng);
    let x: Array2<f64> = Array2::from_shape_simple_fn((2, 3), || rng.uniform_in(-1.0, 1.0));
    let h: Array2<f64> = Array2::from_shape_simple_fn((2, 4), || rng.uniform_in(-1.0, 1.0));
    let mat = |p: &Param<f64>| {
        p.value()
            .as_ref()
            .clone()
            .into_dimensionality::<Ix2>()
            .expect("2-D")
    };
    let (w, u, b) = (mat(&cell.weight_ih), mat(&cell.weight_hh), cell.bias.value());
    let pre = x.dot(&w.t()) + h.dot(&u.t()) + b.as_ref();
    let sigma = |v: f64| 1.0 / (1.0 + (-v).exp());
    let expected = Array2::from_shape_fn((2, 4), |(r, k)| {
        let (s, c) = (pre[[r, k]], pre[[r, k + 4]]);
        sigma(s) * h[[r, k]] + (1.0 - sigma(s - 1.0)) * c.tanh()
    });
    let tape = Tape::new();
    let xv = tape.constant(x.into_dyn());
    let got = cell.step(&cell.project(&xv)?, &tape.constant(h.into_dyn()))?;
    let diff = (got.value() - &expected.into_dyn())
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    println!("max |step − equations| = {diff:.1e} (B = 2, I = 3, H = 4)");
    ensure(
        diff <= 1e-12,
        format!("the step does not match the equations: {diff}"),
    )?;

    // -----------------------------------------------------------------------------------------
    step(
        2,
        "Prove the gradients: gradcheck through a stacked, bidirectional, ragged layer",
    );
    let mut rng = Rng::seed(seed + 1);
    let layer = RecurrentConfig::new(2, 3)
        .num_layers(2)
        .bidirectional(true)
        .build(|i, h, rng| JanetCell::<f64>::new(i, h, 5, rng), &mut rng);
    let x = ArrayD::from_shape_simple_fn(vec![4, 3, 2], || rng.uniform_in(-1.0, 1.0));
    let lengths = [4, 2, 3];
    let f = |_: &Tape<f64>, xs: &[Var<f64>]| -> Result<Var<f64>> {
        let out = layer.forward_with(&xs[0], None, Some(&lengths), None)?;
        let n = out.output.value().len();
        let m = out.h_n().value().len();
        concat(&[&out.output.reshape(&[n])?, &out.h_n().reshape(&[m])?], 0)
    };
    let options = GradcheckOptions::default().params(layer.param_list());
    gradcheck(f, std::slice::from_ref(&x), &options)?;
    let checked: usize = x.len() + layer.param_list().iter().map(|p| p.len()).sum::<usize>();
    println!(
        "gradcheck: ok — every element of the input [T=4, B=3, I=2] and of all {} parameters \
         ({checked} elements in all), through 2 layers × 2 directions with lengths {lengths:?}, \
         output sequence and h_n, against central differences in f64",
        layer.param_list().len()
    );
    gradgradcheck(f, &[x], &options.clone().fast())?;
    println!("gradgradcheck (fast, random directions): ok — second derivatives through the same layer");

    // -----------------------------------------------------------------------------------------
    step(3, "A full layer for free: shapes and parameter names");
    let mut rng = Rng::seed(seed + 2);
    let big = RecurrentConfig::new(1, 16)
        .num_layers(2)
        .bidirectional(true)
        .build(|i, h, rng| JanetCell::<f32>::new(i, h, window, rng), &mut rng);
    let tape = Tape::new();
    let out = big.forward(&tape.constant(ArrayD::zeros(vec![window, 8, 1])))?;
    let mut t = Table::new(&["tensor", "shape"]);
    t.row(vec!["input x [T, B, I]".into(), format!("{:?}", [window, 8, 1])]);
    t.row(vec![
        "output [T, B, 2·H]".into(),
        format!("{:?}", out.output.shape()),
    ]);
    t.row(vec![
        "h_n [layers·2, B, H]".into(),
        format!("{:?}", out.h_n().shape()),
    ]);
    t.print();
    println!();
    let mut t = Table::new(&["parameter", "shape"]);
    for (name, p) in big.params() {
        t.row(vec![name, format!("{:?}", p.shape())]);
    }
    t.print();

    // -----------------------------------------------------------------------------------------
    step(
        4,
        "Train it as Keras would: Sequential + fit, next to the built-in LSTM",
    );
    // `recurrent(make)` is Keras' `RNN(cell)`: any cell, with everything a built-in layer gets
    // (validation, early stopping, checkpoints, the progress bar). `lstm(h)` is the same spec
    // over the built-in cell.
    let raw = sunspots()?;
    let split = raw.len() * 4 / 5;
    let scale = raw[..split].iter().cloned().fold(0.0, f64::max);
    let series: Vec<f64> = raw.iter().map(|v| v / scale).collect();
    let (train, val) = (
        windows(&series, window, 0..split),
        windows(&series, window, split..series.len()),
    );
    let data = Data {
        train: batch_first(&train),
        val: batch_first(&val),
    };
    println!(
        "{} training windows (targets before month {split}), {} validation windows after; \
         {hidden} hidden units, Adam lr {lr}, up to {epochs} epochs of batches of {batch}, \
         early stopping (patience {patience}) on the validation loss.",
        train.0.len(),
        val.0.len()
    );
    let s = Setup {
        epochs,
        batch,
        lr,
        patience,
    };
    let runs = [
        train_run("JANET", janet(hidden, window, seed + 3, &s)?, &data, &s)?,
        train_run("LSTM", model(lstm(hidden), seed + 3, &s)?, &data, &s)?,
    ];

    // -----------------------------------------------------------------------------------------
    step(5, "Results");
    let persistence = (split..series.len())
        .map(|i| ((series[i - 1] - series[i]) * scale).powi(2))
        .sum::<f64>()
        / (series.len() - split) as f64;
    let mut t = Table::new(&[
        "cell",
        "parameters",
        "epochs run",
        "best epoch",
        "validation RMSE (best epoch)",
        "train seconds",
    ]);
    for r in &runs {
        let h = &r.history;
        let best = h.best_epoch.unwrap_or(h.epoch.len());
        t.row(vec![
            r.name.into(),
            r.model.num_params().to_string(),
            h.epoch.len().to_string(),
            best.to_string(),
            format!("{:.2}", h.val_loss[best - 1].sqrt() * scale),
            format!("{:.1}", r.seconds),
        ]);
    }
    t.row(vec![
        "persistence".into(),
        "0".into(),
        "—".into(),
        "—".into(),
        format!("{:.2}", persistence.sqrt()),
        "—".into(),
    ]);
    t.print();
    println!(
        "\nRMSE in sunspot units; persistence forecasts next month = this month. Early stopping \
         restored each model's best epoch."
    );

    let mut train_plot = LinePlot::new("Training loss", "epoch", "train MSE (scaled, log scale)").log_y();
    let mut val_plot = LinePlot::new("Validation error", "epoch", "validation RMSE (sunspots)");
    let mut end = 1.0f64;
    for (c, r) in runs.iter().enumerate() {
        let h = &r.history;
        let at = |v: &[f64], f: &dyn Fn(f64) -> f64| -> Vec<(f64, f64)> {
            h.epoch.iter().zip(v).map(|(&e, &l)| (e as f64, f(l))).collect()
        };
        train_plot = train_plot.series(Series::new(r.name, c, at(&h.loss, &|l| l)));
        val_plot = val_plot.series(Series::new(r.name, c, at(&h.val_loss, &|l| l.sqrt() * scale)));
        end = end.max(h.epoch.len() as f64);
    }
    val_plot = val_plot.series(
        Series::new(
            "persistence",
            7,
            vec![(1.0, persistence.sqrt()), (end, persistence.sqrt())],
        )
        .dashed(),
    );
    let path = args.out_file("training_curves.svg")?;
    save_panels(
        &path,
        &format!("JANET vs LSTM, {hidden} hidden units, sunspots"),
        &[train_plot, val_plot],
        2,
    )?;
    println!("wrote {}", path.display());

    // -----------------------------------------------------------------------------------------
    step(
        6,
        "Save the trained JANET model, load it back, predict the same values",
    );
    // The weights file holds every parameter under its dotted name; a model built the same
    // way (any seed: the file overwrites every value) loads it.
    let trained = &runs[0].model;
    let path = args.out_file("janet.safetensors")?;
    trained.save_weights(&path)?;
    let loaded = janet(hidden, window, seed + 1000, &s)?;
    let before = max_abs_diff(&loaded.predict(&data.val.0)?, &trained.predict(&data.val.0)?);
    loaded.load_weights(&path)?;
    let after = max_abs_diff(&loaded.predict(&data.val.0)?, &trained.predict(&data.val.0)?);
    let mut t = Table::new(&["parameter", "shape"]);
    for (name, p) in loaded.params() {
        t.row(vec![name, format!("{:?}", p.shape())]);
    }
    t.print();
    println!(
        "wrote {}; max |prediction difference| on the {} validation windows: {before:.3} \
         before loading, {after} after",
        path.display(),
        val.0.len()
    );
    ensure(
        after == 0.0,
        format!("the loaded model predicts differently: {after}"),
    )?;

    args.finish();
    Ok(())
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    a.iter()
        .zip(b.iter())
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs() as f64))
}

struct Setup {
    epochs: usize,
    batch: usize,
    lr: f64,
    patience: usize,
}

/// Windows and targets for training and validation as `[N, window, 1]` and `[N, 1]`.
struct Data {
    train: (ArrayD<f32>, ArrayD<f32>),
    val: (ArrayD<f32>, ArrayD<f32>),
}

/// A set of windows as batch-first arrays, as `fit` takes them.
fn batch_first((xs, ys): &(Vec<Vec<f64>>, Vec<f64>)) -> (ArrayD<f32>, ArrayD<f32>) {
    let all: Vec<usize> = (0..xs.len()).collect();
    let (x, y) = batch_arrays(xs, ys, &all); // [T, N, 1]
    (x.permuted_axes(vec![1, 0, 2]).as_standard_layout().to_owned(), y)
}

/// `spec` (the recurrent layer) → Dense(1) on its last output, compiled with Adam and MSE.
fn model(spec: LayerSpec<f32>, seed: u64, s: &Setup) -> Result<Model<f32>> {
    let mut rng = Rng::seed(seed);
    let mut m = Sequential::new()
        .add(spec)
        .add(dense(1))
        .build::<f32>(1, &mut rng)?;
    m.compile(Optim::adam(s.lr), Loss::Mse)?;
    Ok(m)
}

/// The JANET model: `recurrent(make)` (Keras' `RNN(cell)`) over the new cell, then Dense(1).
fn janet(hidden: usize, window: usize, seed: u64, s: &Setup) -> Result<Model<f32>> {
    let spec = recurrent(move |input, rng| JanetCell::<f32>::new(input, hidden, window, rng)).named("janet");
    model(spec, seed, s)
}

struct Run {
    name: &'static str,
    model: Model<f32>,
    history: History,
    seconds: f64,
}

/// `fit` with validation and early stopping (best weights restored); any cell.
fn train_run(name: &'static str, mut model: Model<f32>, data: &Data, s: &Setup) -> AnyResult<Run> {
    let start = std::time::Instant::now();
    let history = model.fit(
        &data.train.0,
        &data.train.1,
        FitOptions {
            epochs: s.epochs,
            batch_size: s.batch,
            validation_data: Some((&data.val.0, &data.val.1)),
            early_stopping: Some(EarlyStopping {
                monitor: Monitor::ValLoss,
                patience: s.patience,
                min_delta: 0.0,
                restore_best_weights: true,
            }),
            clip_grad_norm: Some(1.0),
            ..FitOptions::default()
        },
    )?;
    Ok(Run {
        name,
        model,
        history,
        seconds: start.elapsed().as_secs_f64(),
    })
}
