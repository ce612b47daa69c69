//! The whole-sequence recurrent ops (`LstmSequence`, `GruSequence`, `RnnSequence`): gradcheck
//! (their fast backward) and gradgradcheck (their recorded rule) over random sizes, both
//! directions, with and without the bias; and equality, values and gradients, with the loop of
//! per-step ops they replace.

use crate::common::{assert_close, assert_same_as_reference, bend, check, config, values_and_grads};
use eddy_ops::prelude::*;
use eddy_ops::{
    linear_add, GruPointwise, GruSequence, LstmPointwise, LstmSequence, MlstmSequence, RnnActivation,
    RnnSequence, MLSTM_CHUNK,
};
use eddy_tape::strategies::array;
use ndarray::ArrayD;
use proptest::prelude::*;

/// `(T, B, H)`: batches above 4 rows take the transposed-weight GEMM, below it the row kernels.
fn dims() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..=3, prop_oneof![1usize..=2, 5usize..=6], 1usize..=3)
}

/// The inputs of a sequence op with `gates` gates and `states` state parts:
/// `[xp, weight_hh, states…, bias_hh]`.
fn inputs(gates: usize, states: usize) -> impl Strategy<Value = Vec<ArrayD<f64>>> {
    dims().prop_flat_map(move |(t, b, h)| {
        let mut parts = vec![array(vec![t, b, gates * h]), array(vec![gates * h, h])];
        parts.extend((0..states).map(|_| array(vec![b, h])));
        parts.push(array(vec![gates * h]));
        parts
    })
}

fn lstm(v: &[Var<f64>], reverse: bool, bias: bool) -> Result<Vec<Var<f64>>> {
    let op = LstmSequence {
        reverse,
        bias,
        keep_activations: v[0].tape().is_recording(),
    };
    let n = if bias { 5 } else { 4 };
    v[0].tape().apply_multi(op, &v[..n].iter().collect::<Vec<_>>())
}

fn gru(v: &[Var<f64>], reverse: bool, bias: bool) -> Result<Vec<Var<f64>>> {
    let op = GruSequence {
        reverse,
        bias,
        keep_activations: v[0].tape().is_recording(),
    };
    let n = if bias { 4 } else { 3 };
    v[0].tape().apply_multi(op, &v[..n].iter().collect::<Vec<_>>())
}

fn rnn(v: &[Var<f64>], activation: RnnActivation, reverse: bool, bias: bool) -> Result<Var<f64>> {
    let op = RnnSequence {
        activation,
        reverse,
        bias,
    };
    let n = if bias { 4 } else { 3 };
    Ok(v[0]
        .tape()
        .apply_multi(op, &v[..n].iter().collect::<Vec<_>>())?
        .remove(0))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn lstm_sequence(x in inputs(4, 2), reverse in any::<bool>(), bias in any::<bool>()) {
        check(|_, v| {
            let out = lstm(v, reverse, bias)?;
            concat(&[&bend(&out[0])?, &bend(&out[1])?], 2)
        }, &x)?;
    }

    #[test]
    fn gru_sequence(x in inputs(3, 1), reverse in any::<bool>(), bias in any::<bool>()) {
        check(|_, v| bend(&gru(v, reverse, bias)?[0]), &x)?;
    }

    #[test]
    fn rnn_sequence(x in inputs(1, 1), reverse in any::<bool>(), bias in any::<bool>(), relu in any::<bool>()) {
        let act = if relu { RnnActivation::Relu } else { RnnActivation::Tanh };
        check(|_, v| bend(&rnn(v, act, reverse, bias)?), &x)?;
    }
}

/// The loop of per-step ops a sequence op replaces, in time order or reversed: `step(xₜ, state)`
/// returns the next state, whose first part is the output.
fn unrolled(
    xp: &Var<f64>,
    state: Vec<Var<f64>>,
    reverse: bool,
    step: impl Fn(&Var<f64>, &[Var<f64>]) -> Result<Vec<Var<f64>>>,
) -> Result<Vec<Var<f64>>> {
    let xs = xp.unstack(0)?;
    let mut order: Vec<usize> = (0..xs.len()).collect();
    if reverse {
        order.reverse();
    }
    let mut state = state;
    let mut outs = vec![None; xs.len()];
    let mut cells = vec![None; xs.len()];
    for t in order {
        state = step(&xs[t], &state)?;
        outs[t] = Some(state[0].clone());
        cells[t] = state.get(1).cloned();
    }
    let outs: Vec<Var<f64>> = outs.into_iter().map(Option::unwrap).collect();
    let mut result = vec![stack(&outs.iter().collect::<Vec<_>>(), 0)?];
    if cells.iter().all(Option::is_some) {
        let cells: Vec<Var<f64>> = cells.into_iter().map(Option::unwrap).collect();
        result.push(stack(&cells.iter().collect::<Vec<_>>(), 0)?);
    }
    Ok(result)
}

