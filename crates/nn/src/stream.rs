//! Streaming inference: running a [`Model`] over a sequence chunk by chunk, each chunk starting
//! from the state the previous one left, with the same result as one pass over the whole
//! sequence. [`Model::predict_chunked`] does it for a sequence that is all at hand but too long
//! to run at once; [`Model::stream`] gives a [`Stream`] for data that arrives in pieces (a
//! Keras `stateful=True` model fed with `predict` and cleared with `reset_states`; a PyTorch
//! loop that passes `h` back into the next call under `torch.no_grad()`).
//!
//! Chunking over time is exact for the layers a model is built from: a recurrent layer carries
//! its cells' state ([`SequenceLayer::forward_carry`](crate::sequential::SequenceLayer::forward_carry)),
//! Dense and Dropout act on each step alone. A bidirectional layer cannot stream (its reverse
//! direction starts at the end of the whole sequence), nor can a module layer that mixes time
//! steps: both are errors, never a silently different answer.
//!
//! `run_chunk` is the one forward pass over a chunk, shared with truncated BPTT
//! ([`FitOptions::tbptt`](crate::FitOptions::tbptt)).

use crate::fit::EVAL_BATCH;
use crate::sequential::{Layer, Model, Pass};
use eddy_tape::{Error, Float, Result, Rng, Tape, Var};
use ndarray::{ArrayD, Axis};

/// Each layer's carried state (`None`: at the start of a sequence, or a layer without state).
pub(crate) type Carry<F> = Vec<Option<Vec<ArrayD<F>>>>;

/// Runs `layers` over one chunk `x` (`[B, t, F]`), each from its state in `carry` (one slot per
/// layer), and leaves the states at the chunk's end in `carry`. Errors name the layer.
pub(crate) fn run_chunk<F: Float>(
    layers: &[Layer<F>],
    training: bool,
    x: &Var<F>,
    carry: &mut Carry<F>,
    rng: &mut Rng,
) -> Result<Var<F>> {
    debug_assert_eq!(carry.len(), layers.len());
    let mut h = x.clone();
    let mut pass = Pass {
        lengths: None,
        rng,
        training,
    };
    for (i, layer) in layers.iter().enumerate() {
        let (out, state) = layer
            .layer()
            .forward_carry(&h, carry[i].as_deref(), &mut pass)
            .map_err(|e| e.context(format!("layers.{i}")))?;
        h = out;
        carry[i] = state;
    }
    Ok(h)
}

/// A model's streaming inference over sequences that arrive in pieces; made by
/// [`Model::stream`]. Each [`push`](Stream::push) of a chunk `[B, t, F]` returns the model's
/// output for it, as if the chunks so far were one sequence: `[B, t, out]` for a model that
/// returns sequences, `[B, out]` (the output after the chunk's last step, that is after the
/// whole sequence so far) for one that returns its last step. [`reset`](Stream::reset) starts
/// new sequences (Keras's `reset_states`).
///
/// ```
/// use eddy_nn::sequential::{dense, lstm, Sequential};
/// use eddy_tape::Rng;
/// use ndarray::{s, Array3, Axis};
///
/// let model = Sequential::new()
///     .add(lstm(8).return_sequences(true))
///     .add(dense(1))
///     .build::<f64>(2, &mut Rng::seed(0))?;
/// let x = Array3::from_shape_fn((3, 10, 2), |(b, t, f)| ((b + 2 * t + f) as f64).sin()).into_dyn();
/// let mut stream = model.stream();
/// let first = stream.push(&x.slice(s![.., ..4, ..]).to_owned().into_dyn())?; // [3, 4, 1]
/// let rest = stream.push(&x.slice(s![.., 4.., ..]).to_owned().into_dyn())?; // [3, 6, 1]
/// let streamed = ndarray::concatenate(Axis(1), &[first.view(), rest.view()]).unwrap();
/// let whole = model.predict(&x)?;
/// assert!(streamed.iter().zip(whole.iter()).all(|(a, b)| (a - b).abs() < 1e-12));
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub struct Stream<'a, F: Float = f32> {
    model: &'a Model<F>,
    layers: Vec<Layer<F>>,
    carry: Carry<F>,
    batch: Option<usize>,
    steps: usize,
}

