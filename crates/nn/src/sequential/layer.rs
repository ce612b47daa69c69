//! The built layers of a [`Model`](super::Model): the [`SequenceLayer`] trait that any layer of
//! a model implements, the [`Layer`] that holds one, and the built-ins' implementations — the
//! recurrent layer over any [`Cell`] ([`RecurrentLayer`]), [`Linear`] and [`Dropout`].
//!
//! A layer maps a batch `[B, T, F]` to `[B, T, F']` (a sequence) or `[B, F']` (the last step);
//! after a layer that returns the last step, the next sees `[B, F]`.

use crate::recurrent::carried;
use crate::{Cell, Dropout, Linear, Module, Recurrent, RecurrentOutput};
use eddy_ops::VarExt;
use eddy_tape::{Error, Float, Param, Result, Rng, Var};
use ndarray::ArrayD;
use std::fmt;

/// What a layer's forward pass gets besides its input: the batch's per-sequence lengths (a
/// padded batch), the model's training RNG (dropout masks) and whether the model is training.
pub struct Pass<'a> {
    /// One length per sequence of a padded batch (steps past it are padding), if any.
    pub lengths: Option<&'a [usize]>,
    /// The model's RNG: draw dropout masks from it, in training only.
    pub rng: &'a mut Rng,
    /// Whether the model is training (dropout active).
    pub training: bool,
}

/// What [`SequenceLayer::forward_carry`] returns: the layer's output on a chunk and the state
/// it carries to the next chunk (`None` for a layer without state), as values cut from the graph.
pub type ChunkOutput<F> = (Var<F>, Option<Vec<ArrayD<F>>>);

/// A layer a [`Model`](super::Model) can hold: a [`Module`] (its parameters under dotted names,
/// train/eval mode) with a forward pass over a batch.
///
/// Implement it for your own module to add it with [`module`](super::module); a recurrent cell
/// needs only [`Cell`] (add it with [`recurrent`](super::recurrent)). `Clone` must share the
/// parameters (as a struct of [`Param`]s does): evaluation runs on a clone in eval mode.
///
/// ```
/// use eddy_nn::sequential::{dense, lstm, module, Pass, SequenceLayer, Sequential};
/// use eddy_nn::Module;
/// use eddy_ops::prelude::*;
///
/// /// `x ⊙ scale` per feature, a module that keeps the sequence.
/// #[derive(Clone)]
/// struct Scale { scale: Param<f32> }
///
/// impl Module<f32> for Scale {
///     fn params(&self) -> Vec<(String, Param<f32>)> { vec![("scale".into(), self.scale.clone())] }
/// }
///
/// impl SequenceLayer<f32> for Scale {
///     fn forward(&self, x: &Var<f32>, _: &mut Pass<'_>) -> Result<Var<f32>> {
///         x * &x.tape().param(&self.scale)
///     }
/// }
///
/// let mut rng = Rng::seed(0);
/// let model = Sequential::new()
///     .add(module(|features, _| Scale { scale: Param::new("scale", ndarray::ArrayD::ones(vec![features])) }))
///     .add(lstm(4))
///     .add(dense(1))
///     .build::<f32>(3, &mut rng)?;
/// assert_eq!(model.params()[0].0, "layers.0.scale");
/// assert_eq!(model.predict(&ndarray::ArrayD::zeros(vec![2, 5, 3]))?.shape(), &[2, 1]);
/// # Ok::<(), Error>(())
/// ```
pub trait SequenceLayer<F: Float>: Module<F> + CloneLayer<F> + Send + Sync {
    /// Applies the layer to `x`: `[B, T, F]` (or `[B, F]` after a layer that returns only the
    /// last step).
    ///
    /// # Errors
    /// Any error of the layer's ops; the model adds the layer's index (`layers.2: …`).
    fn forward(&self, x: &Var<F>, pass: &mut Pass<'_>) -> Result<Var<F>>;

    /// Applies the layer to one chunk of a longer sequence — truncated BPTT
    /// ([`FitOptions::tbptt`](crate::FitOptions::tbptt)) and streaming inference
    /// ([`Model::stream`](super::Model::stream)) — starting from the `state` the previous chunk
    /// left (`None` at the start of a sequence); returns the output and the state to carry on
    /// (`None` for a layer without one). The state is values, not graph nodes: no gradient
    /// flows across a chunk boundary.
    ///
    /// The default is an error, since a layer that mixes time steps (a mean over time, a
    /// convolution) would give a silently wrong answer chunk by chunk. A layer that acts on each
    /// time step alone opts in with `Ok((self.forward(x, pass)?, None))`; the recurrent layer
    /// carries its cells' state; Dense and Dropout act per step.
    ///
    /// # Errors
    /// [`Error::Invalid`](eddy_tape::Error::Invalid) by default; the layer's own errors.
    fn forward_carry(
        &self,
        x: &Var<F>,
        state: Option<&[ArrayD<F>]>,
        pass: &mut Pass<'_>,
    ) -> Result<ChunkOutput<F>> {
        let _ = (x, state, pass);
        Err(Error::invalid(
            "forward_carry",
            "this layer cannot run chunk by chunk (truncated BPTT, streaming): implement \
             SequenceLayer::forward_carry (a layer acting on each time step alone returns \
             `Ok((self.forward(x, pass)?, None))`)",
        ))
    }
}

/// A boxed copy of a layer, sharing its parameters; implemented for every `Clone` layer.
pub trait CloneLayer<F: Float> {
    /// The copy.
    fn clone_layer(&self) -> Box<dyn SequenceLayer<F>>;
}

impl<F: Float, T: SequenceLayer<F> + Clone + 'static> CloneLayer<F> for T {
    fn clone_layer(&self) -> Box<dyn SequenceLayer<F>> {
        Box::new(self.clone())
    }
}

