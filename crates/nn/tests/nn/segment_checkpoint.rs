//! Time-segment checkpointing (`RecurrentConfig::checkpoint_every`): a checkpointed layer gives
//! the full tape's outputs and gradients — bitwise in f32 on the same kernel path for the
//! outputs, the final states and (but through the scan) the input and initial-state gradients,
//! and for everything when one segment covers the sequence; to 1e-12 in f64 for everything — for
//! the built-in LSTM and GRU (fused whole-sequence ops), a scan-routed cell (minGRU), and a
//! user cell on the per-step path, with bidirectional layers, stacking, ragged lengths,
//! initial states and dropout; its errors (`k = 0`, `create_graph`, a parameter changed before
//! the backward pass) are clean and name the option.

use eddy_nn::{Cell, Checkpoint, GruCell, LstmCell, MinGruCell, Module, Recurrent, RecurrentConfig};
use eddy_ops::prelude::*;
use eddy_tape::{Float, GradOptions};
use ndarray::ArrayD;

use crate::support::Mgu;

/// What a forward and backward pass gives: outputs and final states, then the gradients of the
/// input, of each initial state part and of each parameter (by name).
#[derive(Debug, PartialEq)]
struct Pass<F> {
    output: Vec<F>,
    states: Vec<Vec<F>>,
    dx: Vec<F>,
    dinit: Vec<Vec<F>>,
    dparams: Vec<(String, Vec<F>)>,
}

/// Shapes and options of one comparison.
#[derive(Clone)]
struct Case {
    steps: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    layers: usize,
    bidirectional: bool,
    lengths: Option<Vec<usize>>,
    initial: bool,
    dropout: bool,
}

impl Case {
    fn new(steps: usize, batch: usize) -> Case {
        Case {
            steps,
            batch,
            input: 3,
            hidden: 4,
            layers: 1,
            bidirectional: false,
            lengths: None,
            initial: false,
            dropout: false,
        }
    }

    fn every_option(steps: usize, batch: usize, lengths: Vec<usize>) -> Case {
        Case {
            layers: 2,
            bidirectional: true,
            lengths: Some(lengths),
            initial: true,
            ..Case::new(steps, batch)
        }
    }

    fn config(&self) -> RecurrentConfig {
        let c = RecurrentConfig::new(self.input, self.hidden)
            .num_layers(self.layers)
            .bidirectional(self.bidirectional);
        match self.dropout {
            true => c.dropout(0.3).recurrent_dropout(0.2),
            false => c,
        }
    }
}

fn values<F: Float>(a: &ArrayD<F>) -> Vec<F> {
    a.iter().copied().collect()
}

fn random<F: Float>(shape: &[usize], rng: &mut Rng) -> ArrayD<F> {
    ArrayD::from_shape_simple_fn(shape, || F::of(rng.uniform_in(-1.0, 1.0)))
}

/// One pass of `layer` over the case's data (drawn from `seed`), with a loss that weights every
/// output and every final state part, so every gradient path is used.
fn pass<F: Float, C: Cell<F> + Clone + 'static>(
    layer: &Recurrent<F, C>,
    case: &Case,
    seed: u64,
) -> Result<Pass<F>> {
    let mut rng = Rng::seed(seed);
    let tape = Tape::new();
    let x = tape.input(random(&[case.steps, case.batch, case.input], &mut rng));
    let parts = layer.cells[0].state_sizes();
    let n = case.layers * if case.bidirectional { 2 } else { 1 };
    let init: Vec<Var<F>> = parts
        .iter()
        .map(|&s| tape.input(random(&[n, case.batch, s], &mut rng)))
        .collect();
    let mut dropout_rng = Rng::seed(seed + 1);
    let out = layer.forward_with(
        &x,
        case.initial.then_some(init.as_slice()),
        case.lengths.as_deref(),
        Some(&mut dropout_rng),
    )?;
    let mut loss = (&out.output * &tape.constant(random(out.output.shape(), &mut rng)))?.sum_all()?;
    for s in &out.states {
        loss = (&loss + (s * &tape.constant(random(s.shape(), &mut rng)))?.sum_all()?)?;
    }
    let grads = loss.backward()?;
    let zeros = |v: &Var<F>| ArrayD::zeros(v.shape());
    Ok(Pass {
        output: values(out.output.value()),
        states: out.states.iter().map(|s| values(s.value())).collect(),
        dx: values(grads.var(&x).expect("x gets a gradient")),
        dinit: match case.initial {
            true => init
                .iter()
                .map(|v| values(grads.var(v).unwrap_or(&zeros(v))))
                .collect(),
            false => Vec::new(),
        },
        dparams: layer
            .params()
            .into_iter()
            .map(|(name, p)| {
                let g = grads
                    .param(&p)
                    .cloned()
                    .unwrap_or_else(|| ArrayD::zeros(p.shape()));
                (name, values(&g))
            })
            .collect(),
    })
}

