//! # Vanishing gradients, made visible
//!
//! **Question.** The seed's FAQ: "training is slow and unstable because of vanishing and
//! exploding gradients; LSTM and GRU add gates to fight them." How much of the error signal
//! at the last step of a sequence reaches the early steps, for each cell, before and after
//! training — and what does gradient clipping change?
//!
//! **What we measure.** The task is the adding problem (see `adding_problem.rs`): the loss
//! `L` is computed from the final hidden state `h_T` only, but the answer depends on inputs
//! anywhere in the sequence. Backpropagation through time carries `∂L/∂h_T` back to
//! `∂L/∂h_t = ∂L/∂h_{t+1} · ∂h_{t+1}/∂h_t`; if the Jacobians shrink vectors, `‖∂L/∂h_t‖`
//! decays geometrically in `T − t` and the early inputs receive no learning signal.
//!
//! To get `∂L/∂h_t` we unroll the cell ourselves with `Cell::step`, keep every `h_t` as a
//! `Var`, and ask the tape for `tape.grad(&[&loss], None, &[&h_1, …, &h_T], …)`. (Asking for
//! the gradient with respect to slices of the layer's *output* tensor, `out.output.unstack(0)`,
//! would give `∂L/∂output_t`: only the gradient that flows *through the output tensor*, which
//! is zero before `T` here because the loss reads only the last step; the recurrence inside the
//! layer passes states, not output slices. Unrolling by hand gives the full BPTT gradient.)
//!
//! ```sh
//! cargo run --release --example vanishing_gradients               # half a minute
//! cargo run --release --example vanishing_gradients -- --quick    # seconds (CI)
//! cargo run --release --example vanishing_gradients -- --len 100 --steps 1500
//! ```

#[path = "common/mod.rs"]
mod common;

use common::*;
use eddy::nn::clip::clip_grad_norm;
use eddy::nn::loss::{mse, Reduction};
use eddy::nn::optim::{Adam, AdamConfig, Optimizer};
use eddy::nn::RecurrentState;
use eddy::prelude::*;
use plotters::prelude::SeriesLabelPosition;
use rayon::prelude::*;

const USAGE: &str = "vanishing_gradients: ‖∂L/∂h_t‖ against t for RNN, LSTM, GRU

flags:
  --len T          sequence length (default 50; quick 30)
  --steps N        training steps (default 1000; quick 60)
  --hidden N       hidden units (default 32)
  --batch N        sequences per training step (default 32)
  --lr X           Adam learning rate (default 1e-2)
  --clip X         clipping threshold of the clipped runs (default 1.0)
  --seed N         seed (default 0)
  --out DIR        output folder (default out/vanishing_gradients)
  --quick          small run for CI (also EDDY_QUICK=1)";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rnn,
    Lstm,
    Gru,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Rnn, Kind::Lstm, Kind::Gru];
    fn name(self) -> &'static str {
        match self {
            Kind::Rnn => "RNN",
            Kind::Lstm => "LSTM",
            Kind::Gru => "GRU",
        }
    }
}

#[derive(Clone)]
struct Setup {
    len: usize,
    steps: usize,
    hidden: usize,
    batch: usize,
    lr: f64,
    clip: f64,
    seed: u64,
}

/// Everything one (cell, clipping) run measured.
struct Run {
    kind: Kind,
    clipped: bool,
    /// `‖∂L/∂h_t‖` for t = 1..T, at initialisation and after training.
    at_init: Vec<f64>,
    trained: Vec<f64>,
    /// The parameter-gradient norm (before clipping) at each training step.
    grad_norms: Vec<f64>,
    test_mse: f64,
    /// max |unrolled − layer| output difference, a check of the hand-written unroll.
    unroll_diff: f64,
}

