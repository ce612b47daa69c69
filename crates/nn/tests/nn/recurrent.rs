//! Invariants of the generic recurrent layer, and every error a user can reach in it.

use eddy_nn::io::{load_params, to_bytes, Entry, TensorFile};
use eddy_nn::{carried, Cell, Module, RecurrentConfig};
use eddy_ops::prelude::*;
use ndarray::{ArrayD, Axis, Slice};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

fn uniform(shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(shape.to_vec(), || rng.uniform_in(-1.0, 1.0))
}

fn assert_close(a: &ArrayD<f64>, b: &ArrayD<f64>, tol: f64) {
    assert_eq!(a.shape(), b.shape());
    let worst = a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst <= tol, "differ by {worst}:\n{a}\n{b}");
}

// ---- Invariants ----

#[test]
fn the_layer_equals_a_hand_written_loop_of_step() -> Result<()> {
    let mut rng = Rng::seed(1);
    let layer = RecurrentConfig::new(3, 4).lstm::<f64>(&mut rng);
    let tape = Tape::new();
    let x = tape.input(uniform(&[5, 2, 3], &mut rng));
    let out = layer.forward(&x)?;

    let cell = &layer.cells[0];
    let xp = cell.project(&x)?;
    let mut state = cell.zero_state(&tape, 2)?;
    for t in 0..5 {
        state = cell.step(&xp.select(0, t)?, &state)?;
        assert_eq!(out.output.value().index_axis(Axis(0), t), state.0.value().view());
    }
    assert_eq!(out.h_n().value().index_axis(Axis(0), 0), state.0.value().view());
    assert_eq!(
        out.c_n().unwrap().value().index_axis(Axis(0), 0),
        state.1.value().view()
    );
    Ok(())
}

/// The built-in cells' whole-sequence ops (`Cell::unroll`) against the layer's loop of `step`,
/// which the layer takes when it is given per-sequence lengths (here all full): outputs, final
/// states and every gradient, stacked and bidirectional, from random initial states.
#[test]
fn the_fused_sequence_ops_equal_the_loop_of_steps() -> Result<()> {
    fn compare<C: Cell<f64>>(layer: &eddy_nn::Recurrent<f64, C>, parts: usize, rng: &mut Rng) -> Result<()> {
        let (steps, batch) = (4, 5);
        let x = uniform(&[steps, batch, 3], rng);
        let init: Vec<ArrayD<f64>> = (0..parts).map(|_| uniform(&[4, batch, 4], rng)).collect();
        let run = |lengths: Option<&[usize]>| -> Result<Vec<ArrayD<f64>>> {
            let tape = Tape::new();
            let x = tape.input(x.clone());
            let init: Vec<Var<f64>> = init.iter().map(|s| tape.input(s.clone())).collect();
            let out = layer.forward_with(&x, Some(&init), lengths, None)?;
            let mut loss = out.output.tanh()?.sum_all()?;
            for s in &out.states {
                loss = (&loss + &(s * s)?.sum_all()?)?;
            }
            let grads = loss.backward()?;
            let mut values = vec![out.output.value().clone()];
            values.extend(out.states.iter().map(|s| s.value().clone()));
            values.extend(init.iter().chain([&x]).map(|v| grads.var(v).unwrap().clone()));
            values.extend(layer.param_list().iter().map(|p| grads.param(p).unwrap().clone()));
            Ok(values)
        };
        let (fused, looped) = (run(None)?, run(Some(&[steps; 5]))?);
        assert_eq!(fused.len(), looped.len());
        for (a, b) in fused.iter().zip(&looped) {
            assert_close(a, b, 1e-12);
        }
        Ok(())
    }
    let mut rng = Rng::seed(7);
    let config = RecurrentConfig::new(3, 4).num_layers(2).bidirectional(true);
    compare(&config.lstm(&mut rng), 2, &mut rng)?;
    compare(&config.gru(&mut rng), 1, &mut rng)?;
    compare(&config.rnn(eddy_nn::Nonlinearity::Tanh, &mut rng), 1, &mut rng)?;
    compare(
        &config
            .clone()
            .bias(false)
            .rnn(eddy_nn::Nonlinearity::Relu, &mut rng),
        1,
        &mut rng,
    )?;
    compare(&config.bias(false).lstm(&mut rng), 2, &mut rng)
}

