//! # A new cell from scratch: JANET, the forget-gate-only LSTM
//!
//! **Question.** Can a researcher add a cell that eddy does not ship, prove its gradients,
//! get a stacked bidirectional layer for free, and compare it with the built-in LSTM on a
//! real forecast — in one file?
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
//! cargo run --release --example custom_cell -- --hidden 64 --steps 2000
//! ```

#[path = "common/mod.rs"]
mod common;

use common::*;
use eddy::nn::clip::clip_grad_norm;
use eddy::nn::init;
use eddy::nn::loss::{mse, Reduction};
use eddy::nn::optim::{Adam, AdamConfig, Optimizer};
use eddy::prelude::*;
use ndarray::{Array2, ArrayD, Ix2};

const USAGE: &str = "custom_cell: a JANET cell from scratch, gradchecked, against the LSTM on sunspots

flags:
  --hidden N      hidden units of both cells (default 32)
  --window W      months of history per input (default 36)
  --steps N       training steps (default 1500; quick 80)
  --batch N       windows per step (default 64)
  --lr X          Adam learning rate (default 5e-3)
  --eval-every N  steps between validation evaluations (default 50; quick 20)
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
    let steps: usize = args.get("steps", if quick { 80 } else { 1500 });
    let batch: usize = args.get("batch", 64);
    let lr: f64 = args.get("lr", 5e-3);
    let eval_every: usize = args.get("eval-every", if quick { 20 } else { 50 });
    let seed: u64 = args.get("seed", 0);

    // -----------------------------------------------------------------------------------------
    step(1, "One step against the equations, by hand");
    // gradcheck proves the gradients of whatever the cell computes; it cannot see a wrong
    // equation. So first compare one step with the formulas written out in ndarray.
    // (A block: its values are this step's only, as in a notebook cell.)
    {
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
        if diff > 1e-12 {
            return Err(format!("the step does not match the equations: {diff}").into());
        }
    }

    // -----------------------------------------------------------------------------------------
    step(
        2,
        "Prove the gradients: gradcheck through a stacked, bidirectional, ragged layer",
    );
    {
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
    }

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
        "Train it next to the built-in LSTM: one-month-ahead sunspot forecasts",
    );
    let raw = sunspots()?;
    let split = raw.len() * 4 / 5;
    let scale = raw[..split].iter().cloned().fold(0.0, f64::max);
    let series: Vec<f64> = raw.iter().map(|v| v / scale).collect();
    let data = Data {
        train: windows(&series, window, 0..split),
        val: windows(&series, window, split..series.len()),
        scale,
    };
    println!(
        "{} training windows (targets before month {split}), {} validation windows after; \
         {hidden} hidden units, Adam lr {lr}, {steps} steps of {batch}.",
        data.train.0.len(),
        data.val.0.len()
    );
    let s = Setup {
        steps,
        batch,
        lr,
        eval_every,
        seed,
    };
    let mut rng = Rng::seed(seed + 3);
    let janet =
        RecurrentConfig::new(1, hidden).build(|i, h, rng| JanetCell::<f32>::new(i, h, window, rng), &mut rng);
    let mut rng = Rng::seed(seed + 3);
    let lstm = RecurrentConfig::new(1, hidden).lstm::<f32>(&mut rng);
    let runs = {
        let (a, b) = rayon::join(|| fit("JANET", janet, &data, &s), || fit("LSTM", lstm, &data, &s));
        [a?, b?]
    };

    // -----------------------------------------------------------------------------------------
    step(5, "Results");
    let persistence = (split..series.len())
        .map(|i| ((series[i - 1] - series[i]) * scale).powi(2))
        .sum::<f64>()
        / (series.len() - split) as f64;
    let mut t = Table::new(&[
        "cell",
        "parameters",
        "validation RMSE",
        "best validation RMSE",
        "train seconds",
    ]);
    for r in &runs {
        let best = r.val.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        t.row(vec![
            r.name.into(),
            r.params.to_string(),
            format!("{:.2}", r.val.last().map_or(f64::NAN, |p| p.1)),
            format!("{best:.2}"),
            format!("{:.1}", r.seconds),
        ]);
    }
    t.row(vec![
        "persistence".into(),
        "0".into(),
        format!("{:.2}", persistence.sqrt()),
        "—".into(),
        "—".into(),
    ]);
    t.print();
    println!("\nRMSE in sunspot units; persistence forecasts next month = this month.");

    let mut train_plot =
        LinePlot::new("Training loss", "training step", "train MSE (scaled, log scale)").log_y();
    let mut val_plot = LinePlot::new("Validation error", "training step", "validation RMSE (sunspots)");
    for (c, r) in runs.iter().enumerate() {
        train_plot = train_plot.series(Series::new(r.name, c, r.train.clone()));
        // From the first evaluation on: the untrained model at step 0 would flatten the scale.
        val_plot = val_plot.series(Series::new(r.name, c, r.val[1..].to_vec()));
    }
    let end = steps as f64;
    val_plot = val_plot.series(
        Series::new(
            "persistence",
            7,
            vec![(0.0, persistence.sqrt()), (end, persistence.sqrt())],
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

    args.finish();
    Ok(())
}

struct Setup {
    steps: usize,
    batch: usize,
    lr: f64,
    eval_every: usize,
    seed: u64,
}

/// Windows and targets for training and validation, and the factor that scaled them.
struct Data {
    train: (Vec<Vec<f64>>, Vec<f64>),
    val: (Vec<Vec<f64>>, Vec<f64>),
    scale: f64,
}

struct Run {
    name: &'static str,
    params: usize,
    train: Vec<(f64, f64)>,
    val: Vec<(f64, f64)>,
    seconds: f64,
}

/// Trains `layer` + a linear head on the last hidden state; any cell type.
fn fit<C: Cell<f32>>(name: &'static str, layer: Recurrent<f32, C>, data: &Data, s: &Setup) -> AnyResult<Run> {
    let start = std::time::Instant::now();
    let mut rng = Rng::seed(s.seed + 10);
    let head = Linear::new(layer.output_size(), 1, &mut rng);
    let params: Vec<Param<f32>> = layer.param_list().into_iter().chain(head.param_list()).collect();
    let n_params = params.iter().map(|p| p.len()).sum();
    let mut opt = Adam::new(
        params,
        AdamConfig {
            lr: s.lr,
            ..AdamConfig::default()
        },
    )?;
    let predict = |x: &Var<f32>| -> Result<Var<f32>> { head.forward(&layer.forward(x)?.h_n().select(0, 0)?) };
    let val_rmse = || -> AnyResult<f64> {
        let all: Vec<usize> = (0..data.val.0.len()).collect();
        let (x, y) = batch_arrays(&data.val.0, &data.val.1, &all);
        let tape = Tape::no_grad();
        let loss = mse(
            &predict(&tape.constant(x))?,
            &tape.constant(y),
            Reduction::Mean,
            None,
        )?;
        Ok((loss.item()? as f64).sqrt() * data.scale)
    };
    let (mut train, mut val) = (Vec::new(), vec![(0.0, val_rmse()?)]);
    let mut window_loss = (0.0, 0usize);
    for step in 1..=s.steps {
        let idx: Vec<usize> = (0..s.batch).map(|_| rng.below(data.train.0.len())).collect();
        let (x, y) = batch_arrays(&data.train.0, &data.train.1, &idx);
        let tape = Tape::new();
        let loss = mse(
            &predict(&tape.constant(x))?,
            &tape.constant(y),
            Reduction::Mean,
            None,
        )?;
        window_loss = (window_loss.0 + loss.item()? as f64, window_loss.1 + 1);
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, 1.0)?;
        opt.step(&grads)?;
        if step % s.eval_every == 0 || step == s.steps {
            train.push((step as f64, window_loss.0 / window_loss.1 as f64));
            window_loss = (0.0, 0);
            val.push((step as f64, val_rmse()?));
        }
    }
    Ok(Run {
        name,
        params: n_params,
        train,
        val,
        seconds: start.elapsed().as_secs_f64(),
    })
}