fn main() -> AnyResult {
    let args = Args::parse("vanishing_gradients", USAGE);
    let quick = args.quick;
    let s = Setup {
        len: args.get("len", if quick { 30 } else { 50 }),
        steps: args.get("steps", if quick { 60 } else { 1000 }),
        hidden: args.get("hidden", 32),
        batch: args.get("batch", 32),
        lr: args.get("lr", 1e-2),
        clip: args.get("clip", 1.0),
        seed: args.get("seed", 0),
    };

    // -----------------------------------------------------------------------------------------
    step(1, "Setup");
    println!(
        "Adding problem with T = {}; {} hidden units; the gradient probe is a batch of 256 test \
         sequences. Each cell is trained twice for {} steps (Adam lr {}): once with the gradient \
         norm clipped at {}, once without.",
        s.len, s.hidden, s.steps, s.lr, s.clip
    );
    println!(
        "All cells start from PyTorch's initialisation (no forget-gate bias for the LSTM), so the \
         'at initialisation' profiles are those of the canonical cells."
    );
    let probe = adding_batch(&mut Rng::seed(12345), 256, s.len);

    // -----------------------------------------------------------------------------------------
    step(
        2,
        "Measure at initialisation, train, measure again (6 runs in parallel)",
    );
    let jobs: Vec<(Kind, bool)> = Kind::ALL.iter().flat_map(|&k| [(k, true), (k, false)]).collect();
    let runs: Vec<AnyResult<Run>> = jobs
        .par_iter()
        .map(|&(kind, clipped)| {
            let mut rng = Rng::seed(s.seed);
            let config = RecurrentConfig::new(2, s.hidden);
            let run = match kind {
                Kind::Rnn => study(
                    kind,
                    clipped,
                    config.rnn(Nonlinearity::Tanh, &mut rng),
                    &probe,
                    &s,
                    rng,
                ),
                Kind::Lstm => study(kind, clipped, config.lstm(&mut rng), &probe, &s, rng),
                Kind::Gru => study(kind, clipped, config.gru(&mut rng), &probe, &s, rng),
            }?;
            println!(
                "  done: {} {}",
                kind.name(),
                if clipped { "clipped" } else { "unclipped" }
            );
            Ok(run)
        })
        .collect();
    let runs: Vec<Run> = runs.into_iter().collect::<AnyResult<_>>()?;
    let worst = runs.iter().map(|r| r.unroll_diff).fold(0.0, f64::max);
    println!("The hand-written unroll matches the layer's forward to {worst:.1e} (max |difference|).");

    // -----------------------------------------------------------------------------------------
    step(3, "How much of ∂L/∂h_T reaches h_1?");
    let mut t = Table::new(&[
        "cell",
        "when",
        "‖∂L/∂h_T‖",
        "‖∂L/∂h_1‖ / ‖∂L/∂h_T‖",
        "median factor per step",
        "steps back to 1%",
        "test MSE",
    ]);
    for kind in Kind::ALL {
        let clipped = runs.iter().find(|r| r.kind == kind && r.clipped).expect("a run");
        let free = runs.iter().find(|r| r.kind == kind && !r.clipped).expect("a run");
        profile_row(&mut t, kind.name(), "initialisation", &clipped.at_init, f64::NAN);
        profile_row(
            &mut t,
            kind.name(),
            "trained, clipped",
            &clipped.trained,
            clipped.test_mse,
        );
        profile_row(
            &mut t,
            kind.name(),
            "trained, no clip",
            &free.trained,
            free.test_mse,
        );
    }
    t.print();
    println!(
        "\n`median factor per step` is the median of ‖∂L/∂h_t‖ / ‖∂L/∂h_(t+1)‖: below 1 the signal \
         vanishes exponentially with distance. `steps back to 1%`: how many steps before T the \
         norm stays above 1% of ‖∂L/∂h_T‖. The baseline MSE (answer 1) is ≈ 0.167."
    );

    step(4, "Gradient norms during training, with and without clipping");
    let mut t = Table::new(&[
        "cell",
        "clipping",
        "median ‖∇θ‖",
        "max ‖∇θ‖",
        "steps with ‖∇θ‖ > 10× median",
    ]);
    for r in &runs {
        let mut sorted = r.grad_norms.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let max = sorted.last().copied().unwrap_or(f64::NAN);
        let spikes = r.grad_norms.iter().filter(|g| **g > 10.0 * median).count();
        let clip = if r.clipped {
            format!("at {}", s.clip)
        } else {
            "none".into()
        };
        t.row(vec![
            r.kind.name().into(),
            clip,
            sig(median, 3),
            sig(max, 3),
            spikes.to_string(),
        ]);
    }
    t.print();

    // -----------------------------------------------------------------------------------------
    step(5, "Plots");
    let panels = [
        profile_plot(&runs, "at initialisation", &|r| {
            r.clipped.then(|| r.at_init.clone())
        }),
        profile_plot(&runs, "after training, clipped", &|r| {
            r.clipped.then(|| r.trained.clone())
        }),
        profile_plot(&runs, "after training, no clipping", &|r| {
            (!r.clipped).then(|| r.trained.clone())
        }),
    ];
    let path = args.out_file("grad_vs_t.svg")?;
    save_panels(
        &path,
        &format!("‖∂L/∂h_t‖ on the adding problem, T = {}", s.len),
        &panels,
        3,
    )?;
    println!("wrote {}", path.display());

    // Per-step norms are noisy: plot the mean of each block of 20 steps, one panel per cell.
    let block = 20.min(s.steps.max(1));
    let panels: Vec<LinePlot> = Kind::ALL
        .iter()
        .map(|kind| {
            let mut plot =
                LinePlot::new(kind.name(), "training step", "‖∇θ L‖, mean of 20 steps (log)").log_y();
            for r in runs.iter().filter(|r| r.kind == *kind) {
                let (label, color) = if r.clipped {
                    ("clipped run", 0)
                } else {
                    ("unclipped run", 1)
                };
                plot = plot.series(Series::new(label, color, smooth(&r.grad_norms, block)));
            }
            let line = vec![(0.0, s.clip), (s.steps as f64, s.clip)];
            plot.series(Series::new("clipping threshold", 7, line).dashed())
        })
        .collect();
    let path = args.out_file("grad_norm_training.svg")?;
    save_panels(
        &path,
        "Parameter-gradient norm during training, before clipping",
        &panels,
        3,
    )?;
    println!("wrote {}", path.display());

    args.finish();
    Ok(())
}

