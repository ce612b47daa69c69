//! Random sizes through every layer and cell constructor of eddy-nn and the data helpers:
//! each returns `Ok` or a clean `Err` (the infallible constructors are given sizes their
//! weights fit in; the fallible ones, `RecurrentConfig::try_build` and `Sequential::build`,
//! every size, huge ones included), and a forward pass on a random input never panics.

use eddy_nn::csv::Csv;
use eddy_nn::data::{self, Scaler, Targets, Window};
use eddy_nn::sequential::{dense, gru, lstm, simple_rnn, Sequential};
use eddy_nn::{
    Cell, Dropout, Embedding, GruCell, LayerNorm, LayerNormLstmCell, Linear, LstmCell, MinGruCell,
    MinLstmCell, MlstmCell, Nonlinearity, PeepholeLstmCell, RecurrentConfig, RgLruCell, RnnCell, SlstmCell,
};
use eddy_ops::prelude::Rng;
use eddy_ops::prelude::*;
use ndarray::{ArrayD, Dimension, IxDyn};
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

const HUGE: [usize; 3] = [1 << 40, 1 << 62, usize::MAX];

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0usize..4, 1 => proptest::sample::select(HUGE.to_vec())]
}

fn small() -> impl Strategy<Value = usize> {
    0usize..4
}

/// Runs `f`; a panic fails the case, naming `what`.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> std::result::Result<T, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        TestCaseError::fail(format!("{what} panicked: {msg}"))
    })
}

/// An input of `shape`, with huge axes set to 0 (and at most 64 elements).
fn input(t: &Tape<f64>, shape: &[usize]) -> Var<f64> {
    let s: Vec<usize> = shape.iter().map(|&d| if d > 3 { 0 } else { d }).collect();
    t.input(ArrayD::from_shape_fn(IxDyn(&s), |d| {
        (d.as_array_view().sum() as f64 * 0.3).sin()
    }))
}

/// A forward pass through a layer built over one cell.
type Forward = Box<dyn Fn(&Var<f64>) -> Result<()>>;