#[test]
fn batch_rows_are_independent() -> Result<()> {
    let mut rng = Rng::seed(2);
    let layer = RecurrentConfig::new(3, 4)
        .num_layers(2)
        .bidirectional(true)
        .gru::<f64>(&mut rng);
    let lengths = [4, 1, 3];
    let x = uniform(&[4, 3, 3], &mut rng);
    let h0 = uniform(&[4, 3, 4], &mut rng);
    let tape = Tape::new();
    let all = layer.forward_with(
        &tape.input(x.clone()),
        Some(&[tape.input(h0.clone())]),
        Some(&lengths),
        None,
    )?;
    for (b, &len) in lengths.iter().enumerate() {
        let row = |a: &ArrayD<f64>| a.slice_axis(Axis(1), Slice::from(b..b + 1)).to_owned();
        let alone = layer.forward_with(
            &tape.input(row(&x)),
            Some(&[tape.input(row(&h0))]),
            Some(&[len]),
            None,
        )?;
        assert_close(alone.output.value(), &row(all.output.value()), 1e-12);
        assert_close(alone.h_n().value(), &row(all.h_n().value()), 1e-12);
    }
    Ok(())
}

#[test]
fn backward_twice_gives_identical_gradients() -> Result<()> {
    let mut rng = Rng::seed(3);
    let layer = RecurrentConfig::new(2, 3)
        .num_layers(2)
        .bidirectional(true)
        .lstm::<f64>(&mut rng);
    let tape = Tape::new();
    let x = tape.input(uniform(&[4, 2, 2], &mut rng));
    let out = layer.forward_with(&x, None, Some(&[4, 2]), None)?;
    let loss = (out.output.powi(2)?.sum_all()? + out.c_n().unwrap().sum_all()?)?;
    let params: Vec<Var<f64>> = layer.param_list().iter().map(|p| tape.param(p)).collect();
    let wrt: Vec<&Var<f64>> = std::iter::once(&x).chain(&params).collect();
    let first = tape.grad(&[&loss], None, &wrt, GradOptions::retain_graph())?;
    let second = tape.grad(&[&loss], None, &wrt, GradOptions::retain_graph())?;
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.as_ref().unwrap().value(), b.as_ref().unwrap().value());
    }
    // Without retain_graph the first pass frees the graph, and a second pass says so.
    tape.grad(&[&loss], None, &wrt, GradOptions::default())?;
    let e = tape
        .grad(&[&loss], None, &wrt, GradOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("retain_graph"), "{e}");
    Ok(())
}

#[test]
fn truncated_bptt_matches_the_full_run_and_cuts_the_gradient() -> Result<()> {
    let mut rng = Rng::seed(4);
    let layer = RecurrentConfig::new(2, 3).num_layers(2).lstm::<f64>(&mut rng);
    let x = uniform(&[6, 2, 2], &mut rng);
    let full = layer.forward(&Tape::new().input(x.clone()))?;

    let tape = Tape::new();
    let x1 = tape.input(x.slice_axis(Axis(0), Slice::from(0..4)).to_owned());
    let x2 = tape.input(x.slice_axis(Axis(0), Slice::from(4..6)).to_owned());
    let out1 = layer.forward(&x1)?;
    let carry = out1.carry();
    let out2 = layer.forward_with(&x2, Some(&carried(&tape, &carry)), None, None)?;
    let joined = concat(&[&out1.output, &out2.output], 0)?;
    assert_close(joined.value(), full.output.value(), 1e-12);
    assert_close(out2.h_n().value(), full.h_n().value(), 1e-12);
    assert_close(out2.c_n().unwrap().value(), full.c_n().unwrap().value(), 1e-12);

    let loss = out2.output.sum_all()?;
    let g = tape.grad(&[&loss], None, &[&x1, &x2], GradOptions::default())?;
    assert!(g[0].is_none(), "the gradient leaked into the first chunk");
    assert!(g[1].is_some());
    Ok(())
}

#[test]
fn dropout_between_layers_acts_only_in_training() -> Result<()> {
    let config = RecurrentConfig::new(2, 3).num_layers(2);
    let plain = config.lstm::<f64>(&mut Rng::seed(5));
    let mut layer = config.clone().dropout(0.5).lstm::<f64>(&mut Rng::seed(5));
    let x = uniform(&[4, 3, 2], &mut Rng::seed(6));
    let tape = Tape::new();
    let x = tape.input(x);
    let reference = plain.forward(&x)?;
    let train = |seed| layer.forward_with(&x, None, None, Some(&mut Rng::seed(seed)));
    let (a, b) = (train(7)?, train(8)?);
    assert_ne!(a.output.value(), b.output.value());
    assert_ne!(a.output.value(), reference.output.value());
    layer.set_training(false);
    let e1 = layer.forward(&x)?;
    let e2 = layer.forward_with(&x, None, None, Some(&mut Rng::seed(9)))?;
    assert_eq!(e1.output.value(), reference.output.value());
    assert_eq!(e2.output.value(), reference.output.value());
    Ok(())
}

