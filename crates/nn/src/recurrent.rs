//! [`Recurrent`]: one generic layer that unrolls any [`Cell`] — stacking, bidirectional,
//! batch-first, initial and final states, ragged lengths, dropout between layers, variational
//! recurrent dropout and truncated BPTT. [`Lstm`], [`Gru`] and [`Rnn`] are this layer with the
//! built-in cells, named and configured like `torch.nn.LSTM/GRU/RNN`.

use crate::cells::{GruCell, LstmCell, Nonlinearity, RnnCell};
use crate::segments::{self, Checkpoint};
use crate::{Cell, Module, RecurrentState};
use eddy_ops::{concat, dropout_mask, length_mask, stack, where_, VarExt};
use eddy_tape::{Error, Float, Param, Result, Rng, Tape, Var};
use ndarray::ArrayD;
use std::marker::PhantomData;

/// The configuration of a recurrent layer, with `torch.nn.LSTM`'s names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RecurrentConfig {
    /// Features per time step of the input.
    pub input_size: usize,
    /// Units per layer and direction.
    pub hidden_size: usize,
    /// Stacked layers (default 1).
    pub num_layers: usize,
    /// Whether the cells have biases (default true).
    pub bias: bool,
    /// Inputs and outputs `[B, T, ·]` instead of `[T, B, ·]` (default false).
    pub batch_first: bool,
    /// Dropout on the outputs of every layer but the last, in training mode.
    pub dropout: f64,
    /// A second layer of cells reads each sequence backwards; outputs are concatenated (default false).
    pub bidirectional: bool,
    /// Variational dropout on the recurrent input `h`: one mask per sequence, reused at every
    /// step (Gal & Ghahramani), in training mode.
    pub recurrent_dropout: f64,
    /// LSTM only: project `h` to this size (0: no projection).
    pub proj_size: usize,
    /// Whether a cell's own whole-sequence op ([`Cell::unroll`]) may run (default `true`).
    /// `false`: the layer always loops over [`Cell::step`], the path every user cell takes.
    pub fused: bool,
    /// Time-segment checkpointing: which steps' activations the forward pass keeps for the
    /// reverse pass (default [`Checkpoint::Off`], all of them). See
    /// [`checkpoint_every`](Self::checkpoint_every).
    pub checkpoint: Checkpoint,
    /// Whether [`RecurrentOutput::output`] is the whole output sequence (default `true`) or
    /// only the last step; see [`return_sequences`](Self::return_sequences).
    pub return_sequences: bool,
}

