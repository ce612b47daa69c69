//! A many-to-one recurrent layer (`RecurrentConfig::return_sequences(false)`, Keras'
//! `return_sequences=False`): its output is the last step, `[B, D·H]` — the output at each
//! sequence's last valid step for the forward direction, at step 0 for the reverse one — and
//! its gradients equal those of the full layer's output sequence weighted at those steps only,
//! to 1e-12 in f64, with and without time-segment checkpointing, for the built-in LSTM (its
//! fused path) and a user cell (the per-step path), stacked, bidirectional, with ragged lengths
//! and initial states. A checkpointed many-to-one layer never makes the output sequence
//! (`tests/many_to_one_memory.rs` measures that).

use crate::support::Mgu;
use eddy_nn::{Cell, Checkpoint, LstmCell, Module, Recurrent, RecurrentConfig};
use eddy_ops::prelude::*;
use ndarray::{ArrayD, Axis};

const STEPS: usize = 23;
const BATCH: usize = 3;
const INPUT: usize = 3;
const HIDDEN: usize = 4;

fn random(shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(shape, || rng.uniform_in(-1.0, 1.0))
}

fn values(a: &ArrayD<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

/// The options of one comparison.
#[derive(Clone, Copy)]
struct Case {
    layers: usize,
    bidirectional: bool,
    lengths: Option<[usize; BATCH]>,
    initial: bool,
}

impl Case {
    fn config(&self) -> RecurrentConfig {
        RecurrentConfig::new(INPUT, HIDDEN)
            .num_layers(self.layers)
            .bidirectional(self.bidirectional)
    }
    fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
    /// The step whose output is sequence `b`'s last, in direction `dir`.
    fn last_step(&self, b: usize, dir: usize) -> usize {
        match dir {
            0 => self.lengths.map_or(STEPS, |l| l[b]) - 1,
            _ => 0,
        }
    }
}

/// The output, the final states, and the gradients of the input, the initial states and the
/// parameters (by name), of one pass with loss `Σ W ⊙ last + Σ V ⊙ states`.
#[derive(Debug)]
struct Pass {
    last: Vec<f64>,
    states: Vec<Vec<f64>>,
    grads: Vec<(String, Vec<f64>)>,
}

/// One pass of `layer`; `many_to_one` says whether the layer returns its last step, else the
/// loss picks it out of the output sequence by a weight that is zero at every other step.
fn pass<C: Cell<f64> + Clone + 'static>(
    layer: &Recurrent<f64, C>,
    case: &Case,
    many_to_one: bool,
) -> Result<Pass> {
    let mut rng = Rng::seed(5);
    let tape = Tape::new();
    let d = case.directions();
    let x = tape.input(random(&[STEPS, BATCH, INPUT], &mut rng));
    let init: Vec<Var<f64>> = layer.cells[0]
        .state_sizes()
        .iter()
        .map(|&s| tape.input(random(&[case.layers * d, BATCH, s], &mut rng)))
        .collect();
    let w = random(&[BATCH, d * HIDDEN], &mut rng);
    let out = layer.forward_with(
        &x,
        case.initial.then_some(init.as_slice()),
        case.lengths.as_ref().map(|l| &l[..]),
        None,
    )?;
    let last = match many_to_one {
        true => {
            assert_eq!(out.output.shape(), &[BATCH, d * HIDDEN], "the last step only");
            out.output.value().clone()
        }
        false => {
            let seq = out.output.value();
            ArrayD::from_shape_fn(vec![BATCH, d * HIDDEN], |i| {
                seq[[case.last_step(i[0], i[1] / HIDDEN), i[0], i[1]]]
            })
        }
    };
    let mut loss = match many_to_one {
        true => (&out.output * &tape.constant(w.clone()))?.sum_all()?,
        false => {
            let mut mask = ArrayD::zeros(vec![STEPS, BATCH, d * HIDDEN]);
            for ((b, j), &v) in w
                .indexed_iter()
                .map(|(i, v)| ((i[0], i[1]), v))
                .collect::<Vec<_>>()
                .iter()
            {
                mask[[case.last_step(*b, j / HIDDEN), *b, *j]] = v;
            }
            (&out.output * &tape.constant(mask))?.sum_all()?
        }
    };
    for s in &out.states {
        loss = (&loss + (s * &tape.constant(random(s.shape(), &mut rng)))?.sum_all()?)?;
    }
    let grads = loss.backward()?;
    let of = |v: &Var<f64>| values(&grads.var(v).cloned().unwrap_or_else(|| ArrayD::zeros(v.shape())));
    let mut found = vec![("dx".to_string(), of(&x))];
    if case.initial {
        found.extend(
            init.iter()
                .enumerate()
                .map(|(k, v)| (format!("d initial {k}"), of(v))),
        );
    }
    for (name, p) in layer.params() {
        let g = grads
            .param(&p)
            .cloned()
            .unwrap_or_else(|| ArrayD::zeros(p.shape()));
        found.push((format!("d {name}"), values(&g)));
    }
    Ok(Pass {
        last: values(&last),
        states: out.states.iter().map(|s| values(s.value())).collect(),
        grads: found,
    })
}

