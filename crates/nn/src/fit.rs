//! Training a [`Model`]: [`Model::fit`] with its [`FitOptions`], [`Model::evaluate`] and
//! [`Model::predict`].
//!
//! `fit` runs `epochs` more epochs. Each epoch shuffles the training rows with the model's own
//! seeded RNG, then for each mini-batch makes a fresh [`Tape`], runs the model, takes the loss's
//! gradients (summed over micro-batches and data-parallel shards if asked), clips them if asked,
//! and steps the optimizer; at the epoch's end it steps the schedule, evaluates the validation data, records
//! the [`History`], applies early stopping and writes a checkpoint if one is due. The RNG, the
//! optimizer, the schedule, the epoch count and early stopping's counters all live in the
//! model, so a training checkpoint ([`Model::save_checkpoint`]) resumes the run bit for bit,
//! early stopping included.

use crate::clip::{clip_grad_norm, GradAccumulator};
use crate::distributed::{rank_stream, shard_of};
use crate::parallel::map_shards;
use crate::ragged::{check_lengths, epoch_batches, loss_weight, Batch, RaggedFit};
use crate::sequential::{run_layers, Layer, Loss, Metric, Model};
use crate::sync::GradientSync;
use crate::Module;
use eddy_tape::{Error, Float, Grads, Result, Rng, Tape, TapeOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{ArrayD, Axis};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// The options of [`Model::fit`]. `Default`: 1 epoch, batches of 32, shuffled, no validation,
/// a progress bar when stdout is a terminal, an error on a non-finite loss.
#[derive(Debug, Clone)]
pub struct FitOptions<'a, F: Float = f32> {
    /// How many epochs to train (more), counting on from [`Model::epoch`].
    pub epochs: usize,
    /// Rows per optimizer step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Shuffle the training rows each epoch (with the model's RNG).
    pub shuffle: bool,
    /// Validation `(x, y)`; takes precedence over `validation_split`.
    pub validation_data: Option<(&'a ArrayD<F>, &'a ArrayD<F>)>,
    /// Hold out this last fraction of the rows (before shuffling, as Keras) for validation.
    pub validation_split: f64,
    /// Stop when the monitored loss stops improving.
    pub early_stopping: Option<EarlyStopping>,
    /// Write a training checkpoint every N epochs.
    pub checkpoint: Option<CheckpointEvery>,
    /// Show a progress bar (only drawn when stdout is a terminal).
    pub progress: bool,
    /// What to do when a batch's loss (or clipped gradient norm) is NaN or infinite.
    pub on_non_finite: OnNonFinite,
    /// Gradient accumulation: process each batch in micro-batches of this many rows (one tape
    /// each) and step with their size-weighted mean gradient, the full batch's gradient.
    pub micro_batch_size: Option<usize>,
    /// Data parallelism in this process (PyTorch's `DataParallel` on CPU threads): split each
    /// batch (each micro-batch, with `micro_batch_size`; the micro-batches still run one after
    /// another) into this many contiguous shards of near-equal size, run them in parallel on
    /// rayon's current pool, each on its own tape, and step with their gradients weighted by
    /// each shard's share of the batch (its rows, or its valid steps for a masked loss on
    /// padded data): the one-tape gradient up to summation order, and the same loss and metrics.
    /// A batch of fewer rows than `shards` runs on fewer. Default 1 (one tape per batch; the
    /// kernels use the threads). It pays when each step's products are too small for
    /// kernel-level threading to fill the cores (small hidden sizes, short batches); for large
    /// layers (hidden 1024 and up) one shard, with the products split across the threads, is
    /// usually faster. Each shard draws dropout masks from its own stream, derived each epoch
    /// from the model's RNG and the shard's index, so a run is reproducible for a given number
    /// of shards (but its masks differ from a run with another). Not supported with
    /// [`FitOptions::tbptt`] or [`Model::fit_distributed`] (an error): use one or the other.
    pub shards: usize,
    /// Clip the gradient to this joint L2 norm before each step.
    pub clip_grad_norm: Option<f64>,
    /// Truncated BPTT over chunks of this many time steps ([`FitOptions::tbptt`]).
    pub tbptt: Option<usize>,
    /// Run each batch on a tape with anomaly detection ([`Tape::with_anomaly_detection`]): a
    /// NaN or infinity stops training with an error naming the first op that produced it (and
    /// the epoch and batch), whatever `on_non_finite` says. Slower: every value is checked.
    pub detect_anomaly: bool,
}