/// The largest `|a − b| / max(1, |b|)` over two lists.
fn worst<F: Float>(a: &[F], b: &[F]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(p, q)| {
            let (p, q) = (p.to_f64().unwrap(), q.to_f64().unwrap());
            (p - q).abs() / q.abs().max(1.0)
        })
        .fold(0.0, f64::max)
}

/// Asserts two passes agree to `tol` (relative, or absolute below 1); `what` names the case.
fn assert_close<F: Float>(a: &Pass<F>, b: &Pass<F>, tol: f64, what: &str) {
    let mut pairs: Vec<(String, &[F], &[F])> = vec![
        ("output".into(), &a.output, &b.output),
        ("dx".into(), &a.dx, &b.dx),
    ];
    for (k, (p, q)) in a.states.iter().zip(&b.states).enumerate() {
        pairs.push((format!("state {k}"), p, q));
    }
    for (k, (p, q)) in a.dinit.iter().zip(&b.dinit).enumerate() {
        pairs.push((format!("d initial {k}"), p, q));
    }
    for ((name, p), (_, q)) in a.dparams.iter().zip(&b.dparams) {
        pairs.push((format!("d {name}"), p, q));
    }
    for (name, p, q) in pairs {
        let w = worst(p, q);
        assert!(w <= tol, "{what}: {name} differs by {w:e} (tolerance {tol:e})");
    }
}

/// The full tape against checkpointing with segments of each `k` in `ks` (and `√T`): `f64`
/// gradients to 1e-12.
fn check_f64<C: Cell<f64> + Clone + 'static>(
    case: &Case,
    ks: &[usize],
    make: impl Fn(&RecurrentConfig) -> Recurrent<f64, C>,
) -> Result<()> {
    let full = pass(&make(&case.config()), case, 7)?;
    let policies = ks.iter().map(|&k| Checkpoint::Every(k)).chain([Checkpoint::Sqrt]);
    for policy in policies {
        let layer = make(&case.config().checkpoint(policy));
        let ckpt = pass(&layer, case, 7)?;
        assert_close(&ckpt, &full, 1e-12, &format!("{policy:?}"));
    }
    Ok(())
}

/// Bitwise in f32: everything for `k ≥ T` (one segment); for several segments the outputs and
/// final states, and (`state_grads_exact`) the input and initial-state gradients. Parameter
/// gradients of several segments are sums in another order, and so are the state gradients of
/// the scan, whose kernel computes `g + a·G` with one rounding (a fused multiply-add) where the
/// segments meet in two: those agree to 2e-5.
fn check_f32_bitwise<C: Cell<f32> + Clone + 'static>(
    case: &Case,
    ks: &[usize],
    state_grads_exact: bool,
    make: impl Fn(&RecurrentConfig) -> Recurrent<f32, C>,
) -> Result<()> {
    let full = pass(&make(&case.config()), case, 11)?;
    for &k in ks {
        let ckpt = pass(&make(&case.config().checkpoint_every(k)), case, 11)?;
        let what = format!("k = {k}");
        assert_eq!(ckpt.output, full.output, "{what}: output");
        assert_eq!(ckpt.states, full.states, "{what}: final states");
        if state_grads_exact || k >= case.steps {
            assert_eq!(ckpt.dx, full.dx, "{what}: input gradient");
            assert_eq!(ckpt.dinit, full.dinit, "{what}: initial-state gradient");
        }
        if k >= case.steps {
            assert_eq!(ckpt.dparams, full.dparams, "{what}: parameter gradients");
        } else {
            assert_close(&ckpt, &full, 2e-5, &what);
        }
    }
    Ok(())
}