impl RecurrentConfig {
    /// One unidirectional, time-major layer with biases and no dropout.
    pub fn new(input_size: usize, hidden_size: usize) -> RecurrentConfig {
        RecurrentConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
            recurrent_dropout: 0.0,
            proj_size: 0,
            fused: true,
            checkpoint: Checkpoint::Off,
            return_sequences: true,
        }
    }

    /// Stacks `n` layers.
    pub fn num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }

    /// With or without biases.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Input and output as `[B, T, F]` instead of `[T, B, F]`.
    pub fn batch_first(mut self, yes: bool) -> Self {
        self.batch_first = yes;
        self
    }

    /// Dropout between layers.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Runs each layer in both directions and concatenates the outputs.
    pub fn bidirectional(mut self, yes: bool) -> Self {
        self.bidirectional = yes;
        self
    }

    /// Variational recurrent dropout.
    pub fn recurrent_dropout(mut self, p: f64) -> Self {
        self.recurrent_dropout = p;
        self
    }

    /// LSTM projection size.
    pub fn proj_size(mut self, p: usize) -> Self {
        self.proj_size = p;
        self
    }

    /// `false`: never run a cell's fused [`Cell::unroll`] nor route a cell linear in its state
    /// to the scan ([`Cell::linear_recurrence`]); loop over [`Cell::step`] instead, the generic
    /// per-step path a user's cell takes (the built-in LSTM, GRU and Elman cells
    /// are tested through it against the PyTorch fixtures). Same values and gradients, slower.
    pub fn fused(mut self, yes: bool) -> Self {
        self.fused = yes;
        self
    }

    /// Time-segment checkpointing (gradient checkpointing over time, Chen et al. 2016; JAX's
    /// `remat` of a scan): the forward pass keeps only the state every `k` steps, and the
    /// reverse pass runs each segment of `k` steps again from its saved state before
    /// back-propagating through it. The tape then holds the layer's input and output and `T/k`
    /// states instead of every step's activations (at `k ≈ √T`, memory for activations grows as
    /// `√T`), for one more forward pass of compute. Gradients equal the full tape's: the same
    /// kernels run in the same order, so outputs, input and state gradients are bitwise equal;
    /// parameter gradients are summed per segment, so they agree to rounding (exactly when
    /// `k ≥ T`).
    ///
    /// Works for every cell — a segment runs the path the layer would (the scan, the cell's
    /// fused whole-sequence op, or the loop of [`Cell::step`]) — and with bidirectional layers,
    /// stacking, ragged lengths, initial and final states and dropout. It applies only on a
    /// recording tape (a no-grad tape keeps nothing anyway). The parameters must not change
    /// between the forward and the backward pass.
    ///
    /// # Errors
    /// The forward pass refuses `k = 0`; the reverse pass refuses `create_graph` (gradients of
    /// gradients), which the re-run segments do not record. Each error names
    /// `checkpoint_every`.
    ///
    /// # Example
    /// ```
    /// use eddy_nn::RecurrentConfig;
    /// use eddy_ops::prelude::*;
    ///
    /// let config = RecurrentConfig::new(3, 8);
    /// let full = config.lstm::<f64>(&mut Rng::seed(0));
    /// let checkpointed = config.clone().checkpoint_every(4).lstm::<f64>(&mut Rng::seed(0));
    /// let x = ndarray::ArrayD::from_shape_fn(vec![10, 2, 3], |i| (i[0] + i[2]) as f64 * 0.1);
    /// let grad = |layer: &eddy_nn::Lstm<f64>| -> Result<Vec<f64>> {
    ///     let tape = Tape::new();
    ///     let x = tape.input(x.clone());
    ///     let loss = layer.forward(&x)?.output.powi(2)?.sum_all()?;
    ///     Ok(loss.backward()?.var(&x).unwrap().iter().copied().collect())
    /// };
    /// assert_eq!(grad(&full)?, grad(&checkpointed)?); // 3 segments of 4, 4 and 2 steps
    /// # Ok::<(), Error>(())
    /// ```
    pub fn checkpoint_every(mut self, k: usize) -> Self {
        self.checkpoint = Checkpoint::Every(k);
        self
    }

    /// [`checkpoint_every`](Self::checkpoint_every) with `k = ⌈√T⌉` for each sequence of `T`
    /// steps.
    pub fn checkpoint_sqrt(mut self) -> Self {
        self.checkpoint = Checkpoint::Sqrt;
        self
    }

    /// Sets the checkpointing policy ([`Checkpoint::Off`] to turn it off).
    pub fn checkpoint(mut self, policy: Checkpoint) -> Self {
        self.checkpoint = policy;
        self
    }

    /// `false`: a many-to-one layer, Keras' `return_sequences=False`. [`RecurrentOutput::output`]
    /// is then `[B, D·H_out]`, the last layer's output at each sequence's last step (its last
    /// valid step under ragged lengths; for the reverse direction of a bidirectional layer,
    /// step 0, where it ends), which is its final `h`: both directions concatenated, as `h_n`'s
    /// last `D` rows. The final states are returned as always.
    ///
    /// With time-segment checkpointing ([`checkpoint_every`](Self::checkpoint_every)) the last
    /// layer then never makes its `[T, B, H]` output sequence, nor its gradient: the tape
    /// holds the input, the `T/k` saved states and (in the reverse pass) one segment's
    /// activations — the memory a long sequence classified or regressed from its end needs.
    /// Without checkpointing the result is the same, and the memory that of the plain tape.
    /// Stacked layers below the last still make their sequences (the next layer reads them).
    ///
    /// # Example
    /// ```
    /// use eddy_nn::RecurrentConfig;
    /// use eddy_ops::prelude::*;
    ///
    /// let layer = RecurrentConfig::new(3, 8)
    ///     .checkpoint_sqrt()
    ///     .return_sequences(false)
    ///     .lstm::<f64>(&mut Rng::seed(0));
    /// let tape = Tape::new();
    /// let x = tape.input(ndarray::ArrayD::from_elem(vec![100, 2, 3], 0.1));
    /// let out = layer.forward(&x)?;
    /// assert_eq!(out.output.shape(), &[2, 8]); // [B, H], not [T, B, H]
    /// assert_eq!(out.output.value(), out.h_n().select(0, 0)?.value());
    /// let grads = out.output.sum_all()?.backward()?;
    /// assert_eq!(grads.var(&x).unwrap().shape(), &[100, 2, 3]);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn return_sequences(mut self, yes: bool) -> Self {
        self.return_sequences = yes;
        self
    }

    fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Builds the layer over any cell: `make(input_size, hidden_size, rng)` makes the cell of
    /// each layer and direction, in PyTorch's order (layer 0 forward, layer 0 reverse, layer 1 …).
    ///
    /// A cell is `Clone` (derive it; a copy shares the [`Param`]s): a layer with
    /// [`checkpoint_every`](Self::checkpoint_every) keeps a copy in the graph, to run segments
    /// again in the reverse pass.
    ///
    /// # Panics
    /// If a layer's weights cannot exist (sizes whose product overflows or exceeds memory);
    /// [`RecurrentConfig::try_build`] returns that as an error.
    pub fn build<F: Float, C: Cell<F> + Clone + 'static>(
        &self,
        mut make: impl FnMut(usize, usize, &mut Rng) -> C,
        rng: &mut Rng,
    ) -> Recurrent<F, C> {
        self.try_build(|i, h, r| Ok(make(i, h, r)), rng)
            .unwrap_or_else(|e| panic!("{e} (try_build returns this as an error)"))
    }

    /// As [`build`](Self::build), for a cell whose constructor can fail (a cell with a
    /// constraint on its sizes, such as [`RgLruCell`](crate::RgLruCell)'s `I = H`).
    ///
    /// # Errors
    /// The first error of `make`, with the layer and direction it arose in.
    pub fn try_build<F: Float, C: Cell<F> + Clone + 'static>(
        &self,
        mut make: impl FnMut(usize, usize, &mut Rng) -> Result<C>,
        rng: &mut Rng,
    ) -> Result<Recurrent<F, C>> {
        let mut cells = Vec::new();
        let mut input = self.input_size;
        for l in 0..self.num_layers {
            let mut out = 0;
            // Any cell's weights are a few gate blocks of `[H, I + H]`: sizes whose weights
            // cannot exist are an error here, not a panic (or an abort) inside the cell.
            let h = self.hidden_size;
            crate::init::check_size::<F>(
                &format!("recurrent layer {l} (input size {input}, hidden size {h})"),
                &[4, h.max(1), input.saturating_add(h).saturating_add(1)],
            )?;
            for dir in 0..self.directions() {
                let reverse = if dir == 1 { " reverse" } else { "" };
                let cell = make(input, self.hidden_size, rng)
                    .map_err(|e| e.context(format!("building layer {l}{reverse} (input size {input})")))?;
                out = cell.output_size();
                cells.push(cell);
            }
            input = out * self.directions();
        }
        Ok(Recurrent {
            cells,
            config: self.clone(),
            name: "recurrent".into(),
            training: true,
            segmented: segments::unroll::<F, C>,
            _f: PhantomData,
        })
    }

    /// `torch.nn.LSTM` with this configuration.
    pub fn lstm<F: Float>(&self, rng: &mut Rng) -> Lstm<F> {
        let (bias, proj) = (self.bias, self.proj_size);
        self.build(|i, h, rng| LstmCell::with_projection(i, h, proj, bias, rng), rng)
            .named("lstm")
    }

    /// `torch.nn.GRU` with this configuration.
    pub fn gru<F: Float>(&self, rng: &mut Rng) -> Gru<F> {
        let bias = self.bias;
        self.build(|i, h, rng| GruCell::new(i, h, bias, rng), rng)
            .named("gru")
    }

    /// `torch.nn.RNN` with this configuration and nonlinearity.
    pub fn rnn<F: Float>(&self, nonlinearity: Nonlinearity, rng: &mut Rng) -> Rnn<F> {
        let bias = self.bias;
        self.build(|i, h, rng| RnnCell::new(i, h, nonlinearity, bias, rng), rng)
            .named("rnn")
    }
}

