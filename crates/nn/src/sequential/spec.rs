//! [`LayerSpec`]: a layer of a [`Sequential`](super::Sequential) before its input size is
//! known. [`recurrent`] makes one from any [`Cell`] constructor (Keras' `RNN(cell)`);
//! [`lstm`], [`gru`] and [`simple_rnn`] are that same spec over the built-in cells; [`module`]
//! takes any [`SequenceLayer`]; [`dense`] and [`dropout`] are the feed-forward built-ins.

use super::layer::{Layer, Pass, RecurrentLayer, SequenceLayer};
use crate::cells::{GruCell, LstmCell, Nonlinearity, RnnCell};
use crate::{Cell, Checkpoint, Dropout, Linear, RecurrentConfig};
use eddy_tape::{Error, Float, Result, Rng, Tape};
use ndarray::ArrayD;
use std::fmt;
use std::sync::Arc;

/// Builds a recurrent layer from its configuration (input size, stacking, directions,
/// dropouts) and `return_sequences`; returns the layer and its output feature size.
type BuildRecurrent<F> =
    Arc<dyn Fn(&RecurrentConfig, bool, &mut Rng) -> Result<(Box<dyn SequenceLayer<F>>, usize)> + Send + Sync>;

/// Builds a module layer from its input feature size.
type BuildModule<F> = Arc<dyn Fn(usize, &mut Rng) -> Result<Box<dyn SequenceLayer<F>>> + Send + Sync>;

/// A layer before its input size is known; see [`recurrent`], [`lstm`], [`gru`],
/// [`simple_rnn`], [`module`], [`dense`], [`dropout`].
#[derive(Clone)]
pub struct LayerSpec<F: Float = f32> {
    pub(crate) kind: String,
    pub(crate) what: What<F>,
}

#[derive(Clone)]
pub(crate) enum What<F: Float> {
    Recurrent(RecurrentSpec<F>),
    Dense { units: usize },
    Dropout { rate: f64 },
    Module(BuildModule<F>),
}

#[derive(Clone)]
pub(crate) struct RecurrentSpec<F: Float> {
    build: BuildRecurrent<F>,
    /// The built-ins' hidden size, checked at build time (a user cell sizes itself).
    units: Option<usize>,
    return_sequences: bool,
    bidirectional: bool,
    num_layers: usize,
    dropout: f64,
    recurrent_dropout: f64,
    checkpoint: Checkpoint,
}

impl<F: Float> fmt::Debug for LayerSpec<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("LayerSpec");
        d.field("kind", &self.kind);
        match &self.what {
            What::Recurrent(r) => d
                .field("units", &r.units)
                .field("return_sequences", &r.return_sequences)
                .field("bidirectional", &r.bidirectional)
                .field("num_layers", &r.num_layers)
                .field("dropout", &r.dropout)
                .field("recurrent_dropout", &r.recurrent_dropout)
                .field("checkpoint", &r.checkpoint),
            What::Dense { units } => d.field("units", units),
            What::Dropout { rate } => d.field("rate", rate),
            What::Module(_) => &mut d,
        };
        d.finish()
    }
}