// Small f32 shapes keep the full and the segmented input projections on one GEMM kernel
// (more than 4 and fewer than 128 rows), so the kernels are the same: `B = 5`, `T·B < 128`.
const F32_STEPS: usize = 9;
const F32_BATCH: usize = 5;

fn lstm<F: Float>(c: &RecurrentConfig) -> Recurrent<F, LstmCell<F>> {
    c.lstm(&mut Rng::seed(3))
}

fn gru<F: Float>(c: &RecurrentConfig) -> Recurrent<F, GruCell<F>> {
    c.gru(&mut Rng::seed(3))
}

fn min_gru<F: Float>(c: &RecurrentConfig) -> Recurrent<F, MinGruCell<F>> {
    c.build(|i, h, r| MinGruCell::new(i, h, true, r), &mut Rng::seed(3))
}

fn mgu<F: Float>(c: &RecurrentConfig) -> Recurrent<F, Mgu<F>> {
    c.build(|i, h, r| Mgu::new(i, h, r), &mut Rng::seed(3))
}

#[test]
fn lstm_f32_is_bitwise_on_the_fused_path() -> Result<()> {
    let case = Case {
        initial: true,
        ..Case::new(F32_STEPS, F32_BATCH)
    };
    check_f32_bitwise(&case, &[2, 4, 9, 20], true, lstm)?;
    let stacked = Case {
        layers: 2,
        bidirectional: true,
        ..case
    };
    check_f32_bitwise(&stacked, &[3, 9], true, lstm)
}

#[test]
fn gru_f32_is_bitwise_on_the_fused_path() -> Result<()> {
    let case = Case {
        bidirectional: true,
        initial: true,
        ..Case::new(F32_STEPS, F32_BATCH)
    };
    check_f32_bitwise(&case, &[2, 4, 9, 20], true, gru)
}

#[test]
fn user_cell_f32_is_bitwise_on_the_per_step_path() -> Result<()> {
    let case = Case {
        bidirectional: true,
        initial: true,
        lengths: Some(vec![9, 2, 5, 7, 1]),
        ..Case::new(F32_STEPS, F32_BATCH)
    };
    check_f32_bitwise(&case, &[2, 4, 9, 20], true, mgu)?;
    // The built-in LSTM on the per-step path too.
    check_f32_bitwise(&case, &[4], true, |c| lstm(&c.clone().fused(false)))
}

#[test]
fn min_gru_f32_is_bitwise_on_the_scan_path_but_where_segments_meet() -> Result<()> {
    let case = Case {
        bidirectional: true,
        initial: true,
        lengths: Some(vec![9, 2, 5, 7, 1]),
        ..Case::new(F32_STEPS, F32_BATCH)
    };
    check_f32_bitwise(&case, &[2, 4, 9, 20], false, min_gru)
}

#[test]
fn every_cell_in_f64_agrees_to_1e_12_with_every_option() -> Result<()> {
    // T = 7: k = 1, 3 (not a divisor), 7 (= T), 50 (> T), and √T (3).
    let ks = [1, 3, 7, 50];
    let ragged = Case::every_option(7, 3, vec![7, 2, 5]);
    let plain = Case::new(7, 3);
    for case in [&plain, &ragged] {
        check_f64(case, &ks, lstm)?;
        check_f64(case, &ks, gru)?;
        check_f64(case, &ks, min_gru)?;
        check_f64(case, &ks, mgu)?;
        check_f64(case, &[3], |c| lstm(&c.clone().fused(false)))?;
    }
    Ok(())
}

#[test]
fn dropout_between_layers_and_recurrent_dropout_draw_the_same_masks() -> Result<()> {
    let case = Case {
        dropout: true,
        ..Case::every_option(7, 3, vec![7, 2, 5])
    };
    check_f64(&case, &[3], lstm)?;
    check_f64(&case, &[3], mgu)
}