/// One row of the table of step 3: how the gradient norms `g` (t = 1..T) fall off.
fn profile_row(t: &mut Table, name: &str, when: &str, g: &[f64], mse: f64) {
    let (first, last) = (g[0], g[g.len() - 1]);
    // How far back does 1% of the signal reach? (steps before T)
    let reach = g.iter().rev().take_while(|v| **v >= 0.01 * last).count() - 1;
    // The median shrinkage from one step to the one before it.
    let mut factors: Vec<f64> = g
        .windows(2)
        .filter(|w| w[1] > 0.0 && w[0] > 0.0)
        .map(|w| w[0] / w[1])
        .collect();
    factors.sort_by(f64::total_cmp);
    let factor = factors.get(factors.len() / 2).copied().unwrap_or(f64::NAN);
    let mse = if mse.is_nan() {
        "—".to_string()
    } else {
        sig(mse, 3)
    };
    let ratio = if first == 0.0 {
        "0 (underflow)".to_string()
    } else {
        sig(first / last, 2)
    };
    t.row(vec![
        name.into(),
        when.into(),
        sig(last, 3),
        ratio,
        sig(factor, 3),
        reach.to_string(),
        mse,
    ]);
}

/// One panel of `‖∂L/∂h_t‖` against t: a line for each run that `pick` gives a profile of.
fn profile_plot(runs: &[Run], title: &str, pick: &dyn Fn(&Run) -> Option<Vec<f64>>) -> LinePlot {
    let mut plot = LinePlot::new(title, "time step t", "‖∂L/∂h_t‖ (log scale)")
        .log_y()
        .legend_at(SeriesLabelPosition::UpperLeft);
    for (c, kind) in Kind::ALL.iter().enumerate() {
        for r in runs.iter().filter(|r| r.kind == *kind) {
            if let Some(g) = pick(r) {
                let pts = g.iter().enumerate().map(|(t, v)| ((t + 1) as f64, *v)).collect();
                plot = plot.series(Series::new(kind.name(), c, pts));
            }
        }
    }
    plot
}

