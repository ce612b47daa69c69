//! The LSTM, GRU, Elman and sLSTM sequence ops allocate their outputs and gradient buffers
//! unzeroed ([`crate::kernels::fresh`]); in unit tests those start as NaN, so an element a step
//! fails to write shows here: every output and every fast gradient is finite and equals the
//! recorded rule's, and the forward without kept activations (the split LSTM on two threads, the
//! GRU's one-step scratch, the sLSTM's row scratch) gives the same outputs as with them.

use super::*;
use crate::kernels::test_matrix;
use crate::VarExt;
use eddy_tape::{GradOptions, Tape, Var};

/// `(T, B, H)`: one step (the weight gradient's product has no rows), a few rows (the row
/// kernels), more rows (the packed or plain product), a wide LSTM that splits on two threads,
/// and a long sequence whose LSTM weight gradient (`1568` rows deep) takes
/// [`crate::kernels::deep`] in f32 at the AVX-512 level; each on one and two threads.
const DIMS: [(usize, usize, usize); 5] = [(1, 3, 4), (3, 2, 5), (3, 6, 5), (2, 3, 128), (50, 32, 40)];

/// A `shape` array of smooth values in `[-scale, scale]`.
fn array<F: Float>(shape: &[usize], seed: f64, scale: f64) -> ArrayD<F> {
    let n = shape.iter().product();
    let m = test_matrix::<F>(1, n, seed).mapv(|v| v * F::of(scale));
    m.into_shape_with_order(shape.to_vec()).expect("n elements")
}

/// `[xp, weight_hh, states…, bias_hh]` of an op with `gates` gates and `states` state parts.
fn inputs<F: Float>(
    (t, b, h): (usize, usize, usize),
    gates: usize,
    states: usize,
    bias: bool,
) -> Vec<ArrayD<F>> {
    let mut v = vec![
        array(&[t, b, gates * h], 0.1, 1.0),
        array(&[gates * h, h], 0.2, 0.3),
    ];
    v.extend((0..states).map(|k| array(&[b, h], 0.3 + k as f64, 0.5)));
    if bias {
        v.push(array(&[gates * h], 0.9, 0.2));
    }
    v
}

/// The op's first `outputs` outputs, and the gradient of `Σ_k mean(outₖ²)` for every input.
fn run<F: Float>(
    apply: &impl Fn(&Tape<F>, &[&Var<F>]) -> Result<Vec<Var<F>>>,
    xs: &[ArrayD<F>],
    outputs: usize,
    options: GradOptions,
) -> Vec<ArrayD<F>> {
    let tape = Tape::new();
    let vars: Vec<Var<F>> = xs.iter().map(|x| tape.input(x.clone())).collect();
    let outs = apply(&tape, &vars.iter().collect::<Vec<_>>()).unwrap();
    let mut loss: Option<Var<F>> = None;
    for o in &outs[..outputs] {
        let term = (o * o).unwrap().mean_all().unwrap();
        loss = Some(match loss {
            Some(l) => (&l + &term).unwrap(),
            None => term,
        });
    }
    let refs: Vec<&Var<F>> = vars.iter().collect();
    let grads = tape.grad(&[&loss.unwrap()], None, &refs, options).unwrap();
    let mut got: Vec<ArrayD<F>> = outs[..outputs].iter().map(|o| o.value().clone()).collect();
    got.extend(grads.into_iter().map(|g| g.expect("a gradient").value().clone()));
    got
}

/// The outputs of a forward on a tape that records nothing.
fn forward<F: Float>(
    apply: &impl Fn(&Tape<F>, &[&Var<F>]) -> Result<Vec<Var<F>>>,
    xs: &[ArrayD<F>],
    outputs: usize,
) -> Vec<ArrayD<F>> {
    let tape = Tape::no_grad();
    let vars: Vec<Var<F>> = xs.iter().map(|x| tape.input(x.clone())).collect();
    let outs = apply(&tape, &vars.iter().collect::<Vec<_>>()).unwrap();
    outs[..outputs].iter().map(|o| o.value().clone()).collect()
}

fn assert_finite_and_close<F: Float>(got: &[ArrayD<F>], want: &[ArrayD<F>], what: &str) {
    let tol = if F::NAME == "f32" { 1e-4 } else { 1e-11 };
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.shape(), w.shape(), "{what}: array {k}");
        for (p, q) in g.iter().zip(w) {
            let (p, q) = (p.as_f64(), q.as_f64());
            assert!(
                p.is_finite() && (p - q).abs() <= tol * (1.0 + q.abs()),
                "{what}: array {k}: {p} vs {q}"
            );
        }
    }
}

