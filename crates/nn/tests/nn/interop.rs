//! PyTorch interop both ways.
//!
//! - torch → eddy: the fixtures in `fixtures/torch/rnn` are `safetensors.torch.save_file`
//!   state dicts (plus inputs and outputs); they load into the matching eddy layer by name.
//! - eddy → torch: `fixtures/eddy/seed_model.safetensors` is an eddy `Sequential` (the seed's
//!   LSTM → LSTM → Dense) saved under its dotted names, with an input and eddy's output;
//!   `tools/check_eddy_checkpoint.py` loads it into a `torch.nn.LSTM`/`Linear` stack with
//!   `load_state_dict(strict=True)` and compares outputs. Regenerate it with
//!   `cargo test -p eddy-nn --test interop -- --ignored`.

use eddy_nn::io::{self, Entry, TensorFile};
use eddy_nn::sequential::{dense, lstm, Model, Sequential};
use eddy_nn::{Module, RecurrentConfig};
use eddy_tape::{Rng, Tape};
use ndarray::ArrayD;
use std::collections::HashMap;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn a_torch_state_dict_loads_into_the_matching_layer_by_name() {
    let file = TensorFile::read(root().join("fixtures/torch/rnn/lstm_2layer.safetensors")).unwrap();
    let num = |k: &str| file.meta(k).unwrap().parse::<usize>().unwrap();
    let layer = RecurrentConfig::new(num("input_size"), num("hidden_size"))
        .num_layers(num("num_layers"))
        .lstm::<f64>(&mut Rng::seed(0));
    // The file holds inputs, outputs and gradients too: not strict.
    io::load_params(&layer, &file, false).unwrap();
    for (name, p) in layer.params() {
        assert_eq!(*p.value(), file.float::<f64>(&name).unwrap(), "{name}");
    }
    assert_eq!(layer.params().len(), 8);
    // And runs to torch's output.
    let tape = Tape::new();
    let initial = [
        tape.constant(file.float("h0").unwrap()),
        tape.constant(file.float("c0").unwrap()),
    ];
    let x = tape.constant(file.float("input").unwrap());
    let out = layer.forward_with(&x, Some(&initial), None, None).unwrap();
    let expected = file.float::<f64>("output").unwrap();
    let err = (out.output.value() - &expected)
        .mapv(f64::abs)
        .fold(0.0f64, |m, &v| m.max(v));
    assert!(err < 1e-10, "{err}");
    // Strict loading names the first extra tensor.
    let e = io::load_params(&layer, &file, true).unwrap_err();
    assert!(e.to_string().contains("unexpected tensor"), "{e}");
}

const SPEC: &str = "lstm 5 seq;lstm 4 seq;dense 2";

fn seed_model() -> Model<f64> {
    Sequential::new()
        .add(lstm(5).return_sequences(true))
        .add(lstm(4).return_sequences(true))
        .add(dense(2))
        .build::<f64>(3, &mut Rng::seed(42))
        .unwrap()
}

fn fixture() -> PathBuf {
    root().join("fixtures/eddy/seed_model.safetensors")
}

#[test]
#[ignore = "writes fixtures/eddy/seed_model.safetensors"]
fn write_eddy_fixture() {
    let m = seed_model();
    let mut rng = Rng::seed(7);
    let x = ArrayD::from_shape_fn(vec![2, 6, 3], |_| rng.uniform_in(-1.0, 1.0));
    let out = m.predict(&x).unwrap();
    let params = io::param_entries(&m);
    let mut entries: Vec<(String, Entry<'_>)> =
        params.iter().map(|(n, v)| (n.clone(), Entry::F64(v))).collect();
    entries.push(("input".into(), Entry::F64(&x)));
    entries.push(("output".into(), Entry::F64(&out)));
    let meta = HashMap::from([
        ("spec".to_string(), SPEC.to_string()),
        ("input_features".to_string(), "3".to_string()),
        ("batch_first".to_string(), "true".to_string()),
    ]);
    std::fs::create_dir_all(fixture().parent().unwrap()).unwrap();
    io::write_atomic(&fixture(), &io::to_bytes(&entries, &meta).unwrap(), None).unwrap();
}

#[test]
fn the_committed_eddy_fixture_is_what_eddy_computes() {
    let file = TensorFile::read(fixture()).unwrap();
    assert_eq!(file.meta("spec").unwrap(), SPEC);
    let m = seed_model();
    for (name, p) in m.params() {
        assert_eq!(*p.value(), file.float::<f64>(&name).unwrap(), "{name}");
    }
    let out = m.predict(&file.float("input").unwrap()).unwrap();
    let expected = file.float::<f64>("output").unwrap();
    let err = (&out - &expected).mapv(f64::abs).fold(0.0f64, |m, &v| m.max(v));
    assert!(err < 1e-12, "{err}");
}
