//! The cells linear in their state (minGRU, minLSTM, RG-LRU; linear and log-space modes) run by
//! the layer as one scan equal the same cells run step by step ([`PerStep`]): outputs, final
//! states and every gradient, on random shapes, directions, stacks, lengths and initial states,
//! and with the scan split across threads (by lanes, or chunked over time). gradcheck and
//! gradgradcheck through the layer are in `cells_gradcheck.rs`.

use eddy_nn::{Cell, MinGruCell, MinLstmCell, Module, PerStep, Recurrent, RecurrentConfig, RgLruCell};
use eddy_ops::prelude::Rng;
use eddy_ops::prelude::*;
use ndarray::ArrayD;
use proptest::prelude::*;

/// Which cell a case builds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    MinGru,
    MinGruLog,
    MinLstm,
    MinLstmLog,
    RgLru,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::MinGru,
        Kind::MinGruLog,
        Kind::MinLstm,
        Kind::MinLstmLog,
        Kind::RgLru,
    ];

    fn log_space(self) -> bool {
        matches!(self, Kind::MinGruLog | Kind::MinLstmLog)
    }
}

/// A case: shapes, options and the seed of every value.
#[derive(Debug, Clone)]
struct Case {
    kind: Kind,
    steps: usize,
    batch: usize,
    hidden: usize,
    input: usize,
    layers: usize,
    bidirectional: bool,
    lengths: Option<Vec<usize>>,
    initial: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0usize..5,
        1usize..=9,
        1usize..=3,
        1usize..=4,
        1usize..=3,
        1usize..=2,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(
            |(k, steps, batch, hidden, input, layers, bidir, ragged, initial, seed)| {
                let kind = Kind::ALL[k];
                // RG-LRU: input = hidden, and no bidirectional stack of more than one layer.
                let (input, bidir) = match kind {
                    Kind::RgLru => (hidden, bidir && layers == 1),
                    _ => (input, bidir),
                };
                prop::collection::vec(1..=steps, batch).prop_map(move |lengths| Case {
                    kind,
                    steps,
                    batch,
                    hidden,
                    input,
                    layers,
                    bidirectional: bidir,
                    lengths: ragged.then_some(lengths),
                    initial,
                    seed,
                })
            },
        )
}

/// Outputs, final states and the gradients of the input, the initial states and every
/// parameter (by name), of a weighted sum of the outputs and final states.
type Run = Vec<(String, ArrayD<f64>)>;

fn run<C: Cell<f64>>(layer: &Recurrent<f64, C>, c: &Case) -> Result<Run> {
    let mut rng = Rng::seed(c.seed ^ 0x5eed);
    let tape = Tape::new();
    let d = layer.directions();
    let x = tape.input(ArrayD::from_shape_simple_fn(
        vec![c.steps, c.batch, c.input],
        || rng.uniform_in(-2.0, 2.0),
    ));
    let positive = c.kind.log_space();
    let init: Vec<Var<f64>> = vec![tape.input(ArrayD::from_shape_simple_fn(
        vec![c.layers * d, c.batch, c.hidden],
        || match positive {
            true => rng.uniform_in(0.1, 2.0),
            false => rng.uniform_in(-1.0, 1.0),
        },
    ))];
    let out = layer.forward_with(&x, c.initial.then_some(&init[..]), c.lengths.as_deref(), None)?;
    let mut weigh = |v: &Var<f64>| -> Result<Var<f64>> {
        let w = tape.constant(ArrayD::from_shape_simple_fn(v.shape(), || {
            rng.uniform_in(-1.0, 1.0)
        }));
        (v * &w)?.sum_all()
    };
    let loss = (weigh(&out.output)? + weigh(&out.states[0])?)?;
    let grads = loss.backward()?;
    let mut all = vec![
        ("output".to_string(), out.output.value().clone()),
        ("h_n".to_string(), out.states[0].value().clone()),
        (
            "grad.input".to_string(),
            grads.var(&x).cloned().expect("x has a gradient"),
        ),
    ];
    if c.initial {
        all.push((
            "grad.h0".into(),
            grads.var(&init[0]).cloned().expect("h0 has a gradient"),
        ));
    }
    for (name, p) in layer.params() {
        let g = grads
            .param(&p)
            .cloned()
            .unwrap_or_else(|| ArrayD::zeros(p.shape()));
        all.push((format!("grad.{name}"), g));
    }
    Ok(all)
}