/// A cell that records the (masked) `h` it receives and outputs its input: fed ones, the `h`
/// it sees from step 1 on is exactly the recurrent dropout mask.
#[derive(Clone)]
struct Probe {
    size: usize,
    seen: Rc<RefCell<Vec<ArrayD<f64>>>>,
}

impl Module<f64> for Probe {
    fn params(&self) -> Vec<(String, Param<f64>)> {
        Vec::new()
    }
}

impl Cell<f64> for Probe {
    type State = Var<f64>;
    fn input_size(&self) -> usize {
        self.size
    }
    fn state_sizes(&self) -> Vec<usize> {
        vec![self.size]
    }
    fn step(&self, x: &Var<f64>, h: &Var<f64>) -> Result<Var<f64>> {
        self.seen.borrow_mut().push(h.value().clone());
        Ok(x.clone())
    }
}

#[test]
fn recurrent_dropout_reuses_one_mask_and_acts_only_in_training() -> Result<()> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let make = |_: usize, h: usize, _: &mut Rng| Probe {
        size: h,
        seen: seen.clone(),
    };
    let mut layer = RecurrentConfig::new(5, 5)
        .recurrent_dropout(0.5)
        .build(make, &mut Rng::seed(0));
    let tape = Tape::new();
    let ones = tape.input(ArrayD::from_elem(vec![6, 4, 5], 1.0));
    layer.forward_with(&ones, None, None, Some(&mut Rng::seed(10)))?;
    let masks = seen.borrow_mut().split_off(1); // step 0 sees the zero state
    assert_eq!(masks.len(), 5);
    assert!(
        masks.iter().all(|m| *m == masks[0]),
        "the mask changed between steps"
    );
    assert!(masks[0].iter().any(|&v| v == 0.0) && masks[0].iter().any(|&v| v == 2.0));
    assert!(masks[0].iter().all(|&v| v == 0.0 || v == 2.0));

    layer.set_training(false);
    seen.borrow_mut().clear();
    layer.forward(&ones)?;
    assert!(seen.borrow()[1..].iter().all(|h| h.iter().all(|&v| v == 1.0)));
    Ok(())
}

// ---- Errors: each names the layer and the expected and actual shapes. ----

fn lstm() -> eddy_nn::Lstm<f64> {
    RecurrentConfig::new(2, 3).num_layers(2).lstm(&mut Rng::seed(0))
}

fn err(r: Result<eddy_nn::RecurrentOutput<f64>>) -> String {
    r.expect_err("an error").to_string()
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "{message:?} does not mention {p:?}");
    }
}

#[test]
fn wrong_input_rank_or_feature_size() {
    let (layer, tape) = (lstm(), Tape::new());
    let e = err(layer.forward(&tape.input(ArrayD::zeros(vec![3, 2]))));
    assert_mentions(&e, &["lstm", "[T, B, I] with I = 2", "[3, 2]"]);
    let e = err(layer.forward(&tape.input(ArrayD::zeros(vec![3, 2, 4]))));
    assert_mentions(&e, &["lstm", "[T, B, I] with I = 2", "[3, 2, 4]"]);
    let batch_first = RecurrentConfig::new(2, 3)
        .batch_first(true)
        .gru::<f64>(&mut Rng::seed(0));
    let e = err(batch_first.forward(&tape.input(ArrayD::zeros(vec![1, 3, 2, 2]))));
    assert_mentions(&e, &["gru", "[B, T, I] with I = 2", "[1, 3, 2, 2]"]);
}

#[test]
fn a_state_of_the_wrong_shape_or_count() {
    let (layer, tape) = (lstm(), Tape::new());
    let x = tape.input(ArrayD::zeros(vec![3, 2, 2]));
    let good = tape.input(ArrayD::zeros(vec![2, 2, 3]));
    let bad = tape.input(ArrayD::zeros(vec![1, 2, 3]));
    let e = err(layer.forward_with(&x, Some(&[good.clone(), bad]), None, None));
    assert_mentions(
        &e,
        &["lstm", "initial state part 1", "[2, 2, 3]", "got [1, 2, 3]"],
    );
    let e = err(layer.forward_with(&x, Some(&[good]), None, None));
    assert_mentions(&e, &["lstm", "expected 2 initial state parts, got 1"]);
}