#[test]
fn a_checkpointed_layer_keeps_one_node_per_direction_instead_of_one_per_step() -> Result<()> {
    let nodes = |config: RecurrentConfig| -> Result<usize> {
        let layer: Recurrent<f64, Mgu<f64>> = mgu(&config);
        let tape = Tape::new();
        let x = tape.constant(random(&[40, 2, 3], &mut Rng::seed(0)));
        layer.forward(&x)?;
        Ok(tape.len())
    };
    let full = nodes(RecurrentConfig::new(3, 4))?;
    let ckpt = nodes(RecurrentConfig::new(3, 4).checkpoint_every(8))?;
    // The per-step path records several ops per step; the checkpointed layer binds its four
    // parameters and records one op, and the final state's stack (the segments' own nodes were
    // dropped with their tapes).
    assert!(full > 40 * 5, "{full} nodes without checkpointing");
    assert_eq!(ckpt, 4 + 1 + 1, "{ckpt} nodes with checkpointing");
    Ok(())
}

#[test]
fn a_no_grad_tape_runs_the_plain_path_with_the_same_values() -> Result<()> {
    let case = Case::every_option(7, 3, vec![7, 2, 5]);
    let x = random::<f64>(&[7, 3, 3], &mut Rng::seed(5));
    let run = |config: RecurrentConfig| -> Result<Vec<f64>> {
        let tape = Tape::no_grad();
        Ok(values(
            mgu(&config).forward(&tape.constant(x.clone()))?.output.value(),
        ))
    };
    assert_eq!(run(case.config())?, run(case.config().checkpoint_every(2))?);
    Ok(())
}

#[test]
fn segments_of_zero_steps_are_a_clean_error() {
    let layer: Recurrent<f64, LstmCell<f64>> = lstm(&RecurrentConfig::new(3, 4).checkpoint_every(0));
    let tape = Tape::new();
    let err = layer
        .forward(&tape.input(ArrayD::zeros(vec![5, 2, 3])))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "lstm: checkpoint_every(k) needs segments of k ≥ 1 steps, got k = 0"
    );
}

#[test]
fn create_graph_through_a_checkpointed_layer_is_a_clean_error() -> Result<()> {
    let layer: Recurrent<f64, LstmCell<f64>> =
        lstm(&RecurrentConfig::new(3, 4).bidirectional(true).checkpoint_every(2));
    let tape = Tape::new();
    let x = tape.input(random(&[5, 2, 3], &mut Rng::seed(1)));
    let loss = layer.forward(&x)?.output.powi(2)?.sum_all()?;
    let err = tape
        .grad(&[&loss], None, &[&x], GradOptions::create_graph())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("lstm layer 0 reverse (checkpoint_every): create_graph is not supported"),
        "{text}"
    );
    assert!(matches!(err, Error::Invalid { .. }));
    // First order through the same graph still works.
    let layer: Recurrent<f64, LstmCell<f64>> = lstm(&RecurrentConfig::new(3, 4).checkpoint_every(2));
    let tape = Tape::new();
    let x = tape.input(random(&[5, 2, 3], &mut Rng::seed(1)));
    let loss = layer.forward(&x)?.output.powi(2)?.sum_all()?;
    assert!(tape.grad(&[&loss], None, &[&x], GradOptions::default())?[0].is_some());
    Ok(())
}

#[test]
fn a_parameter_changed_before_the_backward_pass_is_a_clean_error() -> Result<()> {
    let layer: Recurrent<f64, LstmCell<f64>> = lstm(&RecurrentConfig::new(3, 4).checkpoint_every(2));
    let tape = Tape::new();
    let x = tape.input(random(&[5, 2, 3], &mut Rng::seed(1)));
    let loss = layer.forward(&x)?.output.powi(2)?.sum_all()?;
    let (name, p) = layer.params().remove(0);
    p.update(|w| w.mapv_inplace(|v| v * 0.5));
    let err = loss.backward().unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "lstm layer 0 (checkpoint_every): parameter {} changed between the forward and the \
             backward pass; a checkpointed layer runs its segments again with the parameters' values",
            p.name()
        ),
        "{name}"
    );
    Ok(())
}
