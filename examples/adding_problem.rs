//! # The adding problem: which recurrent cells remember across a long gap?
//!
//! **Question.** The seed's FAQ says plain (Elman) RNNs train badly on long sequences because
//! their gradients vanish, and that LSTM and GRU fix this with gates. Can we see it?
//!
//! **Task** (Hochreiter & Schmidhuber, 1997). Each sequence has `T` steps of two channels: a
//! random value in `[0, 1]`, and a marker that is 1 at exactly two positions — one in each
//! half — and 0 elsewhere. The target is the sum of the two marked values. A network that
//! ignores the input and always answers 1 (the mean of the target) scores an MSE of
//! `Var(U + U) = 1/6 ≈ 0.167`; anything well below that has learned to carry a value across
//! up to `T` steps.
//!
//! **Published result** (Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015; Arjovsky et
//! al. 2016): LSTM and GRU drive the MSE far below the baseline; a tanh Elman RNN does not,
//! except for short sequences.
//!
//! ```sh
//! cargo run --release --example adding_problem                 # full run, a few minutes
//! cargo run --release --example adding_problem -- --quick      # T = 50 only, seconds (CI)
//! cargo run --release --example adding_problem -- --lengths 50,100 --steps 1000 --hidden 64
//! ```

#[path = "common/mod.rs"]
mod common;

use common::*;
use eddy::nn::clip::clip_grad_norm;
use eddy::nn::loss::{mse, Reduction};
use eddy::nn::optim::{Adam, AdamConfig, Optimizer};
use eddy::prelude::*;
use plotters::prelude::SeriesLabelPosition;
use rayon::prelude::*;

const USAGE: &str = "adding_problem: Elman RNN vs LSTM vs GRU on the adding problem

flags:
  --lengths 10,50,100,200  sequence lengths T (10: a short one, where even an RNN learns)
  --steps N              training steps per run (default 1500; quick 150)
  --hidden N             hidden units (default 32)
  --batch N              sequences per step (default 32)
  --lr X                 Adam learning rate (default 1e-2)
  --lstm-init NAME       LSTM gate biases: chrono (default), forget1, or pytorch
  --cells rnn,lstm,gru   which cells to train
  --clip X               gradient-norm clipping threshold (default 1.0)
  --test N               test sequences (default 500; quick 200)
  --eval-every N         steps between test evaluations (default 100; quick 25)
  --seed N               seed of data and weights (default 0)
  --out DIR              output folder (default out/adding_problem)
  --quick                small run for CI (also EDDY_QUICK=1)";

/// The knobs of one run, read from the flags.
#[derive(Clone)]
struct Setup {
    steps: usize,
    hidden: usize,
    batch: usize,
    lr: f64,
    lstm_init: String,
    clip: f64,
    eval_every: usize,
    seed: u64,
}