/// The layer over `make`'s cells, and the same layer (same seed, so the same weights) run
/// step by step.
fn both(c: &Case) -> Result<(Run, Run)> {
    let config = RecurrentConfig::new(c.input, c.hidden)
        .num_layers(c.layers)
        .bidirectional(c.bidirectional);
    let log = c.kind.log_space();
    macro_rules! compare {
        ($make:expr) => {{
            let scan = config.try_build(|i, h, r| $make(i, h, r), &mut Rng::seed(c.seed))?;
            let steps = config.try_build(|i, h, r| $make(i, h, r).map(PerStep), &mut Rng::seed(c.seed))?;
            Ok((run(&scan, c)?, run(&steps, c)?))
        }};
    }
    match c.kind {
        Kind::MinGru | Kind::MinGruLog => {
            compare!(|i, h, r: &mut Rng| Ok::<_, Error>(MinGruCell::<f64>::new(i, h, true, r).log_space(log)))
        }
        Kind::MinLstm | Kind::MinLstmLog => {
            compare!(|i, h, r: &mut Rng| Ok::<_, Error>(
                MinLstmCell::<f64>::new(i, h, true, r).log_space(log)
            ))
        }
        Kind::RgLru => compare!(RgLruCell::<f64>::new),
    }
}

fn assert_same(scan: &Run, steps: &Run, tol: f64) -> std::result::Result<(), TestCaseError> {
    prop_assert_eq!(scan.len(), steps.len());
    for ((name, a), (_, b)) in scan.iter().zip(steps) {
        prop_assert_eq!(a.shape(), b.shape(), "{}", name);
        for (x, y) in a.iter().zip(b) {
            prop_assert!(
                (x - y).abs() <= tol * y.abs().max(1.0),
                "{}: scan {} vs steps {}",
                name,
                x,
                y
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_scan_equals_the_per_step_loop_of_the_same_cell(c in case()) {
        let (scan, steps) = both(&c)?;
        assert_same(&scan, &steps, 1e-10)?;
    }
}

/// Long enough sequences that the scan splits across a pool's threads: chunked over time
/// (`B·H` small) and by lanes (`B·H` large), forward and backward, equal the step loop.
#[test]
fn the_scan_split_across_threads_equals_the_per_step_loop() {
    let cases = [(600, 2, 32), (70, 8, 80)];
    for threads in [2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a pool");
        for (steps, batch, hidden) in cases {
            for kind in Kind::ALL {
                let c = Case {
                    kind,
                    steps,
                    batch,
                    hidden,
                    input: hidden,
                    layers: 1,
                    bidirectional: true,
                    lengths: Some((0..batch).map(|b| steps - 7 * b).collect()),
                    initial: true,
                    seed: 11,
                };
                let (scan, per_step) = pool.install(|| both(&c)).expect("both run");
                if let Err(e) = assert_same(&scan, &per_step, 1e-9) {
                    panic!("{kind:?} T={steps} B={batch} H={hidden} on {threads} threads: {e}");
                }
            }
        }
    }
}

#[test]
fn the_log_space_layer_rejects_a_state_that_is_not_positive() {
    let layer = RecurrentConfig::new(2, 3).build(
        |i, h, r| MinGruCell::<f64>::new(i, h, true, r).log_space(true),
        &mut Rng::seed(3),
    );
    let tape = Tape::new();
    let x = tape.input(ArrayD::zeros(vec![4, 1, 2]));
    let h0 = tape.input(ArrayD::from_elem(vec![1, 1, 3], -0.5));
    let err = layer
        .forward_with(&x, Some(&[h0]), None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer 0") && err.contains("positive"), "{err}");
}