/// The generic recurrent layer over a cell type `C`; see [`RecurrentConfig`] to build one.
#[derive(Debug, Clone)]
pub struct Recurrent<F: Float, C: Cell<F>> {
    /// The cells, `num_layers × directions`, in PyTorch's order.
    pub cells: Vec<C>,
    /// The configuration the layer was built from.
    pub config: RecurrentConfig,
    name: String,
    training: bool,
    /// `segments::unroll::<F, C>`, which needs `C: Clone + 'static` (known where the layer is
    /// built): a checkpointed direction keeps a copy of its cell in the graph.
    segmented: SegmentedUnroll<F, C>,
    _f: PhantomData<F>,
}

/// The signature of [`segments::unroll`].
type SegmentedUnroll<F, C> = fn(
    &C,
    &Var<F>,
    <C as Cell<F>>::State,
    &Direction<'_, F>,
    &str,
    (usize, bool),
) -> Result<(Option<Var<F>>, <C as Cell<F>>::State)>;

/// `torch.nn.LSTM`.
pub type Lstm<F = f32> = Recurrent<F, LstmCell<F>>;
/// `torch.nn.GRU`.
pub type Gru<F = f32> = Recurrent<F, GruCell<F>>;
/// `torch.nn.RNN`.
pub type Rnn<F = f32> = Recurrent<F, RnnCell<F>>;