/// A built layer of a [`Model`](super::Model): any [`SequenceLayer`] under a kind name
/// (`"lstm"`, `"dense"`, `"dropout"`, a user cell's name, …) that names it in errors and
/// `Debug`.
pub struct Layer<F: Float = f32> {
    kind: String,
    inner: Box<dyn SequenceLayer<F>>,
}

impl<F: Float> Layer<F> {
    /// Wraps a layer under a kind name.
    pub fn new(kind: impl Into<String>, layer: impl SequenceLayer<F> + 'static) -> Layer<F> {
        Layer::boxed(kind, Box::new(layer))
    }

    pub(crate) fn boxed(kind: impl Into<String>, inner: Box<dyn SequenceLayer<F>>) -> Layer<F> {
        Layer {
            kind: kind.into(),
            inner,
        }
    }

    /// The kind name (`"lstm"`, `"dense"`, …).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The layer.
    pub fn layer(&self) -> &dyn SequenceLayer<F> {
        self.inner.as_ref()
    }

    pub(crate) fn layer_mut(&mut self) -> &mut dyn SequenceLayer<F> {
        self.inner.as_mut()
    }
}

impl<F: Float> Clone for Layer<F> {
    fn clone(&self) -> Self {
        Layer {
            kind: self.kind.clone(),
            inner: self.inner.clone_layer(),
        }
    }
}

impl<F: Float> fmt::Debug for Layer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<(String, Vec<usize>)> = self
            .inner
            .params()
            .into_iter()
            .map(|(n, p)| (n, p.shape().to_vec()))
            .collect();
        f.debug_struct("Layer")
            .field("kind", &self.kind)
            .field("params", &params)
            .finish()
    }
}

/// A [`Recurrent`] layer over any cell in a model: batch-first, returning the output sequence
/// or the last valid step (the final `h` of the last layer, both directions concatenated).
///
/// `return_sequences` decides, not the layer's `config.return_sequences`; when it is false
/// the layer runs as [`RecurrentConfig::return_sequences`](crate::RecurrentConfig::return_sequences)`(false)`,
/// so a checkpointed layer does not make its output sequence.
#[derive(Debug, Clone)]
pub struct RecurrentLayer<F: Float, C: Cell<F>> {
    /// The layer (its `config.batch_first` is true).
    pub layer: Recurrent<F, C>,
    /// Return `[B, T, D·H]` (true) or `[B, D·H]` at each sequence's last valid step.
    pub return_sequences: bool,
}

impl<F: Float, C: Cell<F>> Module<F> for RecurrentLayer<F, C> {
    /// The recurrent layer's own names (`weight_ih_l0`, …, PyTorch's for the built-ins).
    fn params(&self) -> Vec<(String, Param<F>)> {
        self.layer.params()
    }

    fn set_training(&mut self, training: bool) {
        self.layer.set_training(training);
    }
}

impl<F: Float, C: Cell<F>> RecurrentLayer<F, C> {
    /// The layer from the cells' first states `initial` (`None`: zeros) with the pass's
    /// sequence lengths and random stream, returning what `return_sequences` asks for.
    fn run(&self, x: &Var<F>, initial: Option<&[Var<F>]>, pass: &mut Pass<'_>) -> Result<RecurrentOutput<F>> {
        self.layer.forward_returning(
            x,
            initial,
            pass.lengths,
            Some(&mut *pass.rng),
            self.return_sequences,
        )
    }
}

impl<F: Float, C: Cell<F> + Clone + Send + Sync + 'static> SequenceLayer<F> for RecurrentLayer<F, C> {
    fn forward(&self, x: &Var<F>, pass: &mut Pass<'_>) -> Result<Var<F>> {
        Ok(self.run(x, None, pass)?.output)
    }

    /// Runs from the carried state (the cells' final states of the previous chunk): the same
    /// steps as one pass over the whole sequence. A bidirectional layer cannot: its reverse
    /// direction starts at the sequence's end.
    fn forward_carry(
        &self,
        x: &Var<F>,
        state: Option<&[ArrayD<F>]>,
        pass: &mut Pass<'_>,
    ) -> Result<ChunkOutput<F>> {
        if self.layer.directions() == 2 {
            return Err(Error::invalid(
                self.layer.name(),
                "a bidirectional layer cannot run chunk by chunk (truncated BPTT, streaming): \
                 its reverse direction starts at the end of the whole sequence",
            ));
        }
        let initial = state.map(|s| carried(x.tape(), s));
        let out = self.run(x, initial.as_deref(), pass)?;
        let carry = out.carry();
        Ok((out.output, Some(carry)))
    }
}

impl<F: Float> SequenceLayer<F> for Linear<F> {
    fn forward(&self, x: &Var<F>, _: &mut Pass<'_>) -> Result<Var<F>> {
        Linear::forward(self, x)
    }

    /// Per step: no state.
    fn forward_carry(
        &self,
        x: &Var<F>,
        _: Option<&[ArrayD<F>]>,
        pass: &mut Pass<'_>,
    ) -> Result<ChunkOutput<F>> {
        Ok((SequenceLayer::forward(self, x, pass)?, None))
    }
}

impl<F: Float> SequenceLayer<F> for Dropout {
    fn forward(&self, x: &Var<F>, pass: &mut Pass<'_>) -> Result<Var<F>> {
        x.dropout(self.p, pass.training && self.training, pass.rng)
    }

    /// Per element: no state (each chunk draws its own mask in training).
    fn forward_carry(
        &self,
        x: &Var<F>,
        _: Option<&[ArrayD<F>]>,
        pass: &mut Pass<'_>,
    ) -> Result<ChunkOutput<F>> {
        Ok((SequenceLayer::forward(self, x, pass)?, None))
    }
}
