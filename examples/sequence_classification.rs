//! # Classifying ragged sequences: which waveform is it?
//!
//! Real sequence data is ragged: utterances, sessions, sensor recordings all have their own
//! length. Keras pads and masks, PyTorch packs; eddy's `fit_sequences` takes the list of
//! sequences as it is, passes the lengths to the recurrent layers (so padding never reaches the
//! loss or the final state), and can bucket sequences of similar length into batches.
//!
//! The question: a noisy sequence of 8 to 64 steps is one period-varying sine, square, sawtooth
//! or triangle wave. How well does a small bidirectional recurrent classifier (a user cell
//! written with `#[derive(Module)]`) tell them apart, and how does that depend on the length?
//! And how much padding does bucketing save?
//!
//! ```sh
//! cargo run --release --example sequence_classification              # the full run, ~5 s
//! cargo run --release --example sequence_classification -- --quick    # seconds (CI)
//! ```
//! Flags: `--epochs N`, `--hidden N`, `--train N`, `--batch N`, `--seed N`, `--out DIR`.

#[path = "common/mod.rs"]
mod common;

use common::{save_panels, step, AnyResult, Args, LinePlot, Series, Table};
use eddy::nn::data::{one_hot, pad_sequences};
use eddy::nn::fit::{EarlyStopping, FitOptions, History, Monitor};
use eddy::nn::init;
use eddy::nn::ragged::{Bucketing, RaggedOptions};
use eddy::nn::sequential::{dense, recurrent, Loss, Metric, Model, Optim, Sequential};
use eddy::prelude::*;
use ndarray::{ArrayD, Axis};

const USAGE: &str = "sequence_classification: a bidirectional user cell classifies ragged noisy waveforms

  --epochs N   at most this many epochs, early stopping on the validation loss (default 30; quick 8)
  --hidden N   units per direction (default 24; quick 12)
  --train N    training sequences (default 2000; quick 320)
  --batch N    batch size (default 32)
  --seed N     the random seed (default 0)
  --out DIR    where the plot goes (default: out/sequence_classification)
  --quick      a few seconds, for CI (also EDDY_QUICK=1)";

/// The four families, in class order.
const FAMILIES: [&str; 4] = ["sine", "square", "sawtooth", "triangle"];
/// Shortest and longest sequence.
const MIN_LEN: usize = 8;
const MAX_LEN: usize = 64;
/// The length buckets of the report.
const BUCKETS: [(usize, usize); 4] = [(8, 15), (16, 31), (32, 47), (48, 64)];

// ---------------------------------------------------------------------------------------------
// The cell: a minimal gated unit (JANET's forget gate only), its parameters listed by the
// derive, its sizes read from their shapes. `#[derive(Module)]` is used through the facade.
// ---------------------------------------------------------------------------------------------

/// `s, c̃ = W x + U h + b`; `h' = σ(s) ⊙ h + σ(1 − s) ⊙ tanh(c̃)`.
#[derive(Clone, eddy::nn::Module)]
struct Janet<F: Float> {
    #[cell(input = 1, state = 0 / 2)]
    w: Param<F>, // [2H, I]
    u: Param<F>, // [2H, H]
    b: Param<F>, // [2H]
}

fn janet<F: Float>(i: usize, h: usize, rng: &mut Rng) -> Janet<F> {
    let mut p = |name: &str, shape: &[usize]| Param::new(name, init::pytorch_default(shape, h, rng));
    let (w, u, b) = (p("w", &[2 * h, i]), p("u", &[2 * h, h]), p("b", &[2 * h]));
    Janet { w, u, b }
}

impl<F: Float> Cell<F> for Janet<F> {
    type State = Var<F>;
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        x.linear(&x.tape().param(&self.w), Some(&x.tape().param(&self.b)))
    }
    fn step(&self, xw: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
        let gates = (xw + h.matmul_t(&h.tape().param(&self.u))?)?;
        let [s, c]: [Var<F>; 2] = gates.chunk(2, 1)?.try_into().expect("two chunks");
        (s.sigmoid()? * h)? + (s.neg()?.shift(F::one())?.sigmoid()? * c.tanh()?)?
    }
}

// ---------------------------------------------------------------------------------------------
// The data
// ---------------------------------------------------------------------------------------------

/// `n` sequences `[T, 1]` of random lengths, and their classes.
fn waveforms(n: usize, rng: &mut Rng) -> (Vec<ArrayD<f32>>, Vec<usize>) {
    let mut xs = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let class = rng.below(FAMILIES.len());
        let len = MIN_LEN + rng.below(MAX_LEN - MIN_LEN + 1);
        let period = rng.uniform_in(6.0, 16.0);
        let phase = rng.uniform();
        let amp = rng.uniform_in(0.6, 1.4);
        let x = ArrayD::from_shape_fn(vec![len, 1], |ix| {
            let u = (ix[0] as f64 / period + phase).fract(); // position in the period, [0, 1)
            let clean = match class {
                0 => (std::f64::consts::TAU * u).sin(),
                1 => {
                    if u < 0.5 {
                        1.0
                    } else {
                        -1.0
                    }
                }
                2 => 2.0 * u - 1.0,
                _ => 1.0 - 4.0 * (u - 0.5).abs(),
            };
            (amp * clean + 0.35 * rng.normal()) as f32
        });
        xs.push(x);
        labels.push(class);
    }
    (xs, labels)
}

