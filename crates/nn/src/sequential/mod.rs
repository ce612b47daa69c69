//! A Keras-style [`Sequential`] stack of sequence layers: layer specs that infer their input
//! sizes, built into a [`Model`] that is compiled with an optimizer and a loss and trained with
//! [`Model::fit`](crate::fit).
//!
//! Data is batch-first, as in Keras: `x` is `[N, T, F]`; the model returns `[N, T, out]` while
//! the last recurrent layer returns sequences, `[N, out]` after one that does not.
//!
//! ```
//! use eddy_nn::sequential::{dense, lstm, Loss, Optim, Sequential};
//! use eddy_tape::Rng;
//!
//! let mut rng = Rng::seed(0);
//! let mut model = Sequential::new()
//!     .add(lstm(8).return_sequences(true))
//!     .add(lstm(8).return_sequences(true))
//!     .add(dense(1))
//!     .build::<f32>(3, &mut rng)?;
//! model.compile(Optim::adam(0.01), Loss::Mse)?;
//! let names: Vec<String> = eddy_nn::Module::params(&model).into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names[0], "layers.0.weight_ih_l0");
//! assert_eq!(names.last().unwrap(), "layers.2.bias");
//! # Ok::<(), eddy_tape::Error>(())
//! ```

mod layer;
mod spec;

pub use layer::{ChunkOutput, CloneLayer, Layer, Pass, RecurrentLayer, SequenceLayer};
pub use spec::{dense, dropout, gru, lstm, module, recurrent, simple_rnn, try_recurrent, LayerSpec};

use crate::loss::{self, Reduction};
use crate::optim::{
    Adadelta, AdadeltaConfig, Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Adamax,
    AdamaxConfig, NAdam, NAdamConfig, Optimizer, RAdam, RAdamConfig, RmsProp, RmsPropConfig, Sgd, SgdConfig,
};
use crate::schedule::Schedule;
use crate::{prefixed, Module};
use eddy_ops::VarExt;
use eddy_tape::{Error, Float, Param, Result, Rng, Var};
use ndarray::ArrayD;
use std::fmt;

/// A list of [`LayerSpec`]s; [`Sequential::build`] makes the [`Model`].
///
/// `F` is the float type of the model. The built-in specs fit any `F`; a user cell's
/// constructor fixes it (a [`recurrent`] over `MyCell<f64>` makes a `Sequential<f64>`), so
/// building a model of another float type does not compile.
#[derive(Debug, Clone)]
pub struct Sequential<F: Float = f32> {
    /// The layers to build, in order.
    pub specs: Vec<LayerSpec<F>>,
}

impl<F: Float> Default for Sequential<F> {
    fn default() -> Self {
        Sequential { specs: Vec::new() }
    }
}

/// `G: SameFloat<F>` holds exactly when `G` and `F` are the same type: it lets
/// [`Sequential::build`] keep its `build::<f32>(…)` spelling (which then fixes the specs' `F`)
/// while a user cell's specs fix the type for it.
pub trait SameFloat<F: Float>: Float {
    /// The identity.
    fn same(model: Model<F>) -> Model<Self>;
}

impl<T: Float> SameFloat<T> for T {
    fn same(model: Model<T>) -> Model<T> {
        model
    }
}

impl<F: Float> Sequential<F> {
    /// An empty stack.
    pub fn new() -> Sequential<F> {
        Sequential::default()
    }

    /// Appends a layer (Keras's `model.add`).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, spec: LayerSpec<F>) -> Sequential<F> {
        self.specs.push(spec);
        self
    }

    /// Builds the model for inputs of `input_features` features, initialising every layer from
    /// `rng` in order (PyTorch's initialisers), and forks the model's own training RNG from it.
    /// `G` is the model's float type, the same as the specs' `F` (`build::<f32>` names it when
    /// nothing else does).
    ///
    /// # Errors
    /// [`Error::Invalid`] for no layers, zero features or units, a dropout rate outside
    /// `[0, 1)`, or a recurrent layer after one that returns only its last output; a user
    /// cell's or module's constructor errors, naming the layer.
    pub fn build<G: SameFloat<F>>(&self, input_features: usize, rng: &mut Rng) -> Result<Model<G>> {
        let op = "Sequential::build";
        if self.specs.is_empty() {
            return Err(Error::invalid(op, "the model has no layers"));
        }
        if input_features == 0 {
            return Err(Error::invalid(op, "input_features must be at least 1"));
        }
        let mut features = input_features;
        let mut sequence = true;
        let mut layers = Vec::with_capacity(self.specs.len());
        for (i, spec) in self.specs.iter().enumerate() {
            let (layer, out, seq) = spec.build(i, features, sequence, rng)?;
            features = out;
            sequence = seq;
            layers.push(layer);
        }
        Ok(G::same(Model {
            layers,
            input_features,
            output_features: features,
            returns_sequences: sequence,
            training: true,
            rng: Rng::seed(rng.next_u64()),
            compiled: None,
            epoch: 0,
            early: None,
        }))
    }
}

