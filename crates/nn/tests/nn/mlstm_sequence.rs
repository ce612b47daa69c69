//! The mLSTM cell's whole-sequence op (`MlstmCell::unroll`, through `MlstmSequence`) against
//! the layer's loop of `step` (`PerStep` of the same cell): outputs, every final state part and
//! every gradient (input, initial states, parameters), forwards and reversed (bidirectional),
//! stacked, from nonzero initial states, with `T` below and above the op's saved-memory chunk
//! and not a multiple of it; first-order gradients from the fast backward and from the
//! recorded rule (`create_graph`).

use eddy_nn::{Cell, MlstmCell, Module, PerStep, Recurrent, RecurrentConfig};
use eddy_ops::prelude::*;
use eddy_ops::MLSTM_CHUNK;
use ndarray::ArrayD;

/// Named values and gradients of a weighted sum of the outputs and final states.
fn run<C: Cell<f64>>(
    layer: &Recurrent<f64, C>,
    (steps, batch, input): (usize, usize, usize),
    (layers, sizes): (usize, &[usize]),
    options: GradOptions,
    seed: u64,
) -> Result<Vec<(String, ArrayD<f64>)>> {
    let mut rng = Rng::seed(seed);
    let tape = Tape::new();
    let x = tape.input(ArrayD::from_shape_simple_fn(vec![steps, batch, input], || {
        rng.uniform_in(-1.5, 1.5)
    }));
    // h, C, n anywhere in ±1; m in [0.5, 1.5], so exp(−m) stays clear of |nᵀq| at the start.
    let init: Vec<Var<f64>> = sizes
        .iter()
        .enumerate()
        .map(|(k, &size)| {
            let (lo, hi) = if k == 3 { (0.5, 1.5) } else { (-1.0, 1.0) };
            tape.input(ArrayD::from_shape_simple_fn(vec![layers, batch, size], || {
                rng.uniform_in(lo, hi)
            }))
        })
        .collect();
    let out = layer.forward_with(&x, Some(&init), None, None)?;
    let mut weigh = |v: &Var<f64>| -> Result<Var<f64>> {
        let w = tape.constant(ArrayD::from_shape_simple_fn(v.shape(), || {
            rng.uniform_in(-1.0, 1.0)
        }));
        (v * &w)?.sum_all()
    };
    let mut loss = weigh(&out.output)?;
    for s in &out.states {
        loss = (&loss + &weigh(s)?)?;
    }
    let params: Vec<Var<f64>> = layer.param_list().iter().map(|p| tape.param(p)).collect();
    let wrt: Vec<&Var<f64>> = std::iter::once(&x).chain(&init).chain(&params).collect();
    let grads = tape.grad(&[&loss], None, &wrt, options)?;
    let mut all = vec![("output".to_string(), out.output.value().clone())];
    for (k, s) in out.states.iter().enumerate() {
        all.push((format!("state {k}"), s.value().clone()));
    }
    for (k, (v, g)) in wrt.iter().zip(grads).enumerate() {
        // The cell never reads h0: both paths give it no gradient.
        all.push((
            format!("grad {k}"),
            g.map_or_else(|| ArrayD::zeros(v.shape()), |g| g.value().clone()),
        ));
    }
    Ok(all)
}

#[test]
fn the_mlstm_sequence_op_equals_the_loop_of_steps() -> Result<()> {
    // (T, B, input, hidden, heads, layers, bidirectional)
    let cases = [
        (5, 1, 3, 4, 1, 1, false),
        (5, 3, 3, 4, 2, 2, true),
        (MLSTM_CHUNK + 5, 2, 3, 6, 3, 1, true),
        (2 * MLSTM_CHUNK + 7, 1, 2, 4, 2, 2, false),
    ];
    for (seed, &(steps, batch, input, hidden, heads, layers, bidirectional)) in cases.iter().enumerate() {
        let config = RecurrentConfig::new(input, hidden)
            .num_layers(layers)
            .bidirectional(bidirectional);
        let seed = seed as u64 + 40;
        let fused = config.try_build(
            |i, h, r| MlstmCell::<f64>::new(i, h, heads, r),
            &mut Rng::seed(seed),
        )?;
        let looped = config.try_build(
            |i, h, r| MlstmCell::<f64>::new(i, h, heads, r).map(PerStep),
            &mut Rng::seed(seed),
        )?;
        for options in [GradOptions::default(), GradOptions::create_graph()] {
            let d = hidden / heads;
            let sizes = [hidden, heads * d * d, hidden, heads];
            let states = (layers * fused.directions(), &sizes[..]);
            let a = run(&fused, (steps, batch, input), states, options, seed)?;
            let b = run(&looped, (steps, batch, input), states, options, seed)?;
            assert_eq!(a.len(), b.len());
            for ((name, x), (_, y)) in a.iter().zip(&b) {
                assert_eq!(x.shape(), y.shape(), "{name}");
                for (p, q) in x.iter().zip(y) {
                    assert!(
                        (p - q).abs() <= 1e-12 * q.abs().max(1.0),
                        "case {seed} {name} ({options:?}): op {p} vs loop {q}"
                    );
                }
            }
        }
    }
    Ok(())
}
