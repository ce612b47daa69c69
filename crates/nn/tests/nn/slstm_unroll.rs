//! sLSTM run by the layer as one `SlstmSequence` op (`Cell::unroll`) equals the same cell run
//! step by step ([`PerStep`]): outputs, final states and every gradient (input, initial states,
//! parameters), to 1e-12 in f64, forwards and reversed (bidirectional), one batch row and
//! several, one head and several, from zero and from non-zero initial states.

use eddy_nn::{Cell, Module, PerStep, Recurrent, RecurrentConfig, SlstmCell};
use eddy_ops::prelude::*;
use ndarray::ArrayD;

/// Named arrays: outputs, final states and gradients.
type Run = Vec<(String, ArrayD<f64>)>;

fn run<C: Cell<f64>>(
    layer: &Recurrent<f64, C>,
    steps: usize,
    batch: usize,
    initial: bool,
    seed: u64,
) -> Result<Run> {
    let mut rng = Rng::seed(seed);
    let tape = Tape::new();
    let (d, hidden) = (layer.directions(), layer.config.hidden_size);
    let n = layer.config.num_layers * d;
    let x = tape.input(ArrayD::from_shape_simple_fn(
        vec![steps, batch, layer.config.input_size],
        || rng.uniform_in(-2.0, 2.0),
    ));
    // h, c, m anywhere; a positive normaliser n.
    let init: Vec<Var<f64>> = (0..4)
        .map(|part| {
            tape.input(ArrayD::from_shape_simple_fn(
                vec![n, batch, hidden],
                || match part {
                    2 => rng.uniform_in(0.5, 1.5),
                    _ => rng.uniform_in(-1.0, 1.0),
                },
            ))
        })
        .collect();
    let out = layer.forward_with(&x, initial.then_some(&init[..]), None, None)?;
    let mut loss = None;
    for v in std::iter::once(&out.output).chain(&out.states) {
        let w = tape.constant(ArrayD::from_shape_simple_fn(v.shape(), || {
            rng.uniform_in(-1.0, 1.0)
        }));
        let term = (v * &w)?.sum_all()?;
        loss = Some(match loss {
            None => term,
            Some(l) => (l + term)?,
        });
    }
    let grads = loss.expect("terms").backward()?;
    let mut all = vec![("output".to_string(), out.output.value().clone())];
    for (k, s) in out.states.iter().enumerate() {
        all.push((format!("state {k}"), s.value().clone()));
    }
    all.push((
        "grad.input".into(),
        grads.var(&x).cloned().expect("x has a gradient"),
    ));
    if initial {
        for (k, s) in init.iter().enumerate() {
            all.push((format!("grad.s0 {k}"), grads.var(s).cloned().expect("a gradient")));
        }
    }
    for (name, p) in layer.params() {
        let g = grads.param(&p).cloned().expect("every parameter has a gradient");
        all.push((format!("grad.{name}"), g));
    }
    Ok(all)
}

#[test]
fn the_sequence_op_equals_the_per_step_loop() -> Result<()> {
    // (T, B, input, hidden, heads, layers, initial states)
    let cases = [
        (5, 1, 3, 4, 1, 1, true),
        (4, 3, 2, 6, 3, 2, false),
        (6, 6, 3, 4, 2, 1, true),
        (3, 2, 4, 4, 4, 2, true),
        (1, 5, 2, 3, 1, 1, false),
    ];
    for (k, (steps, batch, input, hidden, heads, layers, initial)) in cases.into_iter().enumerate() {
        let config = RecurrentConfig::new(input, hidden)
            .num_layers(layers)
            .bidirectional(true);
        let seed = 70 + k as u64;
        let fused = config.try_build(
            |i, h, r| SlstmCell::<f64>::new(i, h, heads, r),
            &mut Rng::seed(seed),
        )?;
        let steps_layer = config.try_build(
            |i, h, r| SlstmCell::<f64>::new(i, h, heads, r).map(PerStep),
            &mut Rng::seed(seed),
        )?;
        let a = run(&fused, steps, batch, initial, seed)?;
        let b = run(&steps_layer, steps, batch, initial, seed)?;
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert_eq!(x.shape(), y.shape(), "case {k}: {name}");
            for (p, q) in x.iter().zip(y) {
                assert!(
                    (p - q).abs() <= 1e-12 * q.abs().max(1.0),
                    "case {k}: {name}: op {p} vs steps {q}"
                );
            }
        }
    }
    Ok(())
}