fn main() -> AnyResult {
    let args = Args::parse("adding_problem", USAGE);
    let quick = args.quick;
    let lengths: Vec<usize> = args.list("lengths", if quick { &[50] } else { &[10, 50, 100, 200] });
    let setup = Setup {
        steps: args.get("steps", if quick { 150 } else { 1500 }),
        hidden: args.get("hidden", 32),
        batch: args.get("batch", 32),
        lr: args.get("lr", 1e-2),
        lstm_init: args.get("lstm-init", "chrono".to_string()),
        clip: args.get("clip", 1.0),
        eval_every: args.get("eval-every", if quick { 25 } else { 100 }),
        seed: args.get("seed", 0),
    };
    let kinds: Vec<Kind> = args
        .list("cells", &["rnn".to_string(), "lstm".into(), "gru".into()])
        .iter()
        .map(|name| Kind::parse(name))
        .collect::<AnyResult<_>>()?;
    let test_size: usize = args.get("test", if quick { 200 } else { 500 });
    if quick {
        println!(
            "(quick mode: T = {lengths:?}, {} steps — too short to show the published pattern)",
            setup.steps
        );
    }

    // -----------------------------------------------------------------------------------------
    step(1, "The data: two channels, two marked values, their sum");
    // One fixed test set per T, drawn from its own seed so that every cell sees the same one.
    let example = adding_batch(&mut Rng::seed(99), 1, 10);
    println!("One sequence of length 10 (value, marker) → target:");
    let mut t = Table::new(&["t", "value", "marker"]);
    for s in 0..10 {
        t.row(vec![
            s.to_string(),
            format!("{:.3}", example.x[[s, 0, 0]]),
            format!("{}", example.x[[s, 0, 1]]),
        ]);
    }
    t.print();
    println!("target = {:.3}", example.y[[0, 0]]);

    // -----------------------------------------------------------------------------------------
    step(2, "The baseline: always answer 1");
    let tests: Vec<(usize, Batch)> = lengths
        .iter()
        .map(|&len| {
            (
                len,
                adding_batch(&mut Rng::seed(1000 + len as u64), test_size, len),
            )
        })
        .collect();
    let mut t = Table::new(&["T", "test sequences", "MSE of answering 1", "theory 1/6"]);
    let mut baselines = Vec::new();
    for (len, test) in &tests {
        let b = test.y.iter().map(|y| (*y as f64 - 1.0).powi(2)).sum::<f64>() / test.y.len() as f64;
        baselines.push(b);
        t.row(vec![
            len.to_string(),
            test_size.to_string(),
            sig(b, 3),
            "0.167".into(),
        ]);
    }
    t.print();

    // -----------------------------------------------------------------------------------------
    step(3, "Train an Elman RNN (tanh), an LSTM and a GRU at each T");
    println!(
        "Each: {} hidden units → linear head on the last hidden state; Adam lr {}, batch {}, \
         {} steps, gradient norm clipped at {}; LSTM gate biases: {} (see `init_lstm_biases`). \
         Runs go in parallel on rayon's threads.",
        setup.hidden, setup.lr, setup.batch, setup.steps, setup.clip, setup.lstm_init
    );
    let jobs: Vec<(usize, Kind)> = tests
        .iter()
        .flat_map(|(len, _)| kinds.iter().map(|k| (*len, *k)))
        .collect();
    let runs: Vec<AnyResult<Run>> = jobs
        .par_iter()
        .map(|&(len, kind)| {
            let test = &tests.iter().find(|(l, _)| *l == len).expect("a test set").1;
            let run = train(kind, len, test, &setup)?;
            println!(
                "  {:<4} T = {:<3}  test MSE {:>9}  ({:.0} s)",
                kind.name(),
                len,
                sig(run.final_mse, 3),
                run.seconds
            );
            Ok(run)
        })
        .collect();
    let runs: Vec<Run> = runs.into_iter().collect::<AnyResult<_>>()?;

    // -----------------------------------------------------------------------------------------
    step(4, "Final test MSE against the baseline");
    let mut header = vec!["cell".to_string()];
    header.extend(lengths.iter().map(|l| format!("T = {l}")));
    let header: Vec<&str> = header.iter().map(|s| s.as_str()).collect();
    let mut t = Table::new(&header);
    let mut row = vec!["answer 1 (baseline)".to_string()];
    row.extend(baselines.iter().map(|b| sig(*b, 3)));
    t.row(row);
    for &kind in &kinds {
        let mut row = vec![kind.name().to_string()];
        for (k, len) in lengths.iter().enumerate() {
            let r = runs
                .iter()
                .find(|r| r.kind == kind && r.len == *len)
                .expect("a run");
            let share = 100.0 * r.final_mse / baselines[k];
            row.push(format!(
                "{} ({}% of baseline)",
                sig(r.final_mse, 3),
                sig(share, 2)
            ));
        }
        t.row(row);
    }
    t.print();
    println!(
        "\nBelow ~10% of the baseline a cell has learned to add the marked values; near 100% it \
         has learned only the mean."
    );

    // -----------------------------------------------------------------------------------------
    step(5, "Learning curves");
    let mut panels = Vec::new();
    for (k, len) in lengths.iter().enumerate() {
        let mut plot = LinePlot::new(
            format!("Adding problem, T = {len}"),
            "training step",
            "test MSE (log scale)",
        )
        .log_y()
        .legend_at(SeriesLabelPosition::MiddleRight);
        for kind in &kinds {
            let c = Kind::ALL.iter().position(|k| k == kind).unwrap_or(0);
            let r = runs
                .iter()
                .find(|r| r.kind == *kind && r.len == *len)
                .expect("a run");
            plot = plot.series(Series::new(kind.name(), c, r.curve.clone()));
        }
        let span = vec![(0.0, baselines[k]), (setup.steps as f64, baselines[k])];
        plot = plot.series(Series::new("baseline: answer 1", 7, span).dashed());
        let path = args.out_file(&format!("learning_curves_T{len}.svg"))?;
        plot.save(&path)?;
        println!("wrote {}", path.display());
        panels.push(plot);
    }
    let path = args.out_file("learning_curves.svg")?;
    save_panels(
        &path,
        "Adding problem: test MSE while training",
        &panels,
        if panels.len() == 4 { 2 } else { panels.len().min(3) },
    )?;
    println!("wrote {}", path.display());

    args.finish();
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Rnn,
    Lstm,
    Gru,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Rnn, Kind::Lstm, Kind::Gru];

    fn parse(name: &str) -> AnyResult<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("unknown cell {name:?}: expected rnn, lstm or gru").into())
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Rnn => "RNN",
            Kind::Lstm => "LSTM",
            Kind::Gru => "GRU",
        }
    }
}

/// What one training run leaves: the test-MSE curve and its last value.
struct Run {
    kind: Kind,
    len: usize,
    curve: Vec<(f64, f64)>,
    final_mse: f64,
    seconds: f64,
}