/// The loss a [`Model`] is trained with (mean over elements).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Mean squared error.
    Mse,
    /// Mean absolute error.
    Mae,
    /// Huber loss with threshold `delta`.
    Huber(f64),
    /// Softmax cross-entropy of the outputs (logits) against class probabilities of their
    /// shape, one-hot for class labels ([`data::one_hot`](crate::data::one_hot)): Keras'
    /// `categorical_crossentropy(from_logits=True)`, PyTorch's `CrossEntropyLoss` with
    /// probability targets. The classes are the last axis (`[N, C]` or `[N, T, C]`).
    CrossEntropy,
}

impl Loss {
    /// The loss of `pred` against `target`, with an optional 0/1 mask that broadcasts to them.
    ///
    /// # Errors
    /// As [`loss::mse`]: the shapes differ, the mask does not broadcast.
    pub fn apply<F: Float>(
        &self,
        pred: &Var<F>,
        target: &Var<F>,
        mask: Option<&ArrayD<F>>,
    ) -> Result<Var<F>> {
        match *self {
            Loss::Mse => loss::mse(pred, target, Reduction::Mean, mask),
            Loss::Mae => loss::l1(pred, target, Reduction::Mean, mask),
            Loss::Huber(d) => loss::huber(pred, target, d, Reduction::Mean, mask),
            Loss::CrossEntropy if pred.ndim() == 3 => {
                // [N, T, C] → [N, C, T]: the class axis is axis 1; a [N, T, 1] mask → [N, T].
                let mask = match mask {
                    Some(m) if m.ndim() == 3 && m.shape()[2] == 1 => {
                        Some(m.index_axis(ndarray::Axis(2), 0).to_owned())
                    }
                    m => m.cloned(),
                };
                let target = target.transpose(1, 2)?;
                let pred = pred.transpose(1, 2)?;
                loss::cross_entropy(&pred, &target, Reduction::Mean, mask.as_ref())
            }
            Loss::CrossEntropy => loss::cross_entropy(pred, target, Reduction::Mean, mask),
        }
    }
}

/// A metric recorded in the [`History`](crate::fit::History) besides the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Mean absolute error, `"mae"`.
    Mae,
    /// Mean squared error, `"mse"`.
    Mse,
    /// Root mean squared error, `"rmse"`.
    Rmse,
    /// The fraction of rows (of valid steps, for sequence outputs) whose arg-max output is the
    /// target's arg-max class, `"accuracy"` (Keras' `categorical_accuracy`).
    Accuracy,
}

impl Metric {
    /// Its key in the history: `"mae"`, `"mse"`, `"rmse"`, `"accuracy"` (`"val_…"` on
    /// validation data).
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Mae => "mae",
            Metric::Mse => "mse",
            Metric::Rmse => "rmse",
            Metric::Accuracy => "accuracy",
        }
    }
}

/// An optimizer to be built over a model's parameters by [`Model::compile`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optim {
    /// `torch.optim.SGD`.
    Sgd(SgdConfig),
    /// `torch.optim.Adam`.
    Adam(AdamConfig),
    /// `torch.optim.AdamW`.
    AdamW(AdamWConfig),
    /// `torch.optim.RMSprop`.
    RmsProp(RmsPropConfig),
    /// `torch.optim.Adagrad`.
    Adagrad(AdagradConfig),
    /// `torch.optim.NAdam`.
    NAdam(NAdamConfig),
    /// `torch.optim.RAdam`.
    RAdam(RAdamConfig),
    /// `torch.optim.Adamax`.
    Adamax(AdamaxConfig),
    /// `torch.optim.Adadelta`.
    Adadelta(AdadeltaConfig),
}