/// The mean of each block of `block` values, at the block's last step.
fn smooth(g: &[f64], block: usize) -> Vec<(f64, f64)> {
    g.chunks(block)
        .enumerate()
        .map(|(i, c)| (((i + 1) * block) as f64, c.iter().sum::<f64>() / c.len() as f64))
        .collect()
}

/// The model's prediction from the final hidden state, `[B, 1]`.
fn head_loss(head: &Linear<f32>, h_last: &Var<f32>, y: &Var<f32>) -> Result<Var<f32>> {
    mse(&head.forward(h_last)?, y, Reduction::Mean, None)
}

/// `‖∂L/∂h_t‖` for every t: unroll layer 0's cell by hand, keeping each `h_t`.
fn grad_profile<C: Cell<f32>>(
    layer: &Recurrent<f32, C>,
    head: &Linear<f32>,
    batch: &Batch,
) -> Result<(Vec<f64>, f64)> {
    let tape = Tape::new();
    let x = tape.constant(batch.x.clone());
    let cell = &layer.cells[0];
    let projected = cell.project(&x)?; // [T, B, P] in one GEMM, as the layer does
    let mut state = cell.zero_state(&tape, batch.x.shape()[1])?;
    let mut hs = Vec::new();
    for x_t in projected.unstack(0)? {
        state = cell.step(&x_t, &state)?;
        hs.push(state.parts()[0].clone()); // h_t, [B, H]
    }
    let last = hs.last().expect("T ≥ 1");
    let loss = head_loss(head, last, &tape.constant(batch.y.clone()))?;
    let wrt: Vec<&Var<f32>> = hs.iter().collect();
    let grads = tape.grad(&[&loss], None, &wrt, GradOptions::default())?;
    let norms = grads
        .iter()
        .map(|g| {
            g.as_ref().map_or(0.0, |g| {
                g.value().iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()
            })
        })
        .collect();
    // Check: the layer's own forward gives the same final state.
    let layer_h = layer.forward(&x)?.h_n().select(0, 0)?;
    let diff = (&layer_h - last)?
        .value()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs() as f64));
    Ok((norms, diff))
}

/// Measures at initialisation, trains (clipped or not), measures again.
fn study<C: Cell<f32>>(
    kind: Kind,
    clipped: bool,
    layer: Recurrent<f32, C>,
    probe: &Batch,
    s: &Setup,
    mut rng: Rng,
) -> AnyResult<Run> {
    let head = Linear::new(s.hidden, 1, &mut rng);
    let (at_init, unroll_diff) = grad_profile(&layer, &head, probe)?;
    let params: Vec<Param<f32>> = layer.param_list().into_iter().chain(head.param_list()).collect();
    let mut opt = Adam::new(
        params,
        AdamConfig {
            lr: s.lr,
            ..AdamConfig::default()
        },
    )?;
    let mut data = Rng::seed(s.seed + 1);
    let mut grad_norms = Vec::new();
    for _ in 0..s.steps {
        let batch = adding_batch(&mut data, s.batch, s.len);
        let tape = Tape::new();
        let out = layer.forward(&tape.constant(batch.x))?;
        let loss = head_loss(&head, &out.h_n().select(0, 0)?, &tape.constant(batch.y))?;
        let mut grads = loss.backward()?;
        // With an infinite threshold clip_grad_norm only measures the norm.
        let max = if clipped { s.clip } else { f64::INFINITY };
        grad_norms.push(clip_grad_norm(&mut grads, max)?);
        opt.step(&grads)?;
    }
    let (trained, _) = grad_profile(&layer, &head, probe)?;
    let tape = Tape::no_grad();
    let out = layer.forward(&tape.constant(probe.x.clone()))?;
    let test_mse =
        head_loss(&head, &out.h_n().select(0, 0)?, &tape.constant(probe.y.clone()))?.item()? as f64;
    Ok(Run {
        kind,
        clipped,
        at_init,
        trained,
        grad_norms,
        test_mse,
        unroll_diff,
    })
}
