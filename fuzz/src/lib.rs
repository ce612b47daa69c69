//! What eddy's fuzz targets run, shared with `make-corpus` so that the seeds fit the models.
//!
//! Every function here takes arbitrary bytes and must return (whatever the bytes): the loaders
//! give `Ok` or a clean `Err`, and so does whatever runs on what they loaded (a training epoch,
//! a forward pass). A panic or an abort is a bug; libFuzzer reports it with the input.

use eddy_nn::csv::Csv;
use eddy_nn::io::{load_params, TensorFile};
use eddy_nn::schedule::StepLr;
use eddy_nn::sequential::{dense, gru, lstm, Loss, Model, Optim, Sequential};
use eddy_nn::{Embedding, FitOptions, LayerNorm, Linear, Module, Nonlinearity, Recurrent, RecurrentConfig};
use eddy_tape::{Param, Result, Rng, Tape, Var};
use ndarray::{Array3, ArrayD, Dimension};
use std::cell::RefCell;
use std::rc::Rc;

/// Input features of the checkpoint models.
pub const FEATURES: usize = 2;

/// The models whose weights and checkpoints `load_checkpoint` reads: an LSTM with Adam, and a
/// GRU stack with SGD (momentum) and a step schedule.
pub fn checkpoint_models() -> Result<Vec<(&'static str, Model<f64>)>> {
    let mut a = Sequential::new()
        .add(lstm(3))
        .add(dense(1))
        .build::<f64>(FEATURES, &mut Rng::seed(1))?;
    a.compile(Optim::adam(0.01), Loss::Mse)?;
    let mut b = Sequential::new()
        .add(gru(3).return_sequences(true))
        .add(gru(2))
        .add(dense(1))
        .build::<f64>(FEATURES, &mut Rng::seed(2))?;
    b.compile(Optim::sgd(0.1), Loss::Mse)?;
    b.set_schedule(|opt| StepLr::new(opt, 2, 0.5))?;
    Ok(vec![("lstm_adam", a), ("gru_sgd_steplr", b)])
}

/// Four windows of 3 steps: what a loaded checkpoint trains on.
pub fn train_data() -> (ArrayD<f64>, ArrayD<f64>) {
    let x = Array3::from_shape_fn((4, 3, FEATURES), |(i, t, f)| ((i * 3 + t + f) as f64 * 0.7).sin());
    let y = ArrayD::from_shape_fn(vec![4, 1], |d| (d[0] as f64 * 0.3).cos());
    (x.into_dyn(), y)
}

/// A checkpoint model kept between inputs, with what `load_checkpoint` compares against.
struct Kept {
    model: Model<f64>,
    /// Its parameters (handles) and their values as built: a failed load must leave them so.
    params: Vec<(Param<f64>, ArrayD<f64>)>,
    /// Its epoch as built.
    epoch: usize,
    /// A load succeeded (or training ran): the model is no longer as built.
    dirty: bool,
}

impl Kept {
    fn all() -> Vec<Kept> {
        checkpoint_models()
            .expect("the fuzz models build")
            .into_iter()
            .map(|(_, model)| Kept {
                params: model
                    .param_list()
                    .into_iter()
                    .map(|p| {
                        let v = ArrayD::clone(&p.value());
                        (p, v)
                    })
                    .collect(),
                epoch: model.epoch(),
                model,
                dirty: false,
            })
            .collect()
    }

    /// A failed load changed nothing (the loaders' contract): same parameters, same epoch.
    fn assert_unchanged(&self, what: &str) {
        assert_eq!(
            self.model.epoch(),
            self.epoch,
            "a failed {what} changed the epoch"
        );
        for (p, v) in &self.params {
            assert!(*p.value() == *v, "a failed {what} changed {}", p.name());
        }
    }
}

thread_local! {
    /// The checkpoint models, built once per process and again only after an input changed
    /// them (building them for every input was a third of the time), and the training data.
    static MODELS: RefCell<Vec<Kept>> = RefCell::new(Kept::all());
    static DATA: (ArrayD<f64>, ArrayD<f64>) = train_data();
}

/// `bytes` as a weights file and as a training checkpoint of each checkpoint model
/// (`Model::load_weights_from` and `Model::load_checkpoint_from` on the file parsed once with
/// `TensorFile::from_bytes`, which is what the path-taking loaders run after reading the file);
/// a checkpoint that loads then trains one more epoch. A load that fails must leave the model
/// as it was: its parameters and epoch are compared.
pub fn load_checkpoint(bytes: &[u8]) {
    let Ok(file) = TensorFile::from_bytes(bytes, "fuzz.safetensors") else {
        return;
    };
    MODELS.with_borrow_mut(|models| {
        if models.iter().any(|k| k.dirty) {
            *models = Kept::all();
        }
        for kept in models.iter_mut() {
            match kept.model.load_weights_from(&file) {
                Ok(()) => kept.dirty = true,
                Err(_) if !kept.dirty => kept.assert_unchanged("load_weights"),
                Err(_) => {}
            }
            let before = kept.dirty;
            match kept.model.load_checkpoint_from(&file) {
                Ok(()) => {
                    kept.dirty = true;
                    let options = FitOptions {
                        epochs: 1, // one more epoch, from the loaded one
                        batch_size: 2,
                        progress: false,
                        ..FitOptions::default()
                    };
                    let _ = DATA.with(|(x, y)| kept.model.fit(x, y, options));
                }
                Err(_) if !before => kept.assert_unchanged("load_checkpoint"),
                Err(_) => {}
            }
        }
    });
}