/// Every built-in cell, made by its constructor for `(input, hidden)` (and `heads`).
fn cells(i: usize, h: usize, heads: usize, bias: bool, rng: &mut Rng) -> Vec<(&'static str, Forward)> {
    fn run<C: Cell<f64> + Clone + 'static>(c: C) -> Forward {
        // A one-layer recurrent layer over the cell: `[T, B, I]` in.
        let layer =
            RecurrentConfig::new(c.input_size(), 1).build(move |_, _, _| c.clone(), &mut Rng::seed(0));
        Box::new(move |x| layer.forward(x).map(|_| ()))
    }
    let mut out: Vec<(&'static str, Forward)> = vec![
        ("LstmCell", run(LstmCell::<f64>::new(i, h, bias, rng))),
        (
            "LstmCell::with_projection",
            run(LstmCell::<f64>::with_projection(i, h, heads, bias, rng)),
        ),
        ("GruCell", run(GruCell::<f64>::new(i, h, bias, rng))),
        (
            "RnnCell",
            run(RnnCell::<f64>::new(i, h, Nonlinearity::Relu, bias, rng)),
        ),
        ("MinGruCell", run(MinGruCell::<f64>::new(i, h, bias, rng))),
        ("MinLstmCell", run(MinLstmCell::<f64>::new(i, h, bias, rng))),
        (
            "PeepholeLstmCell",
            run(PeepholeLstmCell::<f64>::new(i, h, bias, rng)),
        ),
        ("LayerNormLstmCell", run(LayerNormLstmCell::<f64>::new(i, h, rng))),
    ];
    if let Ok(c) = SlstmCell::<f64>::new(i, h, heads, rng) {
        out.push(("SlstmCell", run(c)));
    }
    if let Ok(c) = MlstmCell::<f64>::new(i, h, heads, rng) {
        out.push(("MlstmCell", run(c)));
    }
    if let Ok(c) = RgLruCell::<f64>::new(i, h, rng) {
        out.push(("RgLruCell", run(c)));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The cells and the small layers, by their (infallible) constructors on sizes their
    /// weights fit in, then a forward pass on a random (often mismatched) input.
    #[test]
    fn constructors_and_forward_never_panic(
        i in small(), h in small(), heads in small(), bias in any::<bool>(),
        x in proptest::collection::vec(dim(), 0..4),
        num in small(), p in prop_oneof![Just(0.0), Just(0.5), Just(1.0), Just(-1.0), Just(f64::NAN)],
        indices in proptest::collection::vec(dim(), 0..4),
    ) {
        let mut rng = Rng::seed(1);
        let t = Tape::<f64>::new();
        let xv = input(&t, &x);
        let cells = no_panic("cell constructors", || cells(i, h, heads, bias, &mut rng))?;
        for (name, forward) in &cells {
            let _ = no_panic(name, || forward(&xv))?;
        }
        no_panic("Linear", || {
            let _ = Linear::<f64>::new(i, h, &mut rng).forward(&xv);
            let _ = Linear::<f64>::without_bias(i, h, &mut rng).forward(&xv);
        })?;
        no_panic("Embedding", || {
            let _ = Embedding::<f64>::new(num, h, &mut rng).forward(&t, &indices, &x);
        })?;
        no_panic("LayerNorm", || {
            let _ = LayerNorm::<f64>::new(h).forward(&xv);
        })?;
        no_panic("Dropout", || {
            if let Ok(d) = Dropout::new(p) {
                let _ = d.forward(&xv, &mut rng);
            }
        })?;
    }

    /// The fallible constructors on any sizes, huge ones included: `Ok` or a clean `Err`.
    #[test]
    fn fallible_constructors_take_any_size(
        i in dim(), h in dim(), layers in 0usize..3, heads in dim(),
        bidirectional in any::<bool>(), proj in small(), units in dim(),
        x in proptest::collection::vec(dim(), 0..4),
    ) {
        let mut rng = Rng::seed(2);
        let t = Tape::<f64>::new();
        let xv = input(&t, &x);
        let config = RecurrentConfig::new(i, h).num_layers(layers).bidirectional(bidirectional);
        no_panic("try_build lstm", || {
            if let Ok(l) = config.clone().proj_size(proj).try_build(|i, h, r| Ok(LstmCell::<f64>::with_projection(i, h, proj, true, r)), &mut rng) {
                let _ = l.forward(&xv);
            }
        })?;
        no_panic("try_build gru", || {
            if let Ok(l) = config.try_build(|i, h, r| Ok(GruCell::<f64>::new(i, h, true, r)), &mut rng) {
                let _ = l.forward(&xv);
            }
        })?;
        no_panic("try_build slstm", || {
            if let Ok(l) = config.try_build(|i, h, r| SlstmCell::<f64>::new(i, h, heads, r), &mut rng) {
                let _ = l.forward(&xv);
            }
        })?;
        no_panic("try_build mlstm", || {
            if let Ok(l) = config.try_build(|i, h, r| MlstmCell::<f64>::new(i, h, heads, r), &mut rng) {
                let _ = l.forward(&xv);
            }
        })?;
        no_panic("try_build rg_lru", || {
            if let Ok(l) = config.try_build(RgLruCell::<f64>::new, &mut rng) {
                let _ = l.forward(&xv);
            }
        })?;
        for (name, spec) in [
            ("lstm", lstm(units).num_layers(layers)),
            ("gru", gru(units).bidirectional(bidirectional)),
            ("simple_rnn", simple_rnn(units)),
            ("dense", dense(units)),
        ] {
            no_panic(name, || {
                let built = Sequential::new().add(spec).add(dense(1)).build::<f64>(i, &mut rng);
                if let Ok(m) = built {
                    let _ = m.predict(xv.value());
                }
            })?;
        }
    }

    /// The data helpers on random shapes and sizes.
    #[test]
    fn data_helpers_never_panic(
        series in proptest::collection::vec(dim(), 0..4),
        input_len in dim(), horizon in dim(), sequence in any::<bool>(),
        train in prop_oneof![Just(0.0), Just(0.5), Just(0.7), Just(1.0), Just(1.5), Just(-0.5), Just(f64::NAN)],
        val in prop_oneof![Just(0.0), Just(0.2), Just(0.5), Just(1.0), Just(f64::INFINITY)],
        cols in proptest::collection::vec(dim(), 0..4),
        ragged in proptest::collection::vec(proptest::collection::vec(dim(), 0..4), 0..4),
        csv in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let t = Tape::<f64>::new();
        let a = input(&t, &series).value().clone();
        let w = Window {
            input_len,
            horizon,
            targets: if sequence { Targets::Sequence } else { Targets::Next },
        };
        let _ = no_panic("data::window", || data::window(&a, &w))?;
        let _ = no_panic("data::split", || data::split(&a, train, val))?;
        no_panic("Scaler", || {
            for s in [Scaler::min_max(&a), Scaler::standard(&a)].into_iter().flatten() {
                let _ = s.transform(&a);
                let _ = s.inverse_transform(&a);
                let _ = s.columns(&cols);
            }
        })?;
        let seqs: Vec<ArrayD<f64>> = ragged.iter().map(|s| input(&t, s).value().clone()).collect();
        let _ = no_panic("data::pad_sequences", || data::pad_sequences(&seqs))?;
        no_panic("Csv", || {
            if let Ok(c) = Csv::parse(&csv, "prop.csv") {
                let names: Vec<&str> = c.header().iter().map(String::as_str).collect();
                let _ = c.columns::<f64>(&names);
                let _ = c.cell(input_len, horizon);
            }
        })?;
    }
}

/// The infallible initialisers (behind `Linear::new` and the cells) cannot return an error:
/// on a size whose weights cannot exist they panic with the shape rule's message, before
/// ndarray panics with a less clear one or the allocator aborts the process.
#[test]
fn infallible_constructors_panic_clearly_on_sizes_that_cannot_exist() {
    for (i, h) in [(1usize << 62, 2usize), (3, 1 << 40), (usize::MAX, usize::MAX)] {
        let e = catch_unwind(|| Linear::<f64>::new(i, h, &mut Rng::seed(0))).unwrap_err();
        let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("more elements than memory can hold"), "{msg}");
    }
    // The fallible routes say so as errors.
    let e = RecurrentConfig::new(3, 1 << 40)
        .try_build(
            |i, h, r| Ok(LstmCell::<f64>::new(i, h, true, r)),
            &mut Rng::seed(0),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("recurrent layer 0 (input size 3, hidden size 1099511627776): "),
        "{e}"
    );
    assert!(e.contains("more elements than memory can hold"), "{e}");
    let e = Sequential::new()
        .add(dense(1 << 40))
        .build::<f64>(3, &mut Rng::seed(0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dense") && e.contains("more elements than memory can hold"),
        "{e}"
    );
}
