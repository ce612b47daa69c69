//! Bad sizes are errors, never panics: the reachable panics found in review and shapes whose
//! size overflows `usize`.

use eddy_nn::data::{self, Targets, Window};
use eddy_nn::{init, Cell, Embedding, Module, Nonlinearity, RecurrentConfig};
use eddy_ops::prelude::*;
use eddy_tape::{checked_len, sum_to_shape};
use ndarray::{ArrayD, IxDyn};
use std::panic::{catch_unwind, AssertUnwindSafe};

const HUGE: usize = 1 << 62;

/// Runs `f`, turning a panic into a test failure that names `what`.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what} panicked: {msg}")
        }
    }
}

/// `f` gives an error whose message contains `needle`, and does not panic.
fn assert_err<T: std::fmt::Debug>(what: &str, needle: &str, f: impl FnOnce() -> eddy_tape::Result<T>) {
    match no_panic(what, f) {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => assert!(e.to_string().contains(needle), "{what}: {e}"),
    }
}

fn zeros(shape: &[usize]) -> ArrayD<f64> {
    ArrayD::zeros(IxDyn(shape))
}

#[test]
fn sizes_that_overflow_are_shape_errors() {
    let t = Tape::<f64>::new();
    let more = "more elements than memory can hold";
    let x = t.input(zeros(&[HUGE, 0]));
    let w = t.input(zeros(&[3, 0]));
    assert_err("linear [2^62, 0]", more, || x.linear(&w, None));
    let a = t.input(zeros(&[1 << 40, 1, 0]));
    let b = t.input(zeros(&[1, 1 << 40, 0]));
    assert_err("add [2^40,1,0] + [1,2^40,0]", more, || &a + &b);
    assert_err("mul [2^40,1,0] * [1,2^40,0]", more, || &a * &b);
    let r = t.input(zeros(&[1, 4]));
    assert_err("broadcast_to [2^62, 4]", more, || r.broadcast_to(&[HUGE, 4]));
    assert_err("sum over the 0 axis", more, || x.sum(1, false));
    assert_err("mean over the 0 axis", more, || x.mean(1, true));
    let (p, q) = (t.input(zeros(&[1 << 31, 0])), t.input(zeros(&[0, 1 << 31])));
    assert_err("matmul [2^31,0]·[0,2^31]", more, || p.matmul(&q));
    let parts = [&x, &x, &x, &x, &x];
    assert_err("concat of 5 × [2^62, 0]", "add up to more", || concat(&parts, 0));
    let mut rng = Rng::seed(0);
    let emb = Embedding::<f64>::new(4, 3, &mut rng);
    assert_err(
        "embedding of shape [2^40, 2^40, 0]",
        "does not hold 0 indices",
        || emb.forward(&t, &[], &[1 << 40, 1 << 40, 0]),
    );
    let series = ArrayD::<f64>::zeros(vec![10, 2]);
    for (input_len, horizon) in [(usize::MAX, 1), (1, usize::MAX), (usize::MAX, usize::MAX)] {
        let w = Window {
            input_len,
            horizon,
            targets: Targets::Next,
        };
        assert_err("window", "too short", || data::window(&series, &w));
    }
    assert_eq!(checked_len(&[HUGE, 0], 8), Some(0));
    assert_eq!(checked_len(&[HUGE, 2], 8), None);
    assert_eq!(checked_len(&[3, 4], 8), Some(12));
}

#[test]
fn reachable_panics_from_review_are_errors() {
    let mut rng = Rng::seed(1);
    let t = Tape::<f64>::new();
    let x = t.input(zeros(&[5, 2, 3]));

    let layer = RecurrentConfig::new(3, 4).num_layers(0).lstm::<f64>(&mut rng);
    assert_err("num_layers(0)", "num_layers must be at least 1", || {
        layer.forward(&x)
    });
    for (name, layer) in [
        (
            "lstm",
            RecurrentConfig::new(3, 0).lstm::<f64>(&mut rng).named("lstm"),
        ),
        (
            "bi lstm",
            RecurrentConfig::new(3, 0)
                .bidirectional(true)
                .lstm::<f64>(&mut rng),
        ),
    ] {
        assert_err(name, "hidden_size 0", || layer.forward(&x));
    }
    let gru = RecurrentConfig::new(3, 0).gru::<f64>(&mut rng);
    assert_err("gru hidden 0", "hidden_size 0", || gru.forward(&x));
    let rnn = RecurrentConfig::new(3, 0).rnn::<f64>(Nonlinearity::Tanh, &mut rng);
    assert_err("rnn hidden 0", "hidden_size 0", || rnn.forward(&x));

    // A sequence of T = 0 steps, time-major and batch-first.
    let lstm = RecurrentConfig::new(3, 4).lstm::<f64>(&mut rng);
    let empty = t.input(zeros(&[0, 2, 3]));
    assert_err("T = 0", "T = 0", || lstm.forward(&empty));
    let bf = RecurrentConfig::new(3, 4).batch_first(true).gru::<f64>(&mut rng);
    let empty_bf = t.input(zeros(&[2, 0, 3]));
    assert_err("T = 0 batch-first", "T = 0", || bf.forward(&empty_bf));

    // A cell without state parts: `output_size` is 0 rather than a panic, and the layer says why.
    let stateless = RecurrentConfig::new(3, 4).build(|_, _, _| Stateless, &mut rng);
    assert_eq!(no_panic("output_size", || Stateless.output_size()), 0);
    assert_eq!(stateless.output_size(), 0);
    assert_err("stateless cell", "at least one state part", || {
        stateless.forward(&x)
    });

    // sum_to_shape to a target of higher rank than the source.
    let a = zeros(&[2, 3]);
    assert_err("sum_to_shape", "must broadcast", || sum_to_shape(&a, &[1, 2, 3]));
    assert_err("sum_to_shape", "must broadcast", || sum_to_shape(&a, &[4]));
    assert_eq!(sum_to_shape(&a, &[1, 3]).unwrap().shape(), &[1, 3]);
    let v = t.input(a);
    assert_err("sum_to", "must broadcast", || v.sum_to(&[1, 2, 3]));

    // Initialisers on empty and scalar shapes.
    for shape in [
        &[][..],
        &[0],
        &[0, 0],
        &[3, 0],
        &[0, 3],
        &[2, 0, 4],
        &[2, 3, 0, 1],
    ] {
        let u: ArrayD<f64> = no_panic("xavier_uniform", || init::xavier_uniform(shape, 1.0, &mut rng));
        let n: ArrayD<f64> = no_panic("xavier_normal", || init::xavier_normal(shape, 1.0, &mut rng));
        assert_eq!(u.shape(), shape);
        assert!(u.iter().chain(n.iter()).all(|v| v.is_finite()), "{shape:?}");
    }
}

/// A cell with no state: not useful, but a user could write it.
#[derive(Clone)]
struct Stateless;

impl Module<f64> for Stateless {
    fn params(&self) -> Vec<(String, Param<f64>)> {
        Vec::new()
    }
}

impl Cell<f64> for Stateless {
    type State = Vec<Var<f64>>;
    fn input_size(&self) -> usize {
        3
    }
    fn state_sizes(&self) -> Vec<usize> {
        Vec::new()
    }
    fn step(&self, _: &Var<f64>, state: &Self::State) -> Result<Self::State> {
        Ok(state.clone())
    }
}