impl<F: Float> Default for FitOptions<'_, F> {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            batch_size: 32,
            shuffle: true,
            validation_data: None,
            validation_split: 0.0,
            early_stopping: None,
            checkpoint: None,
            progress: true,
            on_non_finite: OnNonFinite::Error,
            micro_batch_size: None,
            shards: 1,
            clip_grad_norm: None,
            tbptt: None,
            detect_anomaly: false,
        }
    }
}

/// What [`Model::fit`] does on a non-finite loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnNonFinite {
    /// Stop with an error naming the epoch and batch.
    #[default]
    Error,
    /// Skip the optimizer step and go on (counted in [`History::skipped_steps`]).
    SkipStep,
}

/// Which value early stopping watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Monitor {
    /// The validation loss (needs validation data).
    #[default]
    ValLoss,
    /// The training loss.
    Loss,
}

/// Early stopping, as Keras's `EarlyStopping`: stop once the monitored loss has not improved by
/// more than `min_delta` for `patience` epochs. Its counters (best value, epochs without
/// improvement, best epoch and weights) carry on over `fit` calls and are saved in training
/// checkpoints, so a resumed run stops at the epoch the uninterrupted run would.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EarlyStopping {
    /// Which loss to watch: the validation loss (Keras' default `val_loss`) or the training loss.
    pub monitor: Monitor,
    /// Epochs without improvement to wait before stopping (Keras' `patience`).
    pub patience: usize,
    /// The least decrease that counts as an improvement (Keras' `min_delta`).
    pub min_delta: f64,
    /// At the end of `fit`, put back the parameters of the best epoch.
    pub restore_best_weights: bool,
}

/// Early stopping's counters between epochs. They live in the model, so that a later `fit` (or
/// a model restored from a training checkpoint, which saves them) carries the run on exactly
/// as one uninterrupted `fit` would; a run that stopped early drops them, so the next `fit`
/// starts a new one.
#[derive(Debug, Clone)]
pub(crate) struct EarlyTrack<F: Float> {
    /// The best monitored value so far.
    pub(crate) best: f64,
    /// Epochs since it last improved by more than `min_delta`.
    pub(crate) wait: usize,
    /// The epoch of the best value.
    pub(crate) best_epoch: Option<usize>,
    /// The parameters at the best epoch (with `restore_best_weights`), in `param_list` order.
    pub(crate) best_weights: Option<Vec<Arc<ArrayD<F>>>>,
}

impl<F: Float> Default for EarlyTrack<F> {
    fn default() -> Self {
        EarlyTrack {
            best: f64::INFINITY,
            wait: 0,
            best_epoch: None,
            best_weights: None,
        }
    }
}

/// Write a training checkpoint to `path` after every `every` epochs; `{epoch}` in the path is
/// replaced by the epoch number. Writes are atomic.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointEvery {
    /// Where to write; `{epoch}` is replaced by the epoch number.
    pub path: PathBuf,
    /// Write after every this many epochs.
    pub every: usize,
}

impl CheckpointEvery {
    /// The path for epoch `epoch`.
    pub fn path_for(&self, epoch: usize) -> PathBuf {
        PathBuf::from(self.path.to_string_lossy().replace("{epoch}", &epoch.to_string()))
    }
}

/// What [`Model::fit`] records, one entry per epoch run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    /// The epoch numbers (1-based, counting from the model's first epoch).
    pub epoch: Vec<usize>,
    /// The mean training loss over the epoch's batches (weighted by batch size).
    pub loss: Vec<f64>,
    /// The validation loss after each epoch (empty without validation data).
    pub val_loss: Vec<f64>,
    /// The metrics, by name: `"mae"` on training batches, `"val_mae"` on validation data.
    pub metrics: BTreeMap<String, Vec<f64>>,
    /// The learning rate used in each epoch.
    pub lr: Vec<f64>,
    /// Optimizer steps skipped for a non-finite loss ([`OnNonFinite::SkipStep`]).
    pub skipped_steps: usize,
    /// The epoch after which early stopping stopped the run.
    pub stopped_epoch: Option<usize>,
    /// The best epoch seen by early stopping.
    pub best_epoch: Option<usize>,
}

/// The loss and metrics of [`Model::evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The compiled loss over the data (its mean, as `fit` reports it).
    pub loss: f64,
    /// By name (`"mae"`, …).
    pub metrics: BTreeMap<String, f64>,
}