/// The share of padded steps in an epoch's batches (each cut to its longest sequence).
fn padding_share(batches: &[Vec<usize>], lengths: &[usize]) -> f64 {
    let (mut padded, mut total) = (0usize, 0usize);
    for b in batches {
        let longest = b.iter().map(|&i| lengths[i]).max().unwrap_or(0);
        total += longest * b.len();
        padded += b.iter().map(|&i| longest - lengths[i]).sum::<usize>();
    }
    padded as f64 / total as f64
}

fn model(hidden: usize, seed: u64) -> Result<Model<f32>> {
    let mut rng = Rng::seed(seed);
    let mut m = Sequential::new()
        .add(
            recurrent(move |i, rng| janet::<f32>(i, hidden, rng))
                .named("janet")
                .bidirectional(true),
        )
        .add(dense(FAMILIES.len()))
        .build::<f32>(1, &mut rng)?;
    m.compile(Optim::adam(0.01), Loss::CrossEntropy)?;
    m.set_metrics(&[Metric::Accuracy])?;
    Ok(m)
}

fn arg_max(v: &ArrayD<f32>) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

// ---------------------------------------------------------------------------------------------
// The notebook
// ---------------------------------------------------------------------------------------------

fn main() -> AnyResult {
    let args = Args::parse("sequence_classification", USAGE);
    let quick = args.quick;
    let epochs: usize = args.get("epochs", if quick { 8 } else { 30 });
    let hidden: usize = args.get("hidden", if quick { 12 } else { 24 });
    let n_train: usize = args.get("train", if quick { 320 } else { 2000 });
    let batch: usize = args.get("batch", 32);
    let seed: u64 = args.get("seed", 0);

    // -----------------------------------------------------------------------------------------
    step(1, "Ragged data: four noisy waveform families, 8 to 64 steps each");
    let mut rng = Rng::seed(seed);
    let (train_x, train_y) = waveforms(n_train, &mut rng);
    let (val_x, val_y) = waveforms(n_train / 5, &mut rng);
    let (test_x, test_y) = waveforms(n_train / 2, &mut rng);
    let mut t = Table::new(&["split", "sequences", "steps", "shortest", "longest"]);
    for (name, xs) in [("train", &train_x), ("validation", &val_x), ("test", &test_x)] {
        let lens: Vec<usize> = xs.iter().map(|x| x.shape()[0]).collect();
        t.row(vec![
            name.into(),
            xs.len().to_string(),
            lens.iter().sum::<usize>().to_string(),
            lens.iter().min().unwrap_or(&0).to_string(),
            lens.iter().max().unwrap_or(&0).to_string(),
        ]);
    }
    t.print();
    println!("\nEach sequence is [T, 1]; the label is the family. Period 6–16 steps, random phase and amplitude, noise σ = 0.35.");

    // -----------------------------------------------------------------------------------------
    step(2, "Bucketing: how much padding do the batches carry?");
    // A batch is cut to its longest sequence; the rest of each row is padding the recurrent
    // layer skips over (its state is kept, its outputs are zero) but still computes.
    let lengths: Vec<usize> = train_x.iter().map(|x| x.shape()[0]).collect();
    let mut t = Table::new(&["batching", "padded steps"]);
    let shuffled = Bucketing {
        pool_batches: Some(1),
    };
    let mut r = Rng::seed(seed);
    for (name, b) in [
        ("shuffled (pools of 1 batch = no bucketing)", shuffled),
        (
            "bucketed, pools of 8 batches",
            Bucketing {
                pool_batches: Some(8),
            },
        ),
        ("bucketed, one pool (the whole set)", Bucketing::default()),
    ] {
        let share = padding_share(&b.batches(&lengths, batch, true, &mut r), &lengths);
        t.row(vec![name.into(), format!("{:.1}%", 100.0 * share)]);
    }
    t.print();

    // -----------------------------------------------------------------------------------------
    step(
        3,
        "Train with fit_sequences: bucketing, validation, early stopping",
    );
    let val = pad_sequences(&val_x)?;
    let val_targets = one_hot::<f32>(&val_y, FAMILIES.len())?;
    let targets = one_hot::<f32>(&train_y, FAMILIES.len())?;
    let mut m = model(hidden, seed + 1)?;
    println!(
        "model: janet (bidirectional, {hidden} units per direction, last valid step) → dense({}), \
         {} parameters; cross-entropy, Adam(0.01)",
        FAMILIES.len(),
        m.param_list().iter().map(|p| p.len()).sum::<usize>()
    );
    let start = std::time::Instant::now();
    let history: History = m.fit_sequences(
        &train_x,
        &targets,
        FitOptions {
            epochs,
            batch_size: batch,
            early_stopping: Some(EarlyStopping {
                monitor: Monitor::ValLoss,
                patience: 4,
                min_delta: 1e-4,
                restore_best_weights: true,
            }),
            ..FitOptions::default()
        },
        RaggedOptions {
            validation_data: Some((&val.x, &val.lengths[..], &val_targets)),
            bucketing: Some(Bucketing {
                pool_batches: Some(8),
            }),
        },
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let mut t = Table::new(&["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]);
    for (k, &e) in history.epoch.iter().enumerate() {
        t.row(vec![
            e.to_string(),
            format!("{:.4}", history.loss[k]),
            format!("{:.3}", history.metrics["accuracy"][k]),
            format!("{:.4}", history.val_loss[k]),
            format!("{:.3}", history.metrics["val_accuracy"][k]),
        ]);
    }
    t.print();
    println!(
        "\n{} epochs in {seconds:.1} s; best epoch {:?} (its weights restored).",
        history.epoch.len(),
        history.best_epoch
    );

    // -----------------------------------------------------------------------------------------
    step(4, "Test accuracy per length bucket");
    let test_targets = one_hot::<f32>(&test_y, FAMILIES.len())?;
    let ev = m.evaluate_sequences(&test_x, &test_targets)?;
    let pred = m.predict_sequences(&test_x)?;
    let mut t = Table::new(&["length", "sequences", "accuracy", "chance"]);
    let mut by_length = Vec::new();
    for &(lo, hi) in &BUCKETS {
        let rows: Vec<usize> = (0..test_x.len())
            .filter(|&i| (lo..=hi).contains(&test_x[i].shape()[0]))
            .collect();
        let hits = rows.iter().filter(|&&i| arg_max(&pred[i]) == test_y[i]).count();
        let acc = hits as f64 / rows.len().max(1) as f64;
        by_length.push((0.5 * (lo + hi) as f64, acc));
        t.row(vec![
            format!("{lo}–{hi}"),
            rows.len().to_string(),
            format!("{acc:.3}"),
            format!("{:.2}", 1.0 / FAMILIES.len() as f64),
        ]);
    }
    t.row(vec![
        "all".into(),
        test_x.len().to_string(),
        format!("{:.3}", ev.metrics["accuracy"]),
        format!("{:.2}", 1.0 / FAMILIES.len() as f64),
    ]);
    t.print();
    println!(
        "\nTest cross-entropy {:.4}; chance is 1/{} (the classes are balanced in expectation).",
        ev.loss,
        FAMILIES.len()
    );
    // The confusions: which families are mistaken for which.
    let mut confusion = vec![vec![0usize; FAMILIES.len()]; FAMILIES.len()];
    for (i, p) in pred.iter().enumerate() {
        confusion[test_y[i]][arg_max(p)] += 1;
    }
    let mut header = vec!["true \\ predicted"];
    header.extend(FAMILIES);
    let mut t = Table::new(&header);
    for (c, row) in confusion.iter().enumerate() {
        let mut cells = vec![FAMILIES[c].to_string()];
        cells.extend(row.iter().map(|v| v.to_string()));
        t.row(cells);
    }
    t.print();

    // -----------------------------------------------------------------------------------------
    step(5, "Padding never reaches the answer");
    // The classifier reads each sequence's last valid step: the prediction for a sequence in
    // a padded batch is the prediction for it alone.
    let alone = m.predict(&test_x[0].clone().insert_axis(Axis(0)))?;
    let diff = alone
        .index_axis(Axis(0), 0)
        .iter()
        .zip(pred[0].iter())
        .fold(0.0f32, |d, (a, b)| d.max((a - b).abs()));
    println!(
        "sequence 0 ({} steps) alone vs inside padded batches of up to {MAX_LEN} steps: max |Δ logit| = {diff:.1e}",
        test_x[0].shape()[0]
    );
    if diff > 1e-4 {
        return Err(format!("padding changed the prediction: {diff}").into());
    }

    let at = |v: &[f64]| -> Vec<(f64, f64)> {
        history
            .epoch
            .iter()
            .zip(v)
            .map(|(&e, &l)| (e as f64, l))
            .collect()
    };
    let curves = LinePlot::new("Training", "epoch", "cross-entropy")
        .series(Series::new("train", 0, at(&history.loss)))
        .series(Series::new("validation", 1, at(&history.val_loss)));
    let accuracy = LinePlot::new("Accuracy", "epoch", "accuracy")
        .series(Series::new("train", 0, at(&history.metrics["accuracy"])))
        .series(Series::new("validation", 1, at(&history.metrics["val_accuracy"])));
    let lengths_plot = LinePlot::new(
        "Test accuracy by length",
        "sequence length (bucket centre)",
        "accuracy",
    )
    .series(Series::new("bidirectional JANET", 2, by_length))
    .series(Series::new("chance", 7, vec![(8.0, 0.25), (64.0, 0.25)]).dashed());
    let path = args.out_file("sequence_classification.svg")?;
    save_panels(
        &path,
        "Which waveform? Ragged sequences, bucketed batches",
        &[curves, accuracy, lengths_plot],
        3,
    )?;
    println!("wrote {}", path.display());

    args.finish();
    Ok(())
}