impl<F: Float> Stream<'_, F> {
    /// Runs the model on the next chunk `[B, t, F]` of the sequences (in evaluation mode, on a
    /// no-grad tape) and carries the state on; returns `[B, t, out]` or `[B, out]`.
    ///
    /// # Errors
    /// [`Error::Shape`] if the chunk is not `[B, t, F]` with the model's `F`, or `B` differs from
    /// the first chunk's; [`Error::Invalid`] for `t = 0` or a layer that cannot stream (a
    /// bidirectional one, or a module that mixes time steps), naming the layer.
    pub fn push(&mut self, chunk: &ArrayD<F>) -> Result<ArrayD<F>> {
        let op = "Stream::push";
        self.model.check_chunk(op, chunk)?;
        let b = chunk.shape()[0];
        if let Some(want) = self.batch {
            if b != want {
                return Err(Error::shape(
                    op,
                    &[chunk.shape(), &[want]],
                    format!("the stream holds {want} sequences; a chunk must have B = {want}"),
                ));
            }
        }
        let tape = Tape::no_grad();
        // In evaluation mode nothing random is drawn; the RNG is a formality. The state is
        // committed only on success, so a failed push leaves the stream as it was.
        let mut carry = self.carry.clone();
        let out = run_chunk(
            &self.layers,
            false,
            &tape.constant(chunk.clone()),
            &mut carry,
            &mut Rng::seed(0),
        )?;
        self.carry = carry;
        self.batch = Some(b);
        self.steps += chunk.shape()[1];
        Ok(out.value().clone())
    }

    /// Forgets the carried state: the next chunk starts new sequences (of any batch size).
    pub fn reset(&mut self) {
        self.carry = vec![None; self.layers.len()];
        self.batch = None;
        self.steps = 0;
    }

    /// The time steps pushed since the start (or the last [`reset`](Stream::reset)).
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The number of sequences the stream carries (`None` before the first chunk).
    pub fn batch_size(&self) -> Option<usize> {
        self.batch
    }
}

impl<F: Float> Model<F> {
    /// A [`Stream`] over this model: push chunks of sequences as they arrive and get the model's
    /// outputs for them, the state carried between pushes. It borrows the model, so the
    /// parameters cannot change under a running stream.
    pub fn stream(&self) -> Stream<'_, F> {
        let layers = self.eval_layers();
        Stream {
            model: self,
            carry: vec![None; layers.len()],
            layers,
            batch: None,
            steps: 0,
        }
    }

    /// [`predict`](Model::predict) chunk by chunk over time: runs `chunk` time steps at a time
    /// (the last chunk may be shorter), carrying each layer's state across chunks, so that only
    /// one chunk's activations exist at once; the result equals `predict(x)` (to rounding: a
    /// chunk's matrix products have fewer rows, which may pick another kernel). `[N, T, out]`
    /// or `[N, out]`, rows in blocks of 256 as `predict`.
    ///
    /// # Errors
    /// As [`predict`](Model::predict); [`Error::Invalid`] for `chunk = 0` or a layer that cannot
    /// run chunk by chunk (a bidirectional one, or a module that mixes time steps).
    pub fn predict_chunked(&self, x: &ArrayD<F>, chunk: usize) -> Result<ArrayD<F>> {
        let op = "predict_chunked";
        if chunk == 0 {
            return Err(Error::invalid(op, "chunk must be at least 1 time step"));
        }
        self.check_chunk(op, x)?;
        let (n, t) = (x.shape()[0], x.shape()[1]);
        let mut blocks = Vec::new();
        for start in (0..n).step_by(EVAL_BATCH) {
            let rows = x.slice_axis(Axis(0), (start..(start + EVAL_BATCH).min(n)).into());
            let mut stream = self.stream();
            let mut pieces = Vec::new();
            for s in (0..t).step_by(chunk) {
                let piece = rows
                    .slice_axis(Axis(1), (s..(s + chunk).min(t)).into())
                    .to_owned();
                pieces.push(stream.push(&piece).map_err(|e| e.context(op))?);
            }
            blocks.push(if self.returns_sequences() {
                concat(op, Axis(1), &pieces)?
            } else {
                pieces.pop().expect("T ≥ 1")
            });
        }
        concat(op, Axis(0), &blocks)
    }

    /// Checks that `x` is a non-empty `[B, t, F]` with the model's `F`.
    fn check_chunk(&self, op: &str, x: &ArrayD<F>) -> Result<()> {
        let f = self.input_features();
        if x.ndim() != 3 || x.shape()[2] != f {
            return Err(Error::shape(
                op,
                &[x.shape()],
                format!("expected [B, t, F] with F = {f}"),
            ));
        }
        if x.shape()[0] == 0 || x.shape()[1] == 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "the chunk is empty (shape {:?}); B and t must be at least 1",
                    x.shape()
                ),
            ));
        }
        Ok(())
    }
}

fn concat<F: Float>(op: &str, axis: Axis, parts: &[ArrayD<F>]) -> Result<ArrayD<F>> {
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::concatenate(axis, &views).map_err(|e| Error::invalid(op, e.to_string()))
}