/// Sums for an epoch's mean loss and metrics.
#[derive(Debug, Default)]
pub(crate) struct Sums {
    pub(crate) loss: f64,
    pub(crate) rows: usize,
    pub(crate) abs: f64,
    pub(crate) sq: f64,
    pub(crate) elems: usize,
    /// Rows (or valid steps) whose arg-max output is the target's arg-max, and how many.
    pub(crate) hits: f64,
    pub(crate) lanes: usize,
}

impl Sums {
    pub(crate) fn add<F: Float>(&mut self, loss: f64, pred: &ArrayD<F>, y: &ArrayD<F>) {
        self.add_masked(loss, pred, y, None);
    }

    /// As [`Sums::add`], counting only the steps a `[B, T, 1]` mask keeps (a padded batch).
    pub(crate) fn add_masked<F: Float>(
        &mut self,
        loss: f64,
        pred: &ArrayD<F>,
        y: &ArrayD<F>,
        mask: Option<&ArrayD<F>>,
    ) {
        self.add_loss(loss, y.shape()[0]);
        self.add_outputs(pred, y, mask);
    }

    /// Adds the mean loss `loss` of `rows` rows.
    pub(crate) fn add_loss(&mut self, loss: f64, rows: usize) {
        self.loss += loss * rows as f64;
        self.rows += rows;
    }

    /// Adds the metric sums of the outputs `pred` against `y`, on the steps `mask` keeps.
    pub(crate) fn add_outputs<F: Float>(
        &mut self,
        pred: &ArrayD<F>,
        y: &ArrayD<F>,
        mask: Option<&ArrayD<F>>,
    ) {
        let last = Axis(y.ndim() - 1);
        let mut keep = mask.into_iter().flat_map(|m| m.iter().map(|&v| v == F::one()));
        for (p, t) in pred.lanes(last).into_iter().zip(y.lanes(last)) {
            if mask.is_some() && keep.next() != Some(true) {
                continue;
            }
            for (p, t) in p.iter().zip(t.iter()) {
                let d = p.as_f64() - t.as_f64();
                self.abs += d.abs();
                self.sq += d * d;
            }
            self.elems += t.len();
            self.hits += f64::from(u8::from(crate::ragged::arg_max(p) == crate::ragged::arg_max(t)));
            self.lanes += 1;
        }
    }

    fn loss(&self) -> f64 {
        self.loss / self.rows as f64
    }

    pub(crate) fn merge(&mut self, other: &Sums) {
        self.loss += other.loss;
        self.rows += other.rows;
        self.abs += other.abs;
        self.sq += other.sq;
        self.elems += other.elems;
        self.hits += other.hits;
        self.lanes += other.lanes;
    }

    /// The sums as `f64`s, to be summed over ranks ([`Sums::from_f64s`] takes them back).
    pub(crate) fn to_f64s(&self) -> [f64; 7] {
        [
            self.loss,
            self.rows as f64,
            self.abs,
            self.sq,
            self.elems as f64,
            self.hits,
            self.lanes as f64,
        ]
    }

    pub(crate) fn from_f64s(v: [f64; 7]) -> Sums {
        Sums {
            loss: v[0],
            rows: v[1] as usize,
            abs: v[2],
            sq: v[3],
            elems: v[4] as usize,
            hits: v[5],
            lanes: v[6] as usize,
        }
    }

    fn metric(&self, m: Metric) -> f64 {
        let n = self.elems as f64;
        match m {
            Metric::Mae => self.abs / n,
            Metric::Mse => self.sq / n,
            Metric::Rmse => (self.sq / n).sqrt(),
            Metric::Accuracy => self.hits / self.lanes as f64,
        }
    }
}

pub(crate) const EVAL_BATCH: usize = 256;

impl<F: Float> Model<F> {
    /// Checks `x` (`[N, T, F]`) and `y` against the model; returns `N`.
    pub(crate) fn check_data(&self, op: &str, x: &ArrayD<F>, y: Option<&ArrayD<F>>) -> Result<usize> {
        let f = self.input_features();
        if x.ndim() != 3 || x.shape()[2] != f {
            return Err(Error::shape(
                op,
                &[x.shape()],
                format!("x must be [N, T, F] with F = {f}"),
            ));
        }
        let (n, t) = (x.shape()[0], x.shape()[1]);
        if n == 0 || t == 0 {
            return Err(Error::invalid(
                op,
                format!("the dataset is empty (x has shape {:?})", x.shape()),
            ));
        }
        if let Some(y) = y {
            let out = self.output_features();
            let want: Vec<usize> = if self.returns_sequences() {
                vec![n, t, out]
            } else {
                vec![n, out]
            };
            if y.shape().first() != Some(&n) {
                return Err(Error::shape(
                    op,
                    &[x.shape(), y.shape()],
                    "x and y must have the same number of rows",
                ));
            }
            if y.shape() != want.as_slice() {
                return Err(Error::shape(
                    op,
                    &[y.shape(), &want],
                    "y does not fit the model's output (got, expected)",
                ));
            }
        }
        Ok(n)
    }