impl Optim {
    /// Adam with learning rate `lr` and PyTorch's other defaults.
    pub fn adam(lr: f64) -> Optim {
        Optim::Adam(AdamConfig {
            lr,
            ..AdamConfig::default()
        })
    }

    /// Plain SGD with learning rate `lr`.
    pub fn sgd(lr: f64) -> Optim {
        Optim::Sgd(SgdConfig {
            lr,
            ..SgdConfig::default()
        })
    }

    /// Builds it over `params`.
    ///
    /// # Errors
    /// The optimizer's own check of its hyper-parameters.
    pub fn build<F: Float>(self, params: Vec<Param<F>>) -> Result<Box<dyn Optimizer<F>>> {
        Ok(match self {
            Optim::Sgd(c) => Box::new(Sgd::new(params, c)?),
            Optim::Adam(c) => Box::new(Adam::new(params, c)?),
            Optim::AdamW(c) => Box::new(AdamW::new(params, c)?),
            Optim::RmsProp(c) => Box::new(RmsProp::new(params, c)?),
            Optim::Adagrad(c) => Box::new(Adagrad::new(params, c)?),
            Optim::NAdam(c) => Box::new(NAdam::new(params, c)?),
            Optim::RAdam(c) => Box::new(RAdam::new(params, c)?),
            Optim::Adamax(c) => Box::new(Adamax::new(params, c)?),
            Optim::Adadelta(c) => Box::new(Adadelta::new(params, c)?),
        })
    }
}

/// What [`Model::compile`] sets: the optimizer, the loss, the metrics and a schedule.
pub(crate) struct Compiled<F: Float> {
    pub(crate) optimizer: Box<dyn Optimizer<F>>,
    pub(crate) loss: Loss,
    pub(crate) metrics: Vec<Metric>,
    pub(crate) schedule: Option<Box<dyn Schedule>>,
}

/// A built [`Sequential`] model: its layers, its own training RNG (shuffling, dropout), the
/// number of epochs trained so far, and once compiled an optimizer and a loss.
pub struct Model<F: Float = f32> {
    /// The built layers, in order (their parameters are named `layers.{i}.…`).
    pub layers: Vec<Layer<F>>,
    input_features: usize,
    output_features: usize,
    returns_sequences: bool,
    training: bool,
    pub(crate) rng: Rng,
    pub(crate) compiled: Option<Compiled<F>>,
    pub(crate) epoch: usize,
    /// Early stopping's counters of the current run ([`fit`](crate::fit)).
    pub(crate) early: Option<crate::fit::EarlyTrack<F>>,
}

impl<F: Float> fmt::Debug for Model<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("layers", &self.layers)
            .field("input_features", &self.input_features)
            .field("epoch", &self.epoch)
            .field("compiled", &self.compiled.is_some())
            .finish()
    }
}

impl<F: Float> Model<F> {
    /// Sets the optimizer (built over the parameters in [`Module::params`] order) and the loss;
    /// the metrics start as `[Mae]`. Compiling again starts a fresh optimizer.
    ///
    /// # Errors
    /// The optimizer's check of its hyper-parameters.
    pub fn compile(&mut self, optimizer: Optim, loss: Loss) -> Result<()> {
        let optimizer = optimizer.build(self.param_list())?;
        self.compile_with(optimizer, loss)
    }

    /// Like [`Model::compile`] with an optimizer you built yourself over the parameters of
    /// [`Module::param_list`], each once, in any order (so a
    /// [`ParamGroups`](crate::optim::ParamGroups) over them works too).
    ///
    /// # Errors
    /// [`Error::Invalid`] if the optimizer's parameters are not this model's.
    pub fn compile_with(&mut self, optimizer: Box<dyn Optimizer<F>>, loss: Loss) -> Result<()> {
        let mine: std::collections::HashSet<_> = self.param_list().iter().map(|p| p.id()).collect();
        let theirs: std::collections::HashSet<_> = optimizer.params().iter().map(|p| p.id()).collect();
        if optimizer.params().len() != mine.len() || theirs != mine {
            return Err(Error::invalid(
                "compile",
                "the optimizer must be built over the model's param_list() parameters, each once",
            ));
        }
        self.compiled = Some(Compiled {
            optimizer,
            loss,
            metrics: vec![Metric::Mae],
            schedule: None,
        });
        Ok(())
    }