/// Builds the layer of `kind` and trains it; the cell type is a type parameter of `fit`.
fn train(kind: Kind, len: usize, test: &Batch, s: &Setup) -> AnyResult<Run> {
    let mut rng = Rng::seed(s.seed);
    let config = RecurrentConfig::new(2, s.hidden);
    match kind {
        Kind::Rnn => fit(kind, len, config.rnn(Nonlinearity::Tanh, &mut rng), test, s, rng),
        Kind::Lstm => {
            let lstm = config.lstm(&mut rng);
            init_lstm_biases(&lstm, &s.lstm_init, len, &mut rng)?;
            fit(kind, len, lstm, test, s, rng)
        }
        Kind::Gru => fit(kind, len, config.gru(&mut rng), test, s, rng),
    }
}

/// Sets the LSTM's gate biases (PyTorch's gate order i, f, g, o; `bias_ih` carries them and
/// `bias_hh` is zeroed on those rows):
/// - `pytorch`: leave PyTorch's uniform init;
/// - `forget1`: forget bias 1, so the cell state is kept by default (Gers et al. 2000;
///   Jozefowicz et al. 2015);
/// - `chrono`: `b_f = log U(1, T − 1)`, `b_i = −b_f`: each unit starts with a memory time
///   scale somewhere up to the sequence length (Tallec & Ollivier 2018).
fn init_lstm_biases(lstm: &Lstm<f32>, how: &str, len: usize, rng: &mut Rng) -> AnyResult {
    let h = lstm.config.hidden_size;
    for cell in &lstm.cells {
        let Some((b_ih, b_hh)) = &cell.biases else {
            continue;
        };
        match how {
            "pytorch" => {}
            "forget1" => {
                b_ih.update(|b| b.slice_mut(ndarray::s![h..2 * h]).fill(1.0));
                b_hh.update(|b| b.slice_mut(ndarray::s![h..2 * h]).fill(0.0));
            }
            "chrono" => {
                let f: Vec<f32> = (0..h)
                    .map(|_| rng.uniform_in(1.0, len as f64 - 1.0).ln() as f32)
                    .collect();
                b_ih.update(|b| {
                    for k in 0..h {
                        b[k] = -f[k]; // input gate
                        b[h + k] = f[k]; // forget gate
                    }
                });
                b_hh.update(|b| b.slice_mut(ndarray::s![..2 * h]).fill(0.0));
            }
            other => return Err(format!("--lstm-init: unknown {other:?} (chrono, forget1, pytorch)").into()),
        }
    }
    Ok(())
}

/// The model: the recurrent layer, then a linear head on the last hidden state.
fn predict<C: Cell<f32>>(rnn: &Recurrent<f32, C>, head: &Linear<f32>, x: &Var<f32>) -> Result<Var<f32>> {
    let out = rnn.forward(x)?;
    let last = out.h_n().select(0, 0)?; // [B, H]: layer 0's final h
    head.forward(&last)
}

/// The training loop: a fresh tape per step, MSE, backward, clip, Adam.
fn fit<C: Cell<f32>>(
    kind: Kind,
    len: usize,
    rnn: Recurrent<f32, C>,
    test: &Batch,
    s: &Setup,
    mut rng: Rng,
) -> AnyResult<Run> {
    let start = std::time::Instant::now();
    let head = Linear::new(s.hidden, 1, &mut rng);
    let params: Vec<Param<f32>> = rnn.param_list().into_iter().chain(head.param_list()).collect();
    let mut opt = Adam::new(
        params,
        AdamConfig {
            lr: s.lr,
            ..AdamConfig::default()
        },
    )?;
    let mut data_rng = Rng::seed(s.seed * 7919 + len as u64);

    let evaluate = || -> Result<f64> {
        let tape = Tape::no_grad();
        let y = predict(&rnn, &head, &tape.constant(test.x.clone()))?;
        let loss = mse(&y, &tape.constant(test.y.clone()), Reduction::Mean, None)?;
        Ok(loss.item()? as f64)
    };

    let mut curve = vec![(0.0, evaluate()?)];
    for step in 1..=s.steps {
        let batch = adding_batch(&mut data_rng, s.batch, len);
        let tape = Tape::new();
        let y = predict(&rnn, &head, &tape.constant(batch.x))?;
        let loss = mse(&y, &tape.constant(batch.y), Reduction::Mean, None)?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, s.clip)?;
        opt.step(&grads)?;
        if step % s.eval_every == 0 || step == s.steps {
            curve.push((step as f64, evaluate()?));
        }
    }
    let final_mse = curve.last().map_or(f64::NAN, |p| p.1);
    Ok(Run {
        kind,
        len,
        curve,
        final_mse,
        seconds: start.elapsed().as_secs_f64(),
    })
}