    /// Trains the model for `options.epochs` more epochs on `x` (`[N, T, F]`) and `y`
    /// (`[N, T, out]` if the model returns sequences, else `[N, out]`).
    ///
    /// Returns the [`History`] of the epochs run.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the model is not compiled, for an empty dataset, a batch size or
    /// micro-batch size of 0, a `validation_split` outside `[0, 1)` or one that leaves either
    /// part empty, early stopping on `val_loss` without validation data, `shards` of 0 or
    /// `shards` > 1 with `tbptt`, or (unless
    /// [`OnNonFinite::SkipStep`]) a non-finite loss, naming the epoch and batch;
    /// [`Error::Shape`] if `x` or `y` do not fit the model or each other; errors of the layers,
    /// the optimizer and the checkpoint writes.
    pub fn fit(&mut self, x: &ArrayD<F>, y: &ArrayD<F>, options: FitOptions<'_, F>) -> Result<History> {
        self.fit_impl(x, y, options, None, None)
    }

    /// `fit` on one rank of a data-parallel job; see [`Model::fit_distributed`]. Without `sync`
    /// it is plain `fit`; with `ragged`, `fit` on padded sequences ([`Model::fit_padded`]).
    pub(crate) fn fit_impl(
        &mut self,
        x: &ArrayD<F>,
        y: &ArrayD<F>,
        options: FitOptions<'_, F>,
        mut sync: Option<&mut dyn GradientSync<F>>,
        ragged: Option<RaggedFit<'_, F>>,
    ) -> Result<History> {
        let op = "fit";
        if self.compiled.is_none() {
            return Err(Error::invalid(
                op,
                "the model is not compiled (call compile first)",
            ));
        }
        let n = self.check_data(op, x, Some(y))?;
        let lengths = ragged.as_ref().map(|r| r.lengths);
        if let Some(l) = lengths {
            check_lengths(op, l, x)?;
        }
        if options.batch_size == 0 {
            return Err(Error::invalid(op, "batch_size must be at least 1"));
        }
        if options.micro_batch_size == Some(0) {
            return Err(Error::invalid(op, "micro_batch_size must be at least 1"));
        }
        crate::tbptt::check(&options)?;
        check_shards(&options, sync.is_some())?;
        if lengths.is_some() && options.tbptt.is_some() {
            return Err(Error::invalid(
                op,
                "tbptt(k) with ragged sequences (lengths) is not supported: a sequence that ends \
                 before a chunk would have no steps in it; pad the sequences to full length or \
                 train without tbptt",
            ));
        }
        if !(0.0..1.0).contains(&options.validation_split) {
            return Err(Error::invalid(
                op,
                format!(
                    "validation_split must be in [0, 1), got {}",
                    options.validation_split
                ),
            ));
        }
        if let Some(c) = &options.checkpoint {
            if c.every == 0 {
                return Err(Error::invalid(op, "checkpoint every must be at least 1"));
            }
        }
        // Training rows and validation data.
        let split_owned;
        let (n_train, val) = match (options.validation_data, ragged.as_ref().and_then(|r| r.val)) {
            (Some((vx, vy)), _) => {
                self.check_data("fit (validation_data)", vx, Some(vy))?;
                (n, Some((vx, vy, None)))
            }
            (None, Some((vx, vl, vy))) => {
                self.check_data("fit (validation_data)", vx, Some(vy))?;
                check_lengths("fit (validation_data)", vl, vx)?;
                (n, Some((vx, vy, Some(vl))))
            }
            (None, None) if options.validation_split > 0.0 => {
                let cut = (n as f64 * (1.0 - options.validation_split)).floor() as usize;
                if cut == 0 || cut == n {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "validation_split {} of {n} rows leaves an empty training or validation set",
                            options.validation_split
                        ),
                    ));
                }
                split_owned = (
                    x.slice_axis(Axis(0), (cut..).into()).to_owned(),
                    y.slice_axis(Axis(0), (cut..).into()).to_owned(),
                );
                (
                    cut,
                    Some((&split_owned.0, &split_owned.1, lengths.map(|l| &l[cut..]))),
                )
            }
            (None, None) => (n, None),
        };
        if let Some(es) = &options.early_stopping {
            if es.monitor == Monitor::ValLoss && val.is_none() {
                return Err(Error::invalid(
                    op,
                    "early stopping monitors val_loss but there is no validation data",
                ));
            }
        }

        let (rank, world) = match sync.as_deref_mut() {
            Some(s) => {
                self.sync_state(s)?;
                (s.rank(), s.world_size())
            }
            None => (0, 1),
        };
        let mut history = History::default();
        // Counters of a run that stopped early here: its best weights are restored below.
        let mut stopped_track: Option<EarlyTrack<F>> = None;
        let show = options.progress && rank == 0 && std::io::stdout().is_terminal();
        self.set_training(true);
        let batches = n_train.div_ceil(options.batch_size);

        for _ in 0..options.epochs {
            let epoch = self.epoch + 1;
            let bucketing = ragged.as_ref().and_then(|r| r.bucketing);
            let plan = epoch_batches(&mut self.rng, n_train, &options, lengths.zip(bucketing));
            let bar = progress_bar(show, epoch, batches);
            let lr = self.compiled.as_ref().expect("checked").optimizer.lr();
            let mut sums = Sums::default();
            let mut rank_rng = rank_stream(&self.rng, rank);
            let mut shard_rngs = shard_streams(&self.rng, options.shards);
            for (b, rows) in plan.iter().enumerate() {
                let stepped = match sync.as_deref_mut() {
                    None => self.train_batch(x, y, lengths, rows, &options, &mut sums, &mut shard_rngs),
                    Some(s) => {
                        let mine = shard_of(rows, rank, world);
                        let global = rows.len();
                        self.train_shard(x, y, mine, global, &options, &mut sums, s, &mut rank_rng)
                    }
                }
                .map_err(|e| {
                    bar.abandon();
                    e.context(format!("epoch {epoch} batch {}", b + 1))
                })?;
                if !stepped {
                    history.skipped_steps += 1;
                }
                bar.inc(1);
                if show {
                    bar.set_message(format!("loss {:.4}", sums.loss()));
                }
            }
            let c = self.compiled.as_mut().expect("checked");
            if let Some(s) = c.schedule.as_mut() {
                s.seek(s.position() + 1);
                c.optimizer.set_group_lrs(&s.lrs());
            }
            let metrics = c.metrics.clone();
            if let Some(s) = sync.as_deref_mut() {
                let mut v = sums.to_f64s();
                s.sum(&mut v)?;
                sums = Sums::from_f64s(v);
            }
            self.epoch += 1;
            history.epoch.push(epoch);
            history.loss.push(sums.loss());
            history.lr.push(lr);
            for m in &metrics {
                history
                    .metrics
                    .entry(m.name().to_string())
                    .or_default()
                    .push(sums.metric(*m));
            }
            let mut message = format!("loss {:.4}", sums.loss());
            if let Some((vx, vy, vl)) = val {
                let ev = match sync.as_deref_mut() {
                    None => match vl {
                        Some(l) => self.evaluate_padded(vx, l, vy)?,
                        None => self.evaluate(vx, vy)?,
                    },
                    Some(s) => self.evaluate_shared(vx, vy, s)?,
                };
                message += &format!(" val_loss {:.4}", ev.loss);
                history.val_loss.push(ev.loss);
                for (k, v) in ev.metrics {
                    history.metrics.entry(format!("val_{k}")).or_default().push(v);
                }
            }
            bar.finish_with_message(message);
            let mut stop = false;
            if let Some(es) = &options.early_stopping {
                let value = match es.monitor {
                    Monitor::ValLoss => *history.val_loss.last().expect("validated"),
                    Monitor::Loss => *history.loss.last().expect("pushed"),
                };
                let params = self.param_list();
                let track = self.early.get_or_insert_with(EarlyTrack::default);
                if value < track.best - es.min_delta {
                    track.best = value;
                    track.wait = 0;
                    track.best_epoch = Some(epoch);
                    if es.restore_best_weights {
                        track.best_weights = Some(params.iter().map(|p| p.value()).collect());
                    }
                } else {
                    track.wait += 1;
                    stop = track.wait >= es.patience;
                }
                history.best_epoch = track.best_epoch;
                if stop {
                    // A later fit starts a new run, as after Keras's EarlyStopping.
                    stopped_track = self.early.take();
                }
            }
            if let Some(c) = &options.checkpoint {
                if rank == 0 && self.epoch.checked_rem(c.every) == Some(0) {
                    let path = c.path_for(self.epoch);
                    // A NaN state never replaces the last good checkpoint.
                    if let Some(name) = self.non_finite_param() {
                        return Err(Error::invalid(
                            op,
                            format!(
                                "epoch {epoch}: parameter {name} holds NaN or infinity after the epoch's last step; \
                                 the checkpoint {} was not written (the last good one is kept)",
                                path.display()
                            ),
                        ));
                    }
                    self.save_checkpoint(path)?;
                }
            }
            if stop {
                history.stopped_epoch = Some(epoch);
                break;
            }
        }
        if options.early_stopping.is_some_and(|es| es.restore_best_weights) {
            let track = stopped_track.as_ref().or(self.early.as_ref());
            if let Some(w) = track.and_then(|t| t.best_weights.as_ref()) {
                for (p, v) in self.param_list().iter().zip(w) {
                    p.set(ArrayD::clone(v));
                }
            }
        }
        Ok(history)
    }

    /// One optimizer step on the rows `rows`; returns false if it was skipped. `shard_rngs`
    /// are the shards' dropout streams ([`shard_streams`]).
    #[allow(clippy::too_many_arguments)]
    fn train_batch(
        &mut self,
        x: &ArrayD<F>,
        y: &ArrayD<F>,
        lengths: Option<&[usize]>,
        rows: &[usize],
        options: &FitOptions<'_, F>,
        sums: &mut Sums,
        shard_rngs: &mut [Rng],
    ) -> Result<bool> {
        if let Some(k) = options.tbptt {
            return self.train_batch_tbptt(x, y, rows, k, options, sums);
        }
        let micro = options.micro_batch_size.unwrap_or(rows.len()).max(1);
        let mut acc = GradAccumulator::new();
        let mut single: Option<Grads<F>> = None;
        let mut batch_sums = Sums::default();
        let pieces = rows.len().div_ceil(micro);
        for piece in rows.chunks(micro) {
            let (v, grads) =
                self.piece_gradient(x, y, lengths, piece, options, shard_rngs, &mut batch_sums)?;
            if !v.is_finite() {
                if options.on_non_finite == OnNonFinite::SkipStep {
                    return Ok(false);
                }
                return Err(non_finite("the loss", v));
            }
            if pieces == 1 {
                single = Some(grads);
            } else {
                let weight = loss_weight(lengths, piece, self.returns_sequences());
                acc.add_weighted(&grads, weight)?;
            }
        }
        let grads = match single {
            Some(g) => g,
            None => acc.take_average().expect("at least one micro-batch"),
        };
        self.finish_step(grads, options, sums, &batch_sums)
    }

    /// The mean loss of the rows `piece` (a batch or micro-batch) and its gradient (none if the
    /// loss is not finite), adding the loss and metric sums to `sums`. With one shard, one tape
    /// drawing dropout from the model's RNG; else one tape per shard ([`map_shards`]), each
    /// drawing from its stream in `shard_rngs` and its loss scaled by its share of the piece's
    /// [`loss_weight`], so that the shards' losses and gradients sum to the piece's. The metric
    /// sums are taken in row order, as on one tape.
    #[allow(clippy::too_many_arguments)]
    fn piece_gradient(
        &mut self,
        x: &ArrayD<F>,
        y: &ArrayD<F>,
        lengths: Option<&[usize]>,
        piece: &[usize],
        options: &FitOptions<'_, F>,
        shard_rngs: &mut [Rng],
        sums: &mut Sums,
    ) -> Result<(f64, Grads<F>)> {
        let loss_fn = self.compiled.as_ref().expect("checked").loss;
        let (training, sequences) = (self.is_training(), self.returns_sequences());
        let total = loss_weight(lengths, piece, sequences);
        let layers = &self.layers;
        let rngs = if options.shards > 1 {
            shard_rngs
        } else {
            std::slice::from_mut(&mut self.rng)
        };
        let shards = map_shards(piece.len(), rngs, |r, rng| {
            let rows = &piece[r];
            let b = Batch::select(x, y, lengths, rows, sequences);
            let tape = batch_tape(options);
            let out = run_layers(layers, training, &tape.constant(b.x), b.lengths.as_deref(), rng)?;
            let loss = loss_fn.apply(&out, &tape.constant(b.y.clone()), b.mask.as_ref())?;
            let share = loss_weight(lengths, rows, sequences) / total;
            let v = loss.item()?.as_f64() * share;
            let grads = match (v.is_finite(), share == 1.0) {
                (false, _) => Grads::default(),
                (true, true) => loss.backward()?,
                (true, false) => loss.scale(F::of(share))?.backward()?,
            };
            Ok((v, out.value().clone(), b.y, b.mask, grads))
        })?;
        let mut shards = shards.into_iter();
        let (mut v, pred, yb, mask, mut grads) = shards.next().expect("at least one shard");
        sums.add_outputs(&pred, &yb, mask.as_ref());
        for (sv, pred, yb, mask, g) in shards {
            v += sv;
            sums.add_outputs(&pred, &yb, mask.as_ref());
            grads += &g;
        }
        sums.add_loss(v, piece.len());
        Ok((v, grads))
    }

    /// Clips `grads` if asked, steps the optimizer and adds the batch's sums to the epoch's;
    /// returns false if the step was skipped for a non-finite gradient norm.
    pub(crate) fn finish_step(
        &mut self,
        mut grads: Grads<F>,
        options: &FitOptions<'_, F>,
        sums: &mut Sums,
        batch_sums: &Sums,
    ) -> Result<bool> {
        if let Some(max) = options.clip_grad_norm {
            let norm = clip_grad_norm(&mut grads, max)?;
            if !norm.is_finite() {
                if options.on_non_finite == OnNonFinite::SkipStep {
                    return Ok(false);
                }
                return Err(non_finite("the gradient norm", norm));
            }
        } else if let Some(name) = self.non_finite_grad(&grads) {
            // A finite loss can still have a NaN gradient (sqrt at 0, an overflow): it must not
            // reach the parameters.
            if options.on_non_finite == OnNonFinite::SkipStep {
                return Ok(false);
            }
            return Err(Error::invalid(
                "fit",
                format!(
                    "the gradient of {name} holds NaN or infinity \
                     (set on_non_finite: OnNonFinite::SkipStep to skip such steps)"
                ),
            ));
        }
        self.compiled.as_mut().expect("checked").optimizer.step(&grads)?;
        sums.merge(batch_sums);
        Ok(true)
    }

    /// The model's outputs for `x` (`[N, T, F]`), in evaluation mode (no dropout), on no-grad
    /// tapes in batches of 256 rows: `[N, T, out]` or `[N, out]`.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x` does not fit the model; [`Error::Invalid`] if it is empty.
    pub fn predict(&self, x: &ArrayD<F>) -> Result<ArrayD<F>> {
        self.check_data("predict", x, None)?;
        let layers = self.eval_layers();
        let mut outs = Vec::new();
        for start in (0..x.shape()[0]).step_by(EVAL_BATCH) {
            outs.push(predict_rows(
                &layers,
                x,
                start,
                (start + EVAL_BATCH).min(x.shape()[0]),
            )?);
        }
        let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| Error::invalid("predict", e.to_string()))
    }

    /// The compiled loss and the metrics on `(x, y)`, in evaluation mode.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the model is not compiled or the data is empty; [`Error::Shape`]
    /// if `x` or `y` do not fit the model or each other.
    pub fn evaluate(&self, x: &ArrayD<F>, y: &ArrayD<F>) -> Result<Evaluation> {
        let c = self
            .compiled
            .as_ref()
            .ok_or_else(|| Error::invalid("evaluate", "the model is not compiled (call compile first)"))?;
        let n = self.check_data("evaluate", x, Some(y))?;
        let sums = self.eval_sums(c.loss, x, y, None, 0..n)?;
        Ok(self.evaluation(&sums))
    }

    /// The loss and metric sums of the rows `rows` of `(x, y)` (padded sequences of the given
    /// lengths, if any), in evaluation mode.
    pub(crate) fn eval_sums(
        &self,
        loss: Loss,
        x: &ArrayD<F>,
        y: &ArrayD<F>,
        lengths: Option<&[usize]>,
        rows: Range<usize>,
    ) -> Result<Sums> {
        let layers = self.eval_layers();
        let mut sums = Sums::default();
        for start in rows.clone().step_by(EVAL_BATCH) {
            let end = (start + EVAL_BATCH).min(rows.end);
            let idx: Vec<usize> = (start..end).collect();
            let b = Batch::select(x, y, lengths, &idx, self.returns_sequences());
            let pred = predict_batch(&layers, b.x, b.lengths.as_deref())?;
            let tape = Tape::<F>::no_grad();
            let value = loss
                .apply(
                    &tape.constant(pred.clone()),
                    &tape.constant(b.y.clone()),
                    b.mask.as_ref(),
                )?
                .item()?
                .as_f64();
            sums.add_masked(value, &pred, &b.y, b.mask.as_ref());
        }
        Ok(sums)
    }

    /// The [`Evaluation`] of the sums of all rows.
    pub(crate) fn evaluation(&self, sums: &Sums) -> Evaluation {
        let metrics = self.compiled.as_ref().map_or(&[][..], |c| &c.metrics[..]);
        Evaluation {
            loss: sums.loss(),
            metrics: metrics
                .iter()
                .map(|m| (m.name().to_string(), sums.metric(*m)))
                .collect(),
        }
    }
}