#[test]
fn bad_lengths() {
    let (layer, tape) = (lstm(), Tape::new());
    let x = tape.input(ArrayD::zeros(vec![3, 2, 2]));
    let e = err(layer.forward_with(&x, None, Some(&[2, 0]), None));
    assert_mentions(&e, &["lstm", "length 0 of sequence 1", "1..=3"]);
    let e = err(layer.forward_with(&x, None, Some(&[4, 1]), None));
    assert_mentions(&e, &["lstm", "length 4 of sequence 0", "1..=3"]);
    let e = err(layer.forward_with(&x, None, Some(&[1, 2, 3]), None));
    assert_mentions(&e, &["lstm", "3 lengths for a batch of 2"]);
}

#[test]
fn dropout_in_training_needs_an_rng() {
    let tape = Tape::new();
    let x = tape.input(ArrayD::zeros(vec![3, 2, 2]));
    for config in [
        RecurrentConfig::new(2, 3).num_layers(2).dropout(0.2),
        RecurrentConfig::new(2, 3).recurrent_dropout(0.2),
    ] {
        let mut layer = config.rnn::<f64>(eddy_nn::Nonlinearity::Tanh, &mut Rng::seed(0));
        assert_mentions(&err(layer.forward(&x)), &["rnn", "dropout", "rng"]);
        layer.set_training(false);
        assert!(layer.forward(&x).is_ok());
    }
}

#[test]
fn an_error_inside_a_step_names_the_layer_and_step() {
    // A hidden matrix with 8 rows instead of 4H = 12: the step's gate sum does not fit.
    let config = RecurrentConfig::new(2, 3).bias(false).bidirectional(true);
    let mut layer = config.lstm::<f64>(&mut Rng::seed(0)).named("encoder");
    layer.cells[1].weight_hh = Param::new("weight_hh", ArrayD::zeros(vec![8, 3]));
    let tape = Tape::new();
    let x = tape.input(ArrayD::zeros(vec![3, 2, 2]));
    // The whole-sequence op names the layer, the direction and the shapes…
    let e = err(layer.forward(&x));
    assert_mentions(
        &e,
        &["encoder layer 0 reverse", "lstm_sequence", "[8, 3]", "[3, 2, 12]"],
    );
    // … and the loop of steps (taken with per-sequence lengths) names the step too.
    let e = err(layer.forward_with(&x, None, Some(&[3, 2]), None));
    assert_mentions(&e, &["encoder layer 0 reverse step 2", "[8, 3]", "[2, 12]"]);
}

/// The bytes of a file holding `layer`'s parameters, with `edit` applied to the entries.
fn weight_file(layer: &eddy_nn::Lstm<f64>, edit: impl FnOnce(&mut Vec<(String, ArrayD<f64>)>)) -> TensorFile {
    let mut entries = eddy_nn::io::param_entries(layer);
    edit(&mut entries);
    let refs: Vec<(String, Entry<'_>)> = entries.iter().map(|(n, a)| (n.clone(), Entry::F64(a))).collect();
    let bytes = to_bytes(&refs, &HashMap::new()).unwrap();
    TensorFile::from_bytes(&bytes, "lstm.safetensors").unwrap()
}

#[test]
fn a_weight_file_missing_a_tensor_or_with_a_wrong_shape() {
    let layer = lstm();
    let before = layer.param_list()[0].value();
    let ok = weight_file(&layer, |_| {});
    assert!(load_params(&layer, &ok, true).is_ok());

    let missing = weight_file(&layer, |es| es.retain(|(n, _)| n != "weight_hh_l1"));
    let e = load_params(&layer, &missing, true).unwrap_err().to_string();
    assert_mentions(
        &e,
        &["lstm.safetensors", "missing tensor \"weight_hh_l1\"", "[12, 3]"],
    );

    let wrong = weight_file(&layer, |es| {
        let w = es.iter_mut().find(|(n, _)| n == "weight_ih_l1").unwrap();
        w.1 = ArrayD::zeros(vec![12, 2]);
    });
    let e = load_params(&layer, &wrong, true).unwrap_err().to_string();
    assert_mentions(
        &e,
        &["lstm.safetensors", "\"weight_ih_l1\"", "[12, 2]", "[12, 3]"],
    );
    // Nothing was changed by the failed loads.
    assert_eq!(layer.param_list()[0].value(), before);
}