/// Random values for `[xp, weight_hh, states…, bias_hh]` at `(T, B, H)`.
fn random_inputs(
    gates: usize,
    states: usize,
    (t, b, h): (usize, usize, usize),
    seed: u64,
) -> Vec<ArrayD<f64>> {
    let mut rng = eddy_tape::Rng::seed(seed);
    let mut arr = |shape: &[usize]| ArrayD::from_shape_simple_fn(shape, || rng.uniform_in(-1.5, 1.5));
    let mut out = vec![arr(&[t, b, gates * h]), arr(&[gates * h, h])];
    out.extend((0..states).map(|_| arr(&[b, h])));
    out.push(arr(&[gates * h]));
    out
}

#[test]
fn lstm_sequence_equals_the_loop_of_steps() -> Result<()> {
    for (dims, reverse) in [
        ((7, 6, 5), false),
        ((7, 6, 5), true),
        ((4, 1, 3), true),
        ((1, 3, 2), false),
    ] {
        let x = random_inputs(4, 2, dims, 11);
        let fused = |v: &[Var<f64>]| -> Result<Var<f64>> {
            let out = lstm(v, reverse, true)?;
            concat(&[&out[0], &out[1]], 2)
        };
        let looped = |v: &[Var<f64>]| -> Result<Var<f64>> {
            let out = unrolled(&v[0], vec![v[2].clone(), v[3].clone()], reverse, |x, s| {
                let gates = linear_add(&s[0], &v[1], Some(&v[4]), Some(x))?;
                let hc = x.tape().apply_multi(LstmPointwise, &[&gates, &s[1]])?;
                Ok(hc[..2].to_vec())
            })?;
            concat(&[&out[0], &out[1]], 2)
        };
        let what = format!("lstm {dims:?} {reverse}");
        assert_same_as_reference(&x, fused, looped, |y| bend(y)?.sum_all(), &what)?;
    }
    Ok(())
}

#[test]
fn gru_sequence_equals_the_loop_of_steps() -> Result<()> {
    for (dims, reverse) in [((7, 6, 5), false), ((7, 6, 5), true), ((4, 1, 3), true)] {
        let x = random_inputs(3, 1, dims, 12);
        let fused = |v: &[Var<f64>]| -> Result<Var<f64>> { Ok(gru(v, reverse, true)?.remove(0)) };
        let looped = |v: &[Var<f64>]| -> Result<Var<f64>> {
            let out = unrolled(&v[0], vec![v[2].clone()], reverse, |x, s| {
                let hw = linear_add(&s[0], &v[1], Some(&v[3]), None)?;
                Ok(vec![x.tape().apply(GruPointwise, &[x, &hw, &s[0]])?])
            })?;
            Ok(out[0].clone())
        };
        let what = format!("gru {dims:?} {reverse}");
        assert_same_as_reference(&x, fused, looped, |y| bend(y)?.sum_all(), &what)?;
    }
    Ok(())
}

#[test]
fn rnn_sequence_equals_the_loop_of_steps() -> Result<()> {
    for (dims, reverse, act) in [
        ((7, 6, 5), false, RnnActivation::Tanh),
        ((7, 6, 5), true, RnnActivation::Relu),
        ((4, 1, 3), true, RnnActivation::Tanh),
    ] {
        let x = random_inputs(1, 1, dims, 13);
        let fused = |v: &[Var<f64>]| rnn(v, act, reverse, true);
        let looped = |v: &[Var<f64>]| -> Result<Var<f64>> {
            let out = unrolled(&v[0], vec![v[2].clone()], reverse, |x, s| {
                let pre = linear_add(&s[0], &v[1], Some(&v[3]), Some(x))?;
                Ok(vec![match act {
                    RnnActivation::Tanh => pre.tanh()?,
                    RnnActivation::Relu => pre.relu()?,
                }])
            })?;
            Ok(out[0].clone())
        };
        let what = format!("rnn {dims:?} {reverse}");
        assert_same_as_reference(&x, fused, looped, |y| bend(y)?.sum_all(), &what)?;
    }
    Ok(())
}