impl<F: Float> Model<F> {
    /// The name of the first parameter whose gradient in `grads` holds NaN or infinity.
    fn non_finite_grad(&self, grads: &Grads<F>) -> Option<String> {
        let finite = |a: &ArrayD<F>| a.iter().all(|v| v.is_finite());
        if grads.params().all(|(_, g)| finite(g)) {
            return None; // the common case, without building the names
        }
        self.params().into_iter().find_map(|(name, p)| {
            let g = grads.param(&p)?;
            (!g.iter().all(|v| v.is_finite())).then_some(name)
        })
    }

    /// The name of the first parameter that holds NaN or infinity.
    fn non_finite_param(&self) -> Option<String> {
        if self
            .param_list()
            .iter()
            .all(|p| p.value().iter().all(|v| v.is_finite()))
        {
            return None;
        }
        self.params()
            .into_iter()
            .find_map(|(name, p)| (!p.value().iter().all(|v| v.is_finite())).then_some(name))
    }
}

/// Checks [`FitOptions::shards`]: at least 1, and 1 with `tbptt` or `fit_distributed`.
fn check_shards<F: Float>(options: &FitOptions<'_, F>, distributed: bool) -> Result<()> {
    let conflict = match options.shards {
        0 => return Err(Error::invalid("fit", "shards must be at least 1, got 0")),
        1 => None,
        _ if options.tbptt.is_some() => Some("tbptt"),
        _ if distributed => Some("fit_distributed"),
        _ => None,
    };
    match conflict {
        Some(what) => Err(Error::invalid(
            "fit",
            format!(
                "shards = {} with {what} is not supported: use shards = 1 with {what}, \
                 or shards without {what}",
                options.shards
            ),
        )),
        None => Ok(()),
    }
}