/// A recurrent layer over any cell, Keras' `RNN(cell)`: `make(input_size, rng)` makes the cell
/// of each layer and direction (in PyTorch's order: layer 0 forward, layer 0 reverse, layer 1
/// …), so the layer can be stacked ([`LayerSpec::num_layers`]) and made bidirectional. Returns
/// its last output unless [`LayerSpec::return_sequences`]; its parameters are named as in a
/// [`Recurrent`](crate::Recurrent) layer (`weight_hh_l0`, `…_reverse`).
///
/// ```
/// use eddy_nn::sequential::{dense, recurrent, Sequential};
/// use eddy_nn::{Module, MinGruCell};
/// use eddy_tape::Rng;
///
/// let model = Sequential::new()
///     .add(recurrent(|input, rng| MinGruCell::new(input, 8, true, rng)).bidirectional(true))
///     .add(dense(1))
///     .build::<f32>(3, &mut Rng::seed(0))?;
/// assert_eq!(model.params()[0].0, "layers.0.weight_ih_l0");
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub fn recurrent<F, C>(make: impl Fn(usize, &mut Rng) -> C + Send + Sync + 'static) -> LayerSpec<F>
where
    F: Float,
    C: Cell<F> + Clone + Send + Sync + 'static,
{
    cell_spec("recurrent", None, move |input, rng| Ok(make(input, rng)))
}

/// [`recurrent`] for a cell whose constructor can fail (a constraint on its sizes); the error
/// names the layer and direction.
pub fn try_recurrent<F, C>(
    make: impl Fn(usize, &mut Rng) -> Result<C> + Send + Sync + 'static,
) -> LayerSpec<F>
where
    F: Float,
    C: Cell<F> + Clone + Send + Sync + 'static,
{
    cell_spec("recurrent", None, make)
}

fn cell_spec<F, C>(
    kind: &str,
    units: Option<usize>,
    make: impl Fn(usize, &mut Rng) -> Result<C> + Send + Sync + 'static,
) -> LayerSpec<F>
where
    F: Float,
    C: Cell<F> + Clone + Send + Sync + 'static,
{
    let name = kind.to_string();
    let build = move |config: &RecurrentConfig, return_sequences: bool, rng: &mut Rng| {
        let mut layer = config.try_build(|input, _, r| make(input, r), rng)?.named(&name);
        // A user cell sizes itself: record its size where the configuration names it.
        layer.config.hidden_size = layer.cells.first().map_or(0, |c| c.output_size());
        let out = layer.output_size();
        let boxed: Box<dyn SequenceLayer<F>> = Box::new(RecurrentLayer {
            layer,
            return_sequences,
        });
        Ok((boxed, out))
    };
    LayerSpec {
        kind: kind.to_string(),
        what: What::Recurrent(RecurrentSpec {
            build: Arc::new(build),
            units,
            return_sequences: false,
            bidirectional: false,
            num_layers: 1,
            dropout: 0.0,
            recurrent_dropout: 0.0,
            checkpoint: Checkpoint::Off,
        }),
    }
}

/// An LSTM of `units` hidden units returning its last output (Keras's default): [`recurrent`]
/// over [`LstmCell`], PyTorch's parameter names and initialisation.
pub fn lstm<F: Float>(units: usize) -> LayerSpec<F> {
    cell_spec("lstm", Some(units), move |input, rng| {
        Ok(LstmCell::with_projection(input, units, 0, true, rng))
    })
}

/// A GRU of `units` hidden units returning its last output: [`recurrent`] over [`GruCell`].
pub fn gru<F: Float>(units: usize) -> LayerSpec<F> {
    cell_spec("gru", Some(units), move |input, rng| {
        Ok(GruCell::new(input, units, true, rng))
    })
}

/// An Elman RNN (tanh) of `units` hidden units returning its last output: [`recurrent`] over
/// [`RnnCell`].
pub fn simple_rnn<F: Float>(units: usize) -> LayerSpec<F> {
    cell_spec("rnn", Some(units), move |input, rng| {
        Ok(RnnCell::new(input, units, Nonlinearity::Tanh, true, rng))
    })
}

/// Any [`SequenceLayer`] made by `make(input_features, rng)`: it maps `[B, T, F]` to
/// `[B, T, F']` or to `[B, F']` (the last step). Its output size and whether it returns a
/// sequence are read from one forward pass on a zero batch at build time (no gradient, eval
/// mode). Its parameters are named by its [`Module::params`](crate::Module::params).
pub fn module<F, M>(make: impl Fn(usize, &mut Rng) -> M + Send + Sync + 'static) -> LayerSpec<F>
where
    F: Float,
    M: SequenceLayer<F> + 'static,
{
    let build = move |input: usize, rng: &mut Rng| -> Result<Box<dyn SequenceLayer<F>>> {
        Ok(Box::new(make(input, rng)))
    };
    LayerSpec {
        kind: "module".into(),
        what: What::Module(Arc::new(build)),
    }
}

/// A dense layer of `units` outputs ([`Linear`] on the last axis, per time step on a sequence).
pub fn dense<F: Float>(units: usize) -> LayerSpec<F> {
    LayerSpec {
        kind: "dense".into(),
        what: What::Dense { units },
    }
}

/// Dropout with rate `rate` (checked at build time).
pub fn dropout<F: Float>(rate: f64) -> LayerSpec<F> {
    LayerSpec {
        kind: "dropout".into(),
        what: What::Dropout { rate },
    }
}

impl<F: Float> LayerSpec<F> {
    fn recurrent_mut(&mut self) -> Option<&mut RecurrentSpec<F>> {
        match &mut self.what {
            What::Recurrent(r) => Some(r),
            _ => None,
        }
    }

    /// Names the layer's kind (its errors read `janet layer 0 step 3: …`). Default: `"lstm"`,
    /// `"gru"`, `"rnn"`, `"recurrent"`, `"module"`, `"dense"`, `"dropout"`.
    pub fn named(mut self, kind: &str) -> Self {
        self.kind = kind.to_string();
        self
    }

    /// The kind name.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// For a recurrent spec: return the whole sequence (true) or only the last output.
    /// No effect on other specs.
    pub fn return_sequences(mut self, yes: bool) -> Self {
        if let Some(r) = self.recurrent_mut() {
            r.return_sequences = yes;
        }
        self
    }

    /// For a recurrent spec: run both directions and concatenate the outputs.
    pub fn bidirectional(mut self, yes: bool) -> Self {
        if let Some(r) = self.recurrent_mut() {
            r.bidirectional = yes;
        }
        self
    }

    /// For a recurrent spec: stack `n` layers of the cell (PyTorch's `num_layers`).
    pub fn num_layers(mut self, n: usize) -> Self {
        if let Some(r) = self.recurrent_mut() {
            r.num_layers = n;
        }
        self
    }

    /// For a recurrent spec: dropout with rate `p` between stacked layers, in training.
    pub fn dropout(mut self, p: f64) -> Self {
        if let Some(r) = self.recurrent_mut() {
            r.dropout = p;
        }
        self
    }

    /// For a recurrent spec: variational recurrent dropout with rate `p`.
    pub fn recurrent_dropout(mut self, p: f64) -> Self {
        if let Some(r) = self.recurrent_mut() {
            r.recurrent_dropout = p;
        }
        self
    }

    /// For a recurrent spec: time-segment checkpointing
    /// ([`RecurrentConfig::checkpoint_every`]): keep the state every `k` steps and run each
    /// segment again in the reverse pass, for memory that grows with `T/k` states and one
    /// segment's activations instead of every step's. The trained parameters are those
    /// without it (to rounding: parameter gradients are summed per segment); a layer that
    /// returns only its last output then never makes its output sequence. First-order
    /// gradients only. No effect on other specs.
    ///
    /// ```
    /// use eddy_nn::sequential::{dense, lstm, Loss, Optim, Sequential};
    /// use eddy_nn::FitOptions;
    /// use eddy_tape::Rng;
    ///
    /// let mut model = Sequential::new()
    ///     .add(lstm(8).checkpoint_every(16))
    ///     .add(dense(1))
    ///     .build::<f32>(3, &mut Rng::seed(0))?;
    /// model.compile(Optim::adam(1e-3), Loss::Mse)?;
    /// let x = ndarray::ArrayD::from_elem(vec![4, 100, 3], 0.5f32);
    /// let y = ndarray::ArrayD::from_elem(vec![4, 1], 1.0f32);
    /// let history = model.fit(&x, &y, FitOptions { epochs: 1, progress: false, ..FitOptions::default() })?;
    /// assert_eq!(history.loss.len(), 1);
    /// # Ok::<(), eddy_tape::Error>(())
    /// ```
    pub fn checkpoint_every(self, k: usize) -> Self {
        self.checkpoint(Checkpoint::Every(k))
    }

    /// For a recurrent spec: [`checkpoint_every`](Self::checkpoint_every) with `k = ⌈√T⌉` for
    /// each batch of `T` steps.
    pub fn checkpoint_sqrt(self) -> Self {
        self.checkpoint(Checkpoint::Sqrt)
    }

    /// For a recurrent spec: the checkpointing policy ([`Checkpoint::Off`], the default, to
    /// keep every step). No effect on other specs.
    pub fn checkpoint(mut self, policy: Checkpoint) -> Self {
        if let Some(r) = self.recurrent_mut() {
            r.checkpoint = policy;
        }
        self
    }

    /// Builds the layer for inputs of `features` features (a sequence if `sequence`); returns
    /// it with its output features and whether its output is a sequence. Errors name the
    /// layer by its index `i`.
    pub(crate) fn build(
        &self,
        i: usize,
        features: usize,
        sequence: bool,
        rng: &mut Rng,
    ) -> Result<(Layer<F>, usize, bool)> {
        let op = "Sequential::build";
        let at = |r: String| Error::invalid(op, format!("layer {i}: {r}"));
        let inner = |e: Error| e.context(format!("{op}: layer {i} ({})", self.kind));
        match &self.what {
            What::Recurrent(r) => {
                if r.units == Some(0) {
                    return Err(at("units must be at least 1".into()));
                }
                if !sequence {
                    return Err(at(
                        "a recurrent layer needs a sequence, but the layer before returns only its \
                         last output (set return_sequences(true) on it)"
                            .into(),
                    ));
                }
                if r.num_layers == 0 {
                    return Err(at("num_layers must be at least 1".into()));
                }
                if r.checkpoint == Checkpoint::Every(0) {
                    return Err(at(
                        "checkpoint_every(k) needs segments of k ≥ 1 steps, got k = 0".into()
                    ));
                }
                for (what, p) in [("dropout", r.dropout), ("recurrent_dropout", r.recurrent_dropout)] {
                    if !(0.0..1.0).contains(&p) {
                        return Err(at(format!("{what} must be in [0, 1), got {p}")));
                    }
                }
                let config = RecurrentConfig::new(features, r.units.unwrap_or(0))
                    .batch_first(true)
                    .num_layers(r.num_layers)
                    .bidirectional(r.bidirectional)
                    .dropout(r.dropout)
                    .recurrent_dropout(r.recurrent_dropout)
                    .checkpoint(r.checkpoint)
                    .return_sequences(r.return_sequences);
                let (layer, out) = (r.build)(&config, r.return_sequences, rng).map_err(inner)?;
                if out == 0 {
                    return Err(at("the cell's output size is 0".into()));
                }
                Ok((Layer::boxed(&self.kind, layer), out, r.return_sequences))
            }
            What::Dense { units } => {
                if *units == 0 {
                    return Err(at("units must be at least 1".into()));
                }
                crate::init::check_size::<F>("dense", &[*units, features]).map_err(inner)?;
                let l = Linear::new(features, *units, rng);
                Ok((Layer::new(&self.kind, l), *units, sequence))
            }
            What::Dropout { rate } => {
                let d = Dropout::new(*rate).map_err(|e| at(e.to_string()))?;
                Ok((Layer::new(&self.kind, d), features, sequence))
            }
            What::Module(make) => {
                let layer = make(features, rng).map_err(inner)?;
                let (out, seq) = probe(layer.as_ref(), features, sequence).map_err(inner)?;
                Ok((Layer::boxed(&self.kind, layer), out, seq))
            }
        }
    }
}

/// A module's output features and whether it returns a sequence, from one forward pass on a
/// zero batch of 1 row (and 2 steps) without gradients, in eval mode.
fn probe<F: Float>(layer: &dyn SequenceLayer<F>, features: usize, sequence: bool) -> Result<(usize, bool)> {
    let shape = if sequence {
        vec![1, 2, features]
    } else {
        vec![1, features]
    };
    let tape = Tape::<F>::no_grad();
    let x = tape.constant(ArrayD::zeros(shape.clone()));
    let mut rng = Rng::seed(0);
    let mut pass = Pass {
        lengths: None,
        rng: &mut rng,
        training: false,
    };
    let y = layer.forward(&x, &mut pass)?;
    match y.shape() {
        [1, 2, f] if sequence && *f > 0 => Ok((*f, true)),
        [1, f] if *f > 0 => Ok((*f, false)),
        other => Err(Error::shape(
            "module",
            &[&shape, other],
            "a module layer must map [B, T, F] to [B, T, F'] or [B, F'] (or [B, F] to [B, F']), F' ≥ 1",
        )),
    }
}