/// What a recurrent layer returns: the output sequence (or its last step) and the final state.
#[derive(Debug, Clone)]
pub struct RecurrentOutput<F: Float> {
    /// `[T, B, D·H_out]` (or `[B, T, D·H_out]` when batch-first), zero past each length; with
    /// [`RecurrentConfig::return_sequences`]`(false)`, the last step only, `[B, D·H_out]`.
    pub output: Var<F>,
    /// The final state, one `[layers·D, B, size]` per state part (`h_n`, then `c_n` for an LSTM).
    pub states: Vec<Var<F>>,
}

impl<F: Float> RecurrentOutput<F> {
    /// The final hidden state `h_n`, `[layers·D, B, H_out]`.
    pub fn h_n(&self) -> &Var<F> {
        &self.states[0]
    }

    /// The final cell state `c_n` of an LSTM.
    pub fn c_n(&self) -> Option<&Var<F>> {
        self.states.get(1)
    }

    /// The final state's values, cut from the graph, to carry into the next chunk of a
    /// truncated-BPTT run (bind them to the next tape with [`Tape::constant`]).
    pub fn carry(&self) -> Vec<ArrayD<F>> {
        self.states.iter().map(|s| s.value().clone()).collect()
    }
}

impl<F: Float, C: Cell<F>> Recurrent<F, C> {
    /// Renames the layer (its name prefixes its errors: `lstm layer 1 step 17: …`).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of directions (1 or 2).
    pub fn directions(&self) -> usize {
        self.config.directions()
    }

    /// The output feature size, `directions × the cell's output size`.
    pub fn output_size(&self) -> usize {
        self.cells.last().map_or(0, |c| c.output_size()) * self.directions()
    }