#[test]
fn a_sequence_op_names_itself_and_the_shapes_on_a_mismatch() {
    let tape = Tape::<f32>::new();
    let xp = tape.input(ArrayD::zeros(vec![3, 2, 8]));
    let w = tape.input(ArrayD::zeros(vec![8, 3])); // 4H = 8 but H = 3
    let h = tape.input(ArrayD::zeros(vec![2, 3]));
    let op = LstmSequence {
        reverse: false,
        bias: false,
        keep_activations: true,
    };
    let err = tape.apply_multi(op, &[&xp, &w, &h, &h]).unwrap_err().to_string();
    assert!(
        err.contains("lstm_sequence") && err.contains("[3, 2, 8]"),
        "{err}"
    );
    let err = tape
        .apply_multi(
            GruSequence {
                reverse: false,
                bias: true,
                keep_activations: true,
            },
            &[&xp, &w],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("gru_sequence"), "{err}");
}

#[test]
fn inference_without_a_tape_keeps_no_activations() -> Result<()> {
    let tape = Tape::<f32>::no_grad();
    let c = |s: &[usize]| tape.constant(ArrayD::from_elem(s.to_vec(), 0.1f32));
    let (xp, w, h) = (c(&[5, 1, 8]), c(&[8, 2]), c(&[1, 2]));
    let op = LstmSequence {
        reverse: false,
        bias: false,
        keep_activations: false,
    };
    let out = tape.apply_multi(op, &[&xp, &w, &h, &h])?;
    assert_eq!(out[0].shape(), &[5, 1, 2]);
    assert_eq!(out[2].shape(), &[0]);
    Ok(())
}

/// Inference at batch ≤ 4 on two threads splits the hidden units between them for the whole
/// sequence (`sequence/split.rs`): the same values as one thread, element for element, in both
/// directions, from non-zero initial states.
#[test]
fn split_inference_equals_one_thread() -> Result<()> {
    let h = 128; // 4H·H = 65536 weights: large enough to split
    for (batch, reverse, bias) in [(1, false, true), (3, true, false), (4, false, false)] {
        let x = random_inputs(4, 2, (6, batch, h), 21);
        let run = |threads: usize| -> Result<Vec<ArrayD<f64>>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let tape = Tape::no_grad();
                let v: Vec<Var<f64>> = x.iter().map(|a| tape.constant(a.clone())).collect();
                let out = lstm(&v, reverse, bias)?;
                Ok(vec![out[0].value().clone(), out[1].value().clone()])
            })
        };
        let (one, two) = (run(1)?, run(2)?);
        assert_eq!(one, two, "batch {batch} reverse {reverse} bias {bias}");
    }
    Ok(())
}

/// In f32 at batch > 4 the sequence ops multiply by `W_hh` through the packed AVX-512 kernel
/// (`eddy_ops::kernels::packed`) where the CPU has it: values and gradients agree with the loop of
/// per-step ops (matrixmultiply) to f32 rounding.
#[test]
fn f32_sequence_ops_agree_with_the_loop_of_steps() -> Result<()> {
    let (steps, batch, h) = (5, 9, 40);
    let mut rng = eddy_tape::Rng::seed(5);
    let mut arr = |s: &[usize]| ArrayD::from_shape_simple_fn(s, || rng.uniform_in(-1.0, 1.0) as f32);
    let x = [
        arr(&[steps, batch, 4 * h]),
        arr(&[4 * h, h]),
        arr(&[batch, h]),
        arr(&[batch, h]),
    ];
    let hs = |v: &[Var<f32>], fused: bool| -> Result<Var<f32>> {
        let tape = v[0].tape();
        Ok(if fused {
            let op = LstmSequence {
                reverse: false,
                bias: false,
                keep_activations: true,
            };
            tape.apply_multi(op, &[&v[0], &v[1], &v[2], &v[3]])?.remove(0)
        } else {
            let (mut h, mut c) = (v[2].clone(), v[3].clone());
            let mut outs = Vec::new();
            for x_t in v[0].unstack(0)? {
                let gates = linear_add(&h, &v[1], None, Some(&x_t))?;
                let hc = tape.apply_multi(LstmPointwise, &[&gates, &c])?;
                (h, c) = (hc[0].clone(), hc[1].clone());
                outs.push(h.clone());
            }
            stack(&outs.iter().collect::<Vec<_>>(), 0)?
        })
    };
    let run = |fused: bool| {
        let loss = |hs: &Var<f32>| (hs * hs)?.sum_all();
        values_and_grads(&x, |v| hs(v, fused), loss, GradOptions::default())
    };
    assert_close(&run(true)?, &run(false)?, 1e-4, "f32 LSTM sequence");
    Ok(())
}