    /// Sets the metrics recorded besides the loss.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the model is not compiled.
    pub fn set_metrics(&mut self, metrics: &[Metric]) -> Result<()> {
        self.compiled_mut("set_metrics")?.metrics = metrics.to_vec();
        Ok(())
    }

    /// Adds a learning-rate schedule, made from the compiled optimizer and stepped once per
    /// epoch, e.g. `model.set_schedule(|opt| StepLr::new(opt, 10, 0.5))`.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the model is not compiled; the schedule's own errors.
    pub fn set_schedule<S: Schedule + 'static>(
        &mut self,
        make: impl FnOnce(&mut dyn Optimizer<F>) -> Result<S>,
    ) -> Result<()> {
        let c = self.compiled_mut("set_schedule")?;
        let s = make(c.optimizer.as_mut())?;
        c.schedule = Some(Box::new(s));
        Ok(())
    }

    pub(crate) fn compiled_mut(&mut self, op: &str) -> Result<&mut Compiled<F>> {
        self.compiled
            .as_mut()
            .ok_or_else(|| Error::invalid(op, "the model is not compiled (call compile first)"))
    }

    /// The compiled optimizer, if any.
    pub fn optimizer(&self) -> Option<&dyn Optimizer<F>> {
        self.compiled.as_ref().map(|c| c.optimizer.as_ref())
    }

    /// The compiled schedule, if any.
    pub fn schedule(&self) -> Option<&dyn Schedule> {
        self.compiled.as_ref().and_then(|c| c.schedule.as_deref())
    }

    /// The number of input features.
    pub fn input_features(&self) -> usize {
        self.input_features
    }

    /// The number of output features.
    pub fn output_features(&self) -> usize {
        self.output_features
    }

    /// Whether the output is a sequence `[N, T, out]` (else `[N, out]`).
    pub fn returns_sequences(&self) -> bool {
        self.returns_sequences
    }

    /// The number of epochs trained so far (restored from a training checkpoint).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The model's training RNG (shuffling and dropout).
    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// Whether the model is in training mode (dropout active).
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Runs the model on a batch `x` (`[B, T, F]`), with optional per-sequence lengths for
    /// padded batches (see [`data::pad_sequences`](crate::data::pad_sequences)); `rng` draws
    /// the dropout masks in training mode.
    ///
    /// Returns `[B, T, out]` (outputs past each length are those of zero states' Dense: mask
    /// them in the loss) or `[B, out]` (the output at each sequence's last valid step).
    ///
    /// # Errors
    /// A shape error naming the layer (`layers.1: lstm layer 0 step 3: …`).
    pub fn forward(&self, x: &Var<F>, lengths: Option<&[usize]>, rng: &mut Rng) -> Result<Var<F>> {
        if x.ndim() != 3 || x.shape()[2] != self.input_features {
            return Err(Error::shape(
                "model",
                &[x.shape()],
                format!("expected input [B, T, F] with F = {}", self.input_features),
            ));
        }
        run_layers(&self.layers, self.training, x, lengths, rng)
    }

    /// The layers switched to evaluation mode (cheap: parameters are shared handles).
    pub(crate) fn eval_layers(&self) -> Vec<Layer<F>> {
        let mut layers = self.layers.clone();
        for l in &mut layers {
            l.layer_mut().set_training(false);
        }
        layers
    }
}

/// Runs `layers` in order on `x`, naming the layer of an error.
pub(crate) fn run_layers<F: Float>(
    layers: &[Layer<F>],
    training: bool,
    x: &Var<F>,
    lengths: Option<&[usize]>,
    rng: &mut Rng,
) -> Result<Var<F>> {
    let mut h = x.clone();
    let mut pass = Pass {
        lengths,
        rng,
        training,
    };
    for (i, layer) in layers.iter().enumerate() {
        h = layer
            .layer()
            .forward(&h, &mut pass)
            .map_err(|e| e.context(format!("layers.{i}")))?;
    }
    Ok(h)
}

impl<F: Float> Module<F> for Model<F> {
    /// `layers.{i}.{name}` for each layer's parameters, in layer order.
    fn params(&self) -> Vec<(String, Param<F>)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| prefixed(&format!("layers.{i}"), l.layer().params()))
            .collect()
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
        for l in &mut self.layers {
            l.layer_mut().set_training(training);
        }
    }
}