/// The dropout streams of an epoch's shards with [`FitOptions::shards`] > 1, one per shard,
/// derived from the model's RNG (as [`rank_stream`] derives a rank's) without advancing it;
/// none with one shard, which draws from the model's RNG itself.
fn shard_streams(rng: &Rng, shards: usize) -> Vec<Rng> {
    if shards <= 1 {
        return Vec::new();
    }
    (0..shards).map(|i| rank_stream(rng, i)).collect()
}

/// A fresh tape for one (micro-)batch: recording, with anomaly detection if asked.
pub(crate) fn batch_tape<F: Float>(options: &FitOptions<'_, F>) -> Tape<F> {
    Tape::with_options(TapeOptions {
        record: true,
        detect_anomaly: options.detect_anomaly,
    })
}

/// The error of a non-finite loss or gradient norm.
pub(crate) fn non_finite(what: &str, v: f64) -> Error {
    Error::invalid(
        "fit",
        format!("{what} is {v} (set on_non_finite: OnNonFinite::SkipStep to skip such steps)"),
    )
}

fn predict_rows<F: Float>(layers: &[Layer<F>], x: &ArrayD<F>, start: usize, end: usize) -> Result<ArrayD<F>> {
    predict_batch(
        layers,
        x.slice_axis(Axis(0), (start..end).into()).to_owned(),
        None,
    )
}

/// The outputs of `layers` in evaluation mode for the batch `x` (of these lengths, if padded).
pub(crate) fn predict_batch<F: Float>(
    layers: &[Layer<F>],
    x: ArrayD<F>,
    lengths: Option<&[usize]>,
) -> Result<ArrayD<F>> {
    let tape = Tape::no_grad();
    // In evaluation mode nothing random is drawn; the RNG is a formality.
    let out = run_layers(layers, false, &tape.constant(x), lengths, &mut Rng::seed(0))?;
    Ok(out.value().clone())
}

fn progress_bar(show: bool, epoch: usize, batches: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stdout());
    let style =
        ProgressStyle::with_template("epoch {prefix:>4} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(epoch.to_string());
    bar
}