/// `[xp, c0, n0, m0]` of an mLSTM sequence: `T` steps, `B` rows, `heads` heads of size `d`.
fn mlstm_inputs(t: usize, b: usize, heads: usize, d: usize) -> impl Strategy<Value = Vec<ArrayD<f64>>> {
    let h = heads * d;
    vec![
        array(vec![t, b, 4 * h + 2 * heads]),
        array(vec![b, heads * d * d]),
        array(vec![b, h]),
        array(vec![b, heads]),
    ]
}

/// Every output of the mLSTM sequence op, bent and flattened into one vector.
fn mlstm(v: &[Var<f64>], reverse: bool) -> Result<Var<f64>> {
    let op = MlstmSequence {
        reverse,
        keep_checkpoints: v[0].tape().is_recording(),
    };
    let out = v[0].tape().apply_multi(op, &v[..4].iter().collect::<Vec<_>>())?;
    let flat: Vec<Var<f64>> = out[..4]
        .iter()
        .map(|o| bend(o)?.reshape(&[o.value().len()]))
        .collect::<Result<_>>()?;
    concat(&flat.iter().collect::<Vec<_>>(), 0)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mlstm_sequence(
        x in (1usize..=3, 1usize..=2, 1usize..=2, 1usize..=2)
            .prop_flat_map(|(t, b, heads, d)| mlstm_inputs(t, b, heads, d)),
        reverse in any::<bool>(),
    ) {
        check(|_, v| mlstm(v, reverse), &x)?;
    }
}

/// Across a saved-memory boundary (`T` above [`MLSTM_CHUNK`], not a multiple of it): the
/// backward pass recomputes the last chunk from a saved state.
#[test]
fn mlstm_sequence_across_chunks() {
    let steps = MLSTM_CHUNK + 3;
    let mut rng = eddy_ops::prelude::Rng::seed(21);
    let mut arr = |shape: &[usize]| ArrayD::from_shape_simple_fn(shape, || rng.uniform_in(-1.0, 1.0));
    let x = vec![arr(&[steps, 1, 12]), arr(&[1, 2]), arr(&[1, 2]), arr(&[1, 2])];
    for reverse in [false, true] {
        check(|_, v| mlstm(v, reverse), &x).unwrap_or_else(|e| panic!("reverse {reverse}: {e}"));
    }
}

#[test]
fn the_mlstm_sequence_names_itself_and_the_shapes_on_a_mismatch() {
    let tape = Tape::<f32>::new();
    let z = |s: &[usize]| tape.input(ArrayD::zeros(s.to_vec()));
    let op = || MlstmSequence {
        reverse: false,
        keep_checkpoints: true,
    };
    // H = 4, heads = 2, d = 2: xp [T, B, 20], c0 [B, 8].
    let (c0, n0, m0) = (z(&[3, 8]), z(&[3, 4]), z(&[3, 2]));
    assert!(tape.apply_multi(op(), &[&z(&[5, 3, 20]), &c0, &n0, &m0]).is_ok());
    for (xp, c0, n0, m0) in [
        (z(&[5, 3, 19]), &c0, &n0, &m0),
        (z(&[5, 3, 20]), &z(&[3, 16]), &n0, &m0),
        (z(&[0, 3, 20]), &c0, &n0, &m0),
        (z(&[5, 3, 20]), &c0, &n0, &z(&[3, 3])),
        (z(&[5, 2, 20]), &c0, &n0, &m0),
    ] {
        let err = tape.apply_multi(op(), &[&xp, c0, n0, m0]).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err:?}");
        assert!(err.to_string().contains("mlstm_sequence"), "{err}");
    }
}