/// A layer a PyTorch state dict can be loaded into, and a forward pass through it.
pub struct Layer {
    pub name: &'static str,
    pub module: Rc<dyn Module<f64>>,
    forward: Box<dyn Fn(&Tape<f64>) -> Result<()>>,
}

impl Layer {
    fn new<M: Module<f64> + 'static>(
        name: &'static str,
        module: M,
        forward: impl Fn(&M, &Tape<f64>) -> Result<()> + 'static,
    ) -> Layer {
        let m = Rc::new(module);
        Layer {
            name,
            module: m.clone(),
            forward: Box::new(move |tape| forward(&m, tape)),
        }
    }

    /// A forward pass on a small fixed input.
    pub fn forward(&self, tape: &Tape<f64>) -> Result<()> {
        (self.forward)(tape)
    }
}

/// A fixed input of `shape`.
fn input(tape: &Tape<f64>, shape: &[usize]) -> Var<f64> {
    tape.constant(ArrayD::from_shape_fn(shape.to_vec(), |d| {
        (d.as_array_view().sum() as f64 * 0.4).sin()
    }))
}

/// Every layer kind with PyTorch's parameter names: Elman RNN (tanh, ReLU), LSTM (with
/// projections), GRU, stacked and bidirectional, without biases; Linear, Embedding, LayerNorm.
/// The GRU(5, 3) matches `fixtures/torch/rnn/gru_1layer.safetensors`.
pub fn layers() -> Vec<Layer> {
    let rng = &mut Rng::seed(3);
    // Time-major input [T 3, B 2, I].
    fn seq<C: eddy_nn::Cell<f64>>(i: usize) -> impl Fn(&Recurrent<f64, C>, &Tape<f64>) -> Result<()> {
        move |m, tape| m.forward(&input(tape, &[3, 2, i])).map(|_| ())
    }
    let stacked = RecurrentConfig::new(3, 4).num_layers(2);
    vec![
        Layer::new(
            "rnn_tanh",
            RecurrentConfig::new(3, 4).rnn::<f64>(Nonlinearity::Tanh, rng),
            seq(3),
        ),
        Layer::new(
            "rnn_relu_2layer_bidir",
            stacked
                .clone()
                .bidirectional(true)
                .rnn::<f64>(Nonlinearity::Relu, rng),
            seq(3),
        ),
        Layer::new("lstm", RecurrentConfig::new(3, 4).lstm::<f64>(rng), seq(3)),
        Layer::new(
            "lstm_proj_2layer_bidir",
            stacked.clone().bidirectional(true).proj_size(2).lstm::<f64>(rng),
            seq(3),
        ),
        Layer::new("gru", RecurrentConfig::new(5, 3).gru::<f64>(rng), seq(5)),
        Layer::new("gru_nobias_2layer", stacked.bias(false).gru::<f64>(rng), seq(3)),
        Layer::new("linear", Linear::<f64>::new(3, 2, rng), |m, tape| {
            m.forward(&input(tape, &[2, 3])).map(|_| ())
        }),
        Layer::new("embedding", Embedding::<f64>::new(5, 3, rng), |m, tape| {
            m.forward(tape, &[0, 4, 2, 1], &[2, 2]).map(|_| ())
        }),
        Layer::new("layernorm", LayerNorm::<f64>::new(3), |m, tape| {
            m.forward(&input(tape, &[2, 3])).map(|_| ())
        }),
    ]
}

/// `bytes` as a safetensors state dict, loaded (strict and not) into every layer kind; a
/// layer that loads runs a forward pass.
pub fn load_state_dict(bytes: &[u8]) {
    let Ok(file) = TensorFile::from_bytes(bytes, "fuzz.safetensors") else {
        return;
    };
    for layer in layers() {
        for strict in [false, true] {
            if load_params(layer.module.as_ref(), &file, strict).is_ok() {
                let _ = layer.forward(&Tape::new());
            }
        }
    }
}

/// `bytes` as a dataset CSV: every column as numbers, and all of them as a feature array.
pub fn read_csv(bytes: &[u8]) {
    let Ok(csv) = Csv::parse(bytes, "fuzz.csv") else {
        return;
    };
    let names: Vec<&str> = csv.header().iter().map(String::as_str).collect();
    for name in &names {
        let _ = csv.column::<f32>(name);
    }
    let _ = csv.columns::<f64>(&names);
    let _ = csv.cell(csv.rows().saturating_sub(1), 0);
}