/// For each size, direction and bias: the fast backward against the recorded rule, and the
/// forward with and without kept activations (`keep` says whether the op has the option).
fn check<F: Float, Op: MultiOp<F> + 'static>(
    name: &str,
    gates: usize,
    states: usize,
    op: impl Fn(bool, bool, bool) -> Op + Sync,
) {
    for (threads, dims) in [1, 2].into_iter().flat_map(|t| DIMS.map(|d| (t, d))) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for (reverse, bias) in [(false, false), (false, true), (true, false), (true, true)] {
            let xs = inputs::<F>(dims, gates, states, bias);
            let what = format!(
                "{name} {} {dims:?} reverse {reverse} bias {bias}, {threads} threads",
                F::NAME
            );
            let apply = |keep: bool| {
                let op = &op;
                move |tape: &Tape<F>, v: &[&Var<F>]| tape.apply_multi(op(reverse, bias, keep), v)
            };
            pool.install(|| {
                let fast = run(&apply(true), &xs, states, GradOptions::default());
                let recorded = run(&apply(true), &xs, states, GradOptions::create_graph());
                assert_finite_and_close(&fast, &recorded, &format!("{what}: fast against recorded"));
                let plain = forward(&apply(false), &xs, states);
                assert_finite_and_close(
                    &plain,
                    &fast[..states],
                    &format!("{what}: forward without kept activations"),
                );
            });
        }
    }
}

fn lstm(reverse: bool, bias: bool, keep_activations: bool) -> LstmSequence {
    LstmSequence {
        reverse,
        bias,
        keep_activations,
    }
}

fn gru(reverse: bool, bias: bool, keep_activations: bool) -> GruSequence {
    GruSequence {
        reverse,
        bias,
        keep_activations,
    }
}

#[test]
fn lstm_sequence_writes_every_element() {
    check::<f64, _>("lstm", 4, 2, lstm);
    check::<f32, _>("lstm", 4, 2, lstm);
}

#[test]
fn gru_sequence_writes_every_element() {
    check::<f64, _>("gru", 3, 1, gru);
    check::<f32, _>("gru", 3, 1, gru);
}

#[test]
fn rnn_sequence_writes_every_element() {
    for activation in [RnnActivation::Tanh, RnnActivation::Relu] {
        let rnn = move |reverse, bias, _| RnnSequence {
            activation,
            reverse,
            bias,
        };
        check::<f64, _>("rnn", 1, 1, rnn);
        check::<f32, _>("rnn", 1, 1, rnn);
    }
}

/// sLSTM `(T, B, heads, head size)`.
type SlstmDims = (usize, usize, usize, usize);

/// sLSTM cases: batches above `SMALL_ROWS` take the GEMM (in f32 the
/// packed kernel) for the heads' products, below it the row kernels; one step leaves `dW_hh` to
/// the `h0` product alone; with `h0 = 0` that product is skipped. With the direction and
/// whether `h0` is zero. The fast backward sums `dW_hh` in chunks of about 512 rows: batches
/// of 64 and 100 make chunks of 8 and 5 steps, the last one ragged, in both directions.
const SLSTM_CASES: [(SlstmDims, bool, bool); 7] = [
    ((3, 2, 2, 3), false, false),
    ((4, 9, 2, 8), true, false),
    ((5, 20, 4, 16), false, true),
    ((1, 6, 2, 4), false, false),
    ((1, 6, 2, 4), true, true),
    ((20, 64, 2, 3), false, false),
    ((13, 100, 2, 2), true, false),
];

/// `[xp, W_hh per head, h0, c0, n0, m0]`, with the normaliser `n0` positive.
fn slstm_inputs<F: Float>((t, b, heads, dh): SlstmDims, zero_h0: bool) -> Vec<ArrayD<F>> {
    let h = heads * dh;
    let mut h0 = array(&[b, h], 0.3, 0.5);
    if zero_h0 {
        h0.fill(F::zero());
    }
    vec![
        array(&[t, b, 4 * h], 0.1, 1.5),
        array(&[heads, 4 * dh, dh], 0.2, 0.5),
        h0,
        array(&[b, h], 0.4, 0.5),
        array::<F>(&[b, h], 0.5, 0.5).mapv(|v| v + F::one()),
        array(&[b, h], 0.6, 0.5),
    ]
}

#[test]
fn slstm_sequence_writes_every_element() {
    fn check_slstm<F: Float>() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for (dims, reverse, zero_h0) in SLSTM_CASES {
            let xs = slstm_inputs::<F>(dims, zero_h0);
            let what = format!("slstm {} {dims:?} reverse {reverse} zero h0 {zero_h0}", F::NAME);
            let apply = |keep_activations: bool| {
                move |tape: &Tape<F>, v: &[&Var<F>]| {
                    let op = SlstmSequence {
                        reverse,
                        keep_activations,
                    };
                    tape.apply_multi(op, v)
                }
            };
            pool.install(|| {
                let fast = run(&apply(true), &xs, 2, GradOptions::default());
                let recorded = run(&apply(true), &xs, 2, GradOptions::create_graph());
                assert_finite_and_close(&fast, &recorded, &format!("{what}: fast against recorded"));
                let plain = forward(&apply(false), &xs, 2);
                assert_finite_and_close(
                    &plain,
                    &fast[..2],
                    &format!("{what}: forward without kept activations"),
                );
            });
        }
    }
    check_slstm::<f64>();
    check_slstm::<f32>();
}