fn assert_close(a: &Pass, b: &Pass, what: &str) {
    let worst = |p: &[f64], q: &[f64]| -> f64 {
        assert_eq!(p.len(), q.len());
        p.iter()
            .zip(q)
            .map(|(p, q)| (p - q).abs() / q.abs().max(1.0))
            .fold(0.0, f64::max)
    };
    let mut pairs: Vec<(String, &[f64], &[f64])> = vec![("last step".into(), &a.last, &b.last)];
    for (k, (p, q)) in a.states.iter().zip(&b.states).enumerate() {
        pairs.push((format!("state {k}"), p, q));
    }
    for ((name, p), (_, q)) in a.grads.iter().zip(&b.grads) {
        pairs.push((name.clone(), p, q));
    }
    for (name, p, q) in pairs {
        let w = worst(p, q);
        assert!(w <= 1e-12, "{what}: {name} differs by {w:e}");
    }
}

/// The full layer's sequence weighted at its last steps, against the many-to-one layer without
/// checkpointing and with segments of 1, 5 and 23 steps and of `√T`.
fn check<C: Cell<f64> + Clone + 'static>(
    case: Case,
    make: impl Fn(&RecurrentConfig) -> Recurrent<f64, C>,
) -> Result<()> {
    let full = pass(&make(&case.config()), &case, false)?;
    let policies = [
        Checkpoint::Off,
        Checkpoint::Every(1),
        Checkpoint::Every(5),
        Checkpoint::Every(STEPS),
        Checkpoint::Sqrt,
    ];
    for policy in policies {
        let layer = make(&case.config().checkpoint(policy).return_sequences(false));
        assert_close(&pass(&layer, &case, true)?, &full, &format!("{policy:?}"));
    }
    Ok(())
}

fn lstm(c: &RecurrentConfig) -> Recurrent<f64, LstmCell<f64>> {
    c.lstm(&mut Rng::seed(3))
}

fn mgu(c: &RecurrentConfig) -> Recurrent<f64, Mgu<f64>> {
    c.build(Mgu::new, &mut Rng::seed(3))
}

const ONE_LAYER: Case = Case {
    layers: 1,
    bidirectional: false,
    lengths: None,
    initial: false,
};

const EVERY_OPTION: Case = Case {
    layers: 2,
    bidirectional: true,
    lengths: Some([STEPS, 7, 15]),
    initial: true,
};

#[test]
fn lstm_last_step_gradients_equal_the_full_sequence_weighted_at_its_end() -> Result<()> {
    check(ONE_LAYER, lstm)
}

#[test]
fn user_cell_last_step_gradients_equal_the_full_sequence_weighted_at_its_end() -> Result<()> {
    check(ONE_LAYER, mgu)
}

#[test]
fn stacked_bidirectional_ragged_with_initial_states() -> Result<()> {
    check(EVERY_OPTION, lstm)?;
    check(EVERY_OPTION, mgu)?;
    check(
        Case {
            lengths: None,
            ..EVERY_OPTION
        },
        lstm,
    )
}

#[test]
fn batch_first_and_no_grad_give_the_same_last_step() -> Result<()> {
    let x = random(&[STEPS, BATCH, INPUT], &mut Rng::seed(1));
    let run = |config: RecurrentConfig, tape: Tape<f64>| -> Result<Vec<f64>> {
        let input = match config.batch_first {
            true => x
                .clone()
                .permuted_axes(vec![1, 0, 2])
                .as_standard_layout()
                .to_owned(),
            false => x.clone(),
        };
        let out = lstm(&config).forward(&tape.constant(input))?;
        Ok(values(out.output.value()))
    };
    let base = EVERY_OPTION.config().checkpoint_sqrt().return_sequences(false);
    let want = run(base.clone(), Tape::new())?;
    assert_eq!(want.len(), BATCH * 2 * HIDDEN);
    assert_eq!(run(base.clone().batch_first(true), Tape::new())?, want);
    assert_eq!(run(base.clone(), Tape::no_grad())?, want);
    // The last step is h_n's last layer: its two directions, side by side.
    let tape = Tape::new();
    let out = lstm(&base).forward(&tape.constant(x.clone()))?;
    let h_n = out.h_n().value();
    let from_h_n = ndarray::concatenate(Axis(1), &[h_n.index_axis(Axis(0), 2), h_n.index_axis(Axis(0), 3)])
        .expect("same batch");
    assert_eq!(values(&from_h_n.into_dyn()), want);
    Ok(())
}