    /// Checks what a forward pass needs of the configuration and the cells: at least one layer,
    /// one cell per layer and direction, and cells whose every state part has a size ≥ 1.
    fn check_config(&self) -> Result<()> {
        let name = self.name.as_str();
        let cfg = &self.config;
        if cfg.num_layers == 0 {
            return Err(Error::invalid(name, "num_layers must be at least 1, got 0"));
        }
        if cfg.checkpoint == Checkpoint::Every(0) {
            return Err(Error::invalid(
                name,
                "checkpoint_every(k) needs segments of k ≥ 1 steps, got k = 0",
            ));
        }
        let want = cfg.num_layers.checked_mul(self.directions());
        if want != Some(self.cells.len()) {
            return Err(Error::invalid(
                name,
                format!(
                    "{} layers × {} directions need {} cells, the layer has {}",
                    cfg.num_layers,
                    self.directions(),
                    want.map_or("too many".to_string(), |w| w.to_string()),
                    self.cells.len()
                ),
            ));
        }
        for (k, cell) in self.cells.iter().enumerate() {
            let sizes = cell.state_sizes();
            if sizes.is_empty() || sizes.contains(&0) {
                return Err(Error::invalid(
                    name,
                    format!(
                        "cell {k} has state sizes {sizes:?} (hidden_size {}): a cell needs at least one state part, each of size at least 1",
                        cfg.hidden_size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Runs the layer over `x` (`[T, B, I]`, or `[B, T, I]` when batch-first) from zero states.
    pub fn forward(&self, x: &Var<F>) -> Result<RecurrentOutput<F>> {
        self.forward_with(x, None, None, None)
    }

    /// Runs the layer with optional initial states (one `[layers·D, B, size]` per state part),
    /// per-sequence lengths (outputs are zero past each length, the final state is taken at
    /// each sequence's last valid step, and the reverse direction starts there), and an `rng`
    /// for dropout in training mode.
    ///
    /// # Errors
    /// Wrong input rank or feature size, a state of the wrong shape, a length of 0 or longer
    /// than the sequence, dropout in training without an `rng`: each names the layer and the
    /// expected and actual shapes. An error inside a step names the layer and time step.
    pub fn forward_with(
        &self,
        x: &Var<F>,
        initial: Option<&[Var<F>]>,
        lengths: Option<&[usize]>,
        rng: Option<&mut Rng>,
    ) -> Result<RecurrentOutput<F>> {
        self.forward_returning(x, initial, lengths, rng, self.config.return_sequences)
    }

    /// [`forward_with`](Self::forward_with), returning the output sequence or (not
    /// `return_sequences`) its last step, whatever the configuration says: a model's layer
    /// ([`RecurrentLayer`](crate::sequential::RecurrentLayer)) decides it.
    pub(crate) fn forward_returning(
        &self,
        x: &Var<F>,
        initial: Option<&[Var<F>]>,
        lengths: Option<&[usize]>,
        mut rng: Option<&mut Rng>,
        return_sequences: bool,
    ) -> Result<RecurrentOutput<F>> {
        let name = self.name.as_str();
        let cfg = &self.config;
        let (d, layers) = (self.directions(), cfg.num_layers);
        self.check_config()?;
        let layout = if cfg.batch_first { "[B, T, I]" } else { "[T, B, I]" };
        if x.ndim() != 3 || x.shape()[2] != cfg.input_size {
            return Err(Error::shape(
                name,
                &[x.shape(), &[cfg.input_size]],
                format!("expected input {layout} with I = {}", cfg.input_size),
            ));
        }
        let x = if cfg.batch_first {
            x.transpose(0, 1)?
        } else {
            x.clone()
        };
        let (steps, batch) = (x.shape()[0], x.shape()[1]);
        if steps == 0 {
            return Err(Error::shape(
                name,
                &[x.shape()],
                "the sequence has T = 0 time steps; a recurrent layer needs at least one",
            ));
        }
        let tape = x.tape().clone();
        let masks = match lengths {
            Some(l) => Some(step_masks(name, l, steps, batch)?),
            None => None,
        };
        // The same lengths as one `[T, B, 1]` mask, for a cell that runs as a scan.
        let valid = match lengths {
            Some(l) => Some(length_mask(name, l, steps, batch)?),
            None => None,
        };
        // Time-segment checkpointing only pays where a reverse pass will run.
        let segment_len = match tape.is_recording() {
            true => cfg.checkpoint.segment_len(steps),
            false => None,
        };
        let sizes = self.cells.first().map(|c| c.state_sizes()).unwrap_or_default();
        if let Some(init) = initial {
            check_initial(name, init, &sizes, layers * d, batch)?;
        }
        let needs_rng = self.training && (cfg.dropout > 0.0 || cfg.recurrent_dropout > 0.0);
        if needs_rng && rng.is_none() {
            return Err(Error::invalid(
                name,
                "dropout in training mode needs an rng (forward_with)",
            ));
        }

        let mut input = x;
        let mut finals: Vec<Vec<Var<F>>> = vec![Vec::new(); sizes.len()];
        for l in 0..layers {
            // The last layer of a many-to-one layer: its output sequence is not wanted.
            let keep_output = return_sequences || l + 1 < layers;
            let mut outs = Vec::with_capacity(d);
            for dir in 0..d {
                let k = l * d + dir;
                let cell = &self.cells[k];
                let state = match initial {
                    Some(init) => {
                        C::State::from_parts(init.iter().map(|s| s.select(0, k)).collect::<Result<_>>()?)?
                    }
                    None => cell.zero_state(&tape, batch)?,
                };
                let rec_mask = match rng.as_deref_mut() {
                    Some(r) if self.training && cfg.recurrent_dropout > 0.0 => {
                        Some(tape.constant(dropout_mask(&[batch, sizes[0]], cfg.recurrent_dropout, r)?))
                    }
                    _ => None,
                };
                let reverse = if dir == 1 { " reverse" } else { "" };
                let label = format!("{name} layer {l}{reverse}");
                let run = Direction {
                    reverse: dir == 1,
                    masks: masks.as_deref(),
                    valid: valid.as_ref(),
                    rec_mask: rec_mask.as_ref(),
                    fused: cfg.fused,
                };
                let (out, last) = match segment_len {
                    Some(len) => (self.segmented)(cell, &input, state, &run, &label, (len, keep_output))?,
                    None => {
                        let (out, last) = run_direction(cell, &input, state, &run, &label, 0)?;
                        (Some(out), last)
                    }
                };
                for (p, s) in last.parts().into_iter().enumerate() {
                    finals[p].push(s);
                }
                outs.extend(out.filter(|_| keep_output));
            }
            if !keep_output {
                break;
            }
            // One direction's output is the layer's as it is (a concat would copy `[T, B, H]`).
            input = match outs.len() {
                1 => outs.pop().expect("one direction"),
                _ => concat(&outs.iter().collect::<Vec<_>>(), 2)?,
            };
            if l + 1 < layers && self.training && cfg.dropout > 0.0 {
                let r = rng.as_deref_mut().expect("checked above");
                input = input.dropout(cfg.dropout, true, r)?;
            }
        }
        let output = if !return_sequences {
            // The last step of each direction is its final `h`, `[B, H]` each.
            let last = &finals[0][finals[0].len() - d..];
            match last {
                [one] => one.clone(),
                _ => concat(&last.iter().collect::<Vec<_>>(), 1)?,
            }
        } else if cfg.batch_first {
            input.transpose(0, 1)?
        } else {
            input
        };
        let states = finals
            .iter()
            .map(|parts| stack(&parts.iter().collect::<Vec<_>>(), 0))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecurrentOutput { output, states })
    }
}

/// How one direction of one layer runs: which way, the steps inside each sequence (per step and
/// as one `[T, B, 1]` mask), the recurrent dropout mask, and whether the cell's whole-sequence
/// paths may run. [`segments`] hands a segment of it to [`run_direction`] with the masks cut.
pub(crate) struct Direction<'a, F: Float> {
    pub(crate) reverse: bool,
    pub(crate) masks: Option<&'a [ArrayD<bool>]>,
    pub(crate) valid: Option<&'a ArrayD<bool>>,
    pub(crate) rec_mask: Option<&'a Var<F>>,
    pub(crate) fused: bool,
}

/// Runs `cell` over the input sequence `x` (`[T, B, I]`) in one direction: the projection of all
/// steps, then the scan (a cell linear in its state), the cell's own whole-sequence op (no mask
/// needed), or the loop of steps. Returns the outputs `[T, B, H]` (zero past each length) and
/// the final state. Errors name `label` and, inside a step, the step (counted from `first`).
pub(crate) fn run_direction<F: Float, C: Cell<F>>(
    cell: &C,
    x: &Var<F>,
    state: C::State,
    run: &Direction<'_, F>,
    label: &str,
    first: usize,
) -> Result<(Var<F>, C::State)> {
    let ctx = |t: usize| move |e: Error| e.context(format!("{label} step {}", first + t));
    let xp = cell.project(x).map_err(ctx(0))?;
    // A cell linear in its state runs as one scan (ragged lengths included); else the cell's own
    // op for the whole sequence when no step needs a mask.
    let fused = match (run.masks, run.rec_mask) {
        (_, Some(_)) => None,
        _ if !run.fused => None,
        (m, None) => crate::linear_scan::unroll(cell, &xp, &state, run.reverse, run.valid).or_else(|| {
            m.is_none()
                .then(|| cell.unroll(&xp, &state, run.reverse))
                .flatten()
        }),
    };
    match fused {
        Some(result) => result.map_err(|e| e.context(label.to_string())),
        None => unroll(cell, &xp, state, run.reverse, run.masks, run.rec_mask, ctx),
    }
}

/// Runs one cell over the projected sequence `xp` (`[T, B, P]`) in one direction; returns the
/// outputs `[T, B, H]` (zero past each length) and the final state.
fn unroll<F: Float, C: Cell<F>, E: FnOnce(Error) -> Error>(
    cell: &C,
    xp: &Var<F>,
    mut state: C::State,
    reverse: bool,
    masks: Option<&[ArrayD<bool>]>,
    rec_mask: Option<&Var<F>>,
    ctx: impl Fn(usize) -> E,
) -> Result<(Var<F>, C::State)> {
    let steps = xp.shape()[0];
    let xs = xp.unstack(0)?;
    let mut outputs: Vec<Option<Var<F>>> = vec![None; steps];
    let order: Box<dyn Iterator<Item = usize>> = if reverse {
        Box::new((0..steps).rev())
    } else {
        Box::new(0..steps)
    };
    for t in order {
        let run = || -> Result<(Var<F>, C::State)> {
            let x_t = &xs[t];
            let input_state = match rec_mask {
                Some(m) => {
                    let mut parts = state.parts();
                    parts[0] = (&parts[0] * m)?;
                    C::State::from_parts(parts)?
                }
                None => state.clone(),
            };
            let next = cell.step(x_t, &input_state)?;
            match masks {
                None => Ok((next.parts()[0].clone(), next)),
                Some(masks) => {
                    // Past a sequence's end: keep the old state, output zeros.
                    let m = &masks[t];
                    let kept: Vec<Var<F>> = next
                        .parts()
                        .iter()
                        .zip(state.parts())
                        .map(|(new, old)| where_(m, new, &old))
                        .collect::<Result<_>>()?;
                    let h = &kept[0];
                    let zeros = h.tape().constant(ArrayD::zeros(h.shape()));
                    Ok((where_(m, h, &zeros)?, C::State::from_parts(kept)?))
                }
            }
        };
        let (out, next) = run().map_err(ctx(t))?;
        outputs[t] = Some(out);
        state = next;
    }
    let outs: Vec<Var<F>> = outputs.into_iter().map(|o| o.expect("every step ran")).collect();
    let refs: Vec<&Var<F>> = outs.iter().collect();
    Ok((stack(&refs, 0)?, state))
}

/// One `[B, 1]` mask per time step: whether step `t` is inside each sequence.
fn step_masks(name: &str, lengths: &[usize], steps: usize, batch: usize) -> Result<Vec<ArrayD<bool>>> {
    if lengths.len() != batch {
        return Err(Error::shape(
            name,
            &[&[lengths.len()], &[batch]],
            format!(
                "need one length per sequence: got {} lengths for a batch of {batch}",
                lengths.len()
            ),
        ));
    }
    if let Some((b, &bad)) = lengths.iter().enumerate().find(|(_, &l)| l == 0 || l > steps) {
        return Err(Error::invalid(
            name,
            format!("length {bad} of sequence {b} is outside 1..={steps} (the sequence length)"),
        ));
    }
    Ok((0..steps)
        .map(|t| ArrayD::from_shape_fn(vec![batch, 1], |ix| t < lengths[ix[0]]))
        .collect())
}

fn check_initial<F: Float>(
    name: &str,
    init: &[Var<F>],
    sizes: &[usize],
    n: usize,
    batch: usize,
) -> Result<()> {
    if init.len() != sizes.len() {
        return Err(Error::invalid(
            name,
            format!("expected {} initial state parts, got {}", sizes.len(), init.len()),
        ));
    }
    for (p, (s, &size)) in init.iter().zip(sizes).enumerate() {
        let want = [n, batch, size];
        if s.shape() != want {
            return Err(Error::shape(
                name,
                &[&want, s.shape()],
                format!(
                    "initial state part {p} must be [layers·directions, B, size] = {want:?}, got {:?}",
                    s.shape()
                ),
            ));
        }
    }
    Ok(())
}

impl<F: Float, C: Cell<F>> Module<F> for Recurrent<F, C> {
    /// PyTorch's names: each cell parameter `name` becomes `name_l{layer}` (and `_reverse`).
    fn params(&self) -> Vec<(String, Param<F>)> {
        let d = self.directions();
        let mut out = Vec::new();
        for (k, cell) in self.cells.iter().enumerate() {
            let suffix = if k % d == 1 { "_reverse" } else { "" };
            for (n, p) in cell.params() {
                out.push((format!("{n}_l{}{suffix}", k / d), p));
            }
        }
        out
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
        for c in &mut self.cells {
            c.set_training(training);
        }
    }
}

/// Binds carried state values (from [`RecurrentOutput::carry`]) to a new tape as constants.
pub fn carried<F: Float>(tape: &Tape<F>, carry: &[ArrayD<F>]) -> Vec<Var<F>> {
    carry.iter().map(|a| tape.constant(a.clone())).collect()
}
