//! Training on ragged sequence data: [`Model::fit_sequences`] takes a list of sequences of
//! different lengths, [`Model::fit_padded`] padded data with one length per sequence — Keras'
//! masking and PyTorch's packed sequences, without the packing.
//!
//! The lengths go to every layer of the model ([`Pass::lengths`](crate::sequential::Pass)): a
//! recurrent layer keeps each sequence's state past its end and outputs zeros there, so its final
//! state (and a last-step output, `return_sequences(false)`) is the one at step `length − 1`, and
//! a reverse direction starts at that step. With per-step targets the loss is a mean over the
//! valid steps only (a `[B, T, 1]` mask, as [`pad_sequences`]'s). Padding therefore never
//! reaches the loss, the gradients or the final state, whatever it holds.
//!
//! Each batch is cut to its longest sequence; [`Bucketing`] groups sequences of similar length
//! into batches (torchtext's `BucketIterator`), shuffled per epoch with the model's RNG, so a
//! run is reproducible and resumes bit for bit from a training checkpoint.
//!
//! ```
//! use eddy_nn::fit::FitOptions;
//! use eddy_nn::ragged::{Bucketing, RaggedOptions};
//! use eddy_nn::sequential::{dense, gru, Loss, Optim, Sequential};
//! use eddy_tape::Rng;
//! use ndarray::ArrayD;
//!
//! // Sequences of 2 to 9 steps; the target is the sum of each sequence's first feature.
//! let mut rng = Rng::seed(0);
//! let seqs: Vec<ArrayD<f32>> = (0..24)
//!     .map(|i| ArrayD::from_shape_fn(vec![2 + i % 8, 2], |ix| ((i + ix[0] * 3 + ix[1]) as f32 * 0.7).sin()))
//!     .collect();
//! let y: Vec<ArrayD<f32>> = seqs.iter().map(|s| ArrayD::from_elem(vec![1], s.slice(ndarray::s![.., 0]).sum())).collect();
//! let mut model = Sequential::new().add(gru(8)).add(dense(1)).build::<f32>(2, &mut rng)?;
//! model.compile(Optim::adam(0.02), Loss::Mse)?;
//! let options = FitOptions { epochs: 3, batch_size: 8, progress: false, ..FitOptions::default() };
//! let ragged = RaggedOptions { bucketing: Some(Bucketing::default()), ..RaggedOptions::default() };
//! let history = model.fit_sequences(&seqs, &y, options, ragged)?;
//! assert_eq!(history.loss.len(), 3);
//! let pred = model.predict_sequences(&seqs)?; // one [1] output per sequence
//! assert_eq!(pred[5].shape(), &[1]);
//! # Ok::<(), eddy_tape::Error>(())
//! ```

use crate::data::pad_sequences;
use crate::fit::{predict_batch, Evaluation, FitOptions, History};
use crate::sequential::Model;
use eddy_tape::{Error, Float, Result, Rng};
use ndarray::{s, ArrayD, ArrayView1, Axis};

/// How [`Model::fit_padded`] groups sequences of similar length into batches, so that a batch
/// (cut to its longest sequence) carries little padding.
///
/// Each epoch the training rows are shuffled (if [`FitOptions::shuffle`]), cut into pools of
/// `pool_batches` batches, each pool is sorted by length (ties keep the shuffled order) and cut
/// into batches, and the batches are shuffled: every row is in exactly one batch per epoch, and
/// there are as many batches as without bucketing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucketing {
    /// Batches per pool; `None` sorts the whole training set (the least padding, the least mixing
    /// of lengths within a batch from epoch to epoch).
    pub pool_batches: Option<usize>,
}

/// What [`Model::fit_padded`] and [`Model::fit_sequences`] take besides [`FitOptions`].
#[derive(Debug, Clone, Default)]
pub struct RaggedOptions<'a, F: Float = f32> {
    /// Ragged validation data: padded `x` `[M, T, F]`, its lengths, and `y` (as for `fit`). Use
    /// it instead of [`FitOptions::validation_data`] (which is equal-length data).
    /// [`FitOptions::validation_split`] works as for `fit` (the last rows, with their lengths).
    pub validation_data: Option<(&'a ArrayD<F>, &'a [usize], &'a ArrayD<F>)>,
    /// Group sequences of similar length into batches; `None` batches rows in shuffled order.
    pub bucketing: Option<Bucketing>,
}

/// The ragged part of a `fit` run, handed to `fit`'s loop.
pub(crate) struct RaggedFit<'a, F: Float> {
    pub(crate) lengths: &'a [usize],
    pub(crate) val: Option<(&'a ArrayD<F>, &'a [usize], &'a ArrayD<F>)>,
    pub(crate) bucketing: Option<Bucketing>,
}

/// The targets of [`Model::fit_sequences`] and [`Model::evaluate_sequences`]: one array for all
/// sequences (`[N, out]` for a model that returns the last step, padded `[N, T, out]` for one
/// that returns sequences), or one per sequence (`[out]`, or `[T_i, out]` per step).
///
/// Converts from `&ArrayD<F>`, `&[ArrayD<F>]` and `&Vec<ArrayD<F>>`.
#[derive(Debug, Clone, Copy)]
pub enum SeqTargets<'a, F: Float> {
    /// One array, rows on axis 0.
    Stacked(&'a ArrayD<F>),
    /// One array per sequence.
    PerSequence(&'a [ArrayD<F>]),
}

impl<'a, F: Float> From<&'a ArrayD<F>> for SeqTargets<'a, F> {
    fn from(y: &'a ArrayD<F>) -> Self {
        SeqTargets::Stacked(y)
    }
}

impl<'a, F: Float> From<&'a [ArrayD<F>]> for SeqTargets<'a, F> {
    fn from(y: &'a [ArrayD<F>]) -> Self {
        SeqTargets::PerSequence(y)
    }
}

impl<'a, F: Float> From<&'a Vec<ArrayD<F>>> for SeqTargets<'a, F> {
    fn from(y: &'a Vec<ArrayD<F>>) -> Self {
        SeqTargets::PerSequence(y)
    }
}

impl<F: Float> SeqTargets<'_, F> {
    /// The targets as one array: per-sequence `[out]` stacked to `[N, out]`, per-step
    /// `[T_i, out]` padded with zeros to `[N, T, out]` (`T` the longest of `lengths`).
    fn stacked(&self, op: &str, lengths: &[usize]) -> Result<ArrayD<F>> {
        let ys = match *self {
            SeqTargets::Stacked(y) => return Ok(y.clone()),
            SeqTargets::PerSequence(ys) => ys,
        };
        if ys.len() != lengths.len() {
            return Err(Error::invalid(
                op,
                format!("{} sequences but {} targets", lengths.len(), ys.len()),
            ));
        }
        let first = ys.first().ok_or_else(|| Error::invalid(op, "no targets"))?;
        let ndim = first.ndim();
        if let Some((i, bad)) = ys
            .iter()
            .enumerate()
            .find(|(_, y)| y.ndim() != ndim || y.shape().last() != first.shape().last())
        {
            return Err(Error::shape(
                op,
                &[first.shape(), bad.shape()],
                format!("target {i} must be [out] or [T_i, out] like the first"),
            ));
        }
        match ndim {
            1 => {
                let views: Vec<_> = ys.iter().map(|y| y.view().insert_axis(Axis(0))).collect();
                ndarray::concatenate(Axis(0), &views).map_err(|e| Error::invalid(op, e.to_string()))
            }
            2 => {
                if let Some((i, y)) = ys.iter().enumerate().find(|(i, y)| y.shape()[0] != lengths[*i]) {
                    return Err(Error::shape(
                        op,
                        &[y.shape()],
                        format!(
                            "target {i} has {} steps, its sequence {}",
                            y.shape()[0],
                            lengths[i]
                        ),
                    ));
                }
                Ok(pad_sequences(ys)?.x)
            }
            _ => Err(Error::shape(
                op,
                &[first.shape()],
                "each target must be [out] or [T_i, out]",
            )),
        }
    }
}

/// Checks one length per row of `x` (`[N, T, F]`), each in `1..=T`.
pub(crate) fn check_lengths<F: Float>(op: &str, lengths: &[usize], x: &ArrayD<F>) -> Result<()> {
    let (n, t) = (x.shape()[0], x.shape()[1]);
    if lengths.len() != n {
        return Err(Error::shape(
            op,
            &[x.shape(), &[lengths.len()]],
            format!(
                "need one length per sequence: {} lengths for {n} sequences",
                lengths.len()
            ),
        ));
    }
    if let Some((i, &l)) = lengths.iter().enumerate().find(|(_, &l)| l == 0 || l > t) {
        return Err(Error::invalid(
            op,
            format!("length {l} of sequence {i} is outside 1..={t} (the padded length T)"),
        ));
    }
    Ok(())
}

/// An epoch's batches of the rows `0..n`: shuffled (if asked) with `rng` and cut into
/// `batch_size` rows, or bucketed by length.
pub(crate) fn epoch_batches<F: Float>(
    rng: &mut Rng,
    n: usize,
    options: &FitOptions<'_, F>,
    bucketing: Option<(&[usize], Bucketing)>,
) -> Vec<Vec<usize>> {
    let bs = options.batch_size.max(1);
    let mut order: Vec<usize> = (0..n).collect();
    if options.shuffle {
        rng.shuffle(&mut order);
    }
    match bucketing {
        None => order.chunks(bs).map(<[usize]>::to_vec).collect(),
        Some((lengths, b)) => b.bucket(order, lengths, bs, options.shuffle, rng),
    }
}

impl Bucketing {
    /// One epoch's batches of the rows `0..lengths.len()`, as `fit` makes them: for a loop of
    /// your own, or to see how much padding a batch size leaves. `rng` draws the shuffles
    /// (`fit` uses the model's); a `batch_size` of 0 counts as 1.
    ///
    /// ```
    /// use eddy_nn::ragged::Bucketing;
    /// let lengths = [5, 1, 4, 2, 3, 6];
    /// let batches = Bucketing::default().batches(&lengths, 2, false, &mut eddy_tape::Rng::seed(0));
    /// assert_eq!(batches, vec![vec![1, 3], vec![4, 2], vec![0, 5]]); // lengths 1-2, 3-4, 5-6
    /// ```
    pub fn batches(
        &self,
        lengths: &[usize],
        batch_size: usize,
        shuffle: bool,
        rng: &mut Rng,
    ) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        if shuffle {
            rng.shuffle(&mut order);
        }
        self.bucket(order, lengths, batch_size.max(1), shuffle, rng)
    }

    /// Pools of `order`, each sorted by length and cut into batches; the batches shuffled.
    fn bucket(
        &self,
        mut order: Vec<usize>,
        lengths: &[usize],
        bs: usize,
        shuffle: bool,
        rng: &mut Rng,
    ) -> Vec<Vec<usize>> {
        let pool = self
            .pool_batches
            .map_or(order.len(), |p| p.saturating_mul(bs))
            .max(1);
        let mut batches = Vec::with_capacity(order.len().div_ceil(bs));
        for chunk in order.chunks_mut(pool) {
            chunk.sort_by_key(|&i| lengths[i]);
            batches.extend(chunk.chunks(bs).map(<[usize]>::to_vec));
        }
        if shuffle {
            rng.shuffle(&mut batches);
        }
        batches
    }
}

/// The rows of a batch, cut to its longest sequence when padded.
pub(crate) struct Batch<F: Float> {
    pub(crate) x: ArrayD<F>,
    pub(crate) y: ArrayD<F>,
    /// The rows' lengths (padded data).
    pub(crate) lengths: Option<Vec<usize>>,
    /// `[B, T, 1]`, 1 on valid steps: padded data with per-step targets.
    pub(crate) mask: Option<ArrayD<F>>,
}

impl<F: Float> Batch<F> {
    /// The rows `rows` of `x` and `y`; with `lengths`, cut to the longest of these rows (and `y`
    /// too, with a mask over its valid steps, if the model returns `sequences`).
    pub(crate) fn select(
        x: &ArrayD<F>,
        y: &ArrayD<F>,
        lengths: Option<&[usize]>,
        rows: &[usize],
        sequences: bool,
    ) -> Batch<F> {
        let Some(all) = lengths else {
            return Batch {
                x: x.select(Axis(0), rows),
                y: y.select(Axis(0), rows),
                lengths: None,
                mask: None,
            };
        };
        let lengths: Vec<usize> = rows.iter().map(|&r| all[r]).collect();
        let t = lengths.iter().copied().max().unwrap_or(0);
        let x = cut(x, rows, t);
        let (y, mask) = if sequences {
            (cut(y, rows, t), Some(step_mask(&lengths, t)))
        } else {
            (y.select(Axis(0), rows), None)
        };
        Batch {
            x,
            y,
            lengths: Some(lengths),
            mask,
        }
    }
}

/// What the loss of the rows `rows` is a mean over, and so the weight of its gradient when the
/// pieces of a batch (micro-batches, shards) are combined: the rows' count of valid steps with
/// per-step targets on padded data (the sum of [`Batch::select`]'s mask), else their count.
pub(crate) fn loss_weight(lengths: Option<&[usize]>, rows: &[usize], sequences: bool) -> f64 {
    match lengths {
        Some(l) if sequences => rows.iter().map(|&r| l[r]).sum::<usize>() as f64,
        _ => rows.len() as f64,
    }
}

/// The rows `rows` of `a` (`[N, T, …]`), their first `t` steps.
fn cut<F: Float>(a: &ArrayD<F>, rows: &[usize], t: usize) -> ArrayD<F> {
    let mut shape = a.shape().to_vec();
    shape[0] = rows.len();
    shape[1] = t;
    let mut out = ArrayD::zeros(shape);
    for (k, &r) in rows.iter().enumerate() {
        out.index_axis_mut(Axis(0), k)
            .assign(&a.index_axis(Axis(0), r).slice_axis(Axis(0), (..t).into()));
    }
    out
}

/// `[B, T, 1]`: 1 on the steps `t < lengths[b]`, 0 after.
fn step_mask<F: Float>(lengths: &[usize], t: usize) -> ArrayD<F> {
    ArrayD::from_shape_fn(vec![lengths.len(), t, 1], |ix| {
        if ix[1] < lengths[ix[0]] {
            F::one()
        } else {
            F::zero()
        }
    })
}

/// The index of the largest entry (the first of ties; NaN never wins).
pub(crate) fn arg_max<F: Float>(v: ArrayView1<'_, F>) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

const PREDICT_BATCH: usize = 256;

impl<F: Float> Model<F> {
    /// Trains on padded sequences: `x` `[N, T, F]` with `lengths[i]` valid steps in row `i`
    /// (anything past them is ignored), `y` `[N, out]` (the target of each sequence's last valid
    /// step) or `[N, T, out]` (per-step targets; the loss is over the valid steps only).
    /// Everything else is [`Model::fit`]'s, with [`RaggedOptions`] for ragged validation data
    /// and bucketing by length. Not for [`Model::fit_distributed`].
    ///
    /// # Errors
    /// As [`Model::fit`]; [`Error::Shape`] for a number of lengths other than `N`;
    /// [`Error::Invalid`] for a length of 0 or above `T`, or validation data given both in
    /// `options` and in `ragged`.
    pub fn fit_padded(
        &mut self,
        x: &ArrayD<F>,
        lengths: &[usize],
        y: &ArrayD<F>,
        options: FitOptions<'_, F>,
        ragged: RaggedOptions<'_, F>,
    ) -> Result<History> {
        if options.validation_data.is_some() && ragged.validation_data.is_some() {
            return Err(Error::invalid(
                "fit_padded",
                "validation data given twice (FitOptions::validation_data and RaggedOptions::validation_data)",
            ));
        }
        let plan = RaggedFit {
            lengths,
            val: ragged.validation_data,
            bucketing: ragged.bucketing,
        };
        self.fit_impl(x, y, options, None, Some(plan))
    }

    /// Trains on a list of sequences `[T_i, F]` of any lengths and their targets: see
    /// [`SeqTargets`] and [`Model::fit_padded`], which this is after padding.
    ///
    /// # Errors
    /// As [`Model::fit_padded`]; [`Error::Invalid`] for no sequences, an empty one, or as many
    /// targets as sequences; [`Error::Shape`] for sequences or targets of other shapes than the
    /// first's.
    pub fn fit_sequences<'y>(
        &mut self,
        x: &[ArrayD<F>],
        y: impl Into<SeqTargets<'y, F>>,
        options: FitOptions<'_, F>,
        ragged: RaggedOptions<'_, F>,
    ) -> Result<History>
    where
        F: 'y,
    {
        let p = pad_sequences(x).map_err(|e| e.context("fit_sequences"))?;
        let y = y.into().stacked("fit_sequences", &p.lengths)?;
        self.fit_padded(&p.x, &p.lengths, &y, options, ragged)
    }

    /// The compiled loss and metrics on padded sequences (as [`Model::fit_padded`] takes them),
    /// over the valid steps only, in evaluation mode.
    ///
    /// # Errors
    /// As [`Model::evaluate`]; the length errors of [`Model::fit_padded`].
    pub fn evaluate_padded(&self, x: &ArrayD<F>, lengths: &[usize], y: &ArrayD<F>) -> Result<Evaluation> {
        let op = "evaluate";
        let c = self
            .compiled
            .as_ref()
            .ok_or_else(|| Error::invalid(op, "the model is not compiled (call compile first)"))?;
        let n = self.check_data(op, x, Some(y))?;
        check_lengths(op, lengths, x)?;
        let sums = self.eval_sums(c.loss, x, y, Some(lengths), 0..n)?;
        Ok(self.evaluation(&sums))
    }

    /// [`Model::evaluate_padded`] on a list of sequences.
    ///
    /// # Errors
    /// As [`Model::evaluate_padded`] and [`Model::fit_sequences`].
    pub fn evaluate_sequences<'y>(
        &self,
        x: &[ArrayD<F>],
        y: impl Into<SeqTargets<'y, F>>,
    ) -> Result<Evaluation>
    where
        F: 'y,
    {
        let p = pad_sequences(x).map_err(|e| e.context("evaluate_sequences"))?;
        let y = y.into().stacked("evaluate_sequences", &p.lengths)?;
        self.evaluate_padded(&p.x, &p.lengths, &y)
    }

    /// The outputs for padded sequences, in evaluation mode: `[N, out]` (each at its sequence's
    /// last valid step) or `[N, T, out]`, zero past each length.
    ///
    /// # Errors
    /// As [`Model::predict`]; the length errors of [`Model::fit_padded`].
    pub fn predict_padded(&self, x: &ArrayD<F>, lengths: &[usize]) -> Result<ArrayD<F>> {
        let op = "predict";
        let n = self.check_data(op, x, None)?;
        check_lengths(op, lengths, x)?;
        let layers = self.eval_layers();
        let t = x.shape()[1];
        let mut outs = Vec::new();
        for start in (0..n).step_by(PREDICT_BATCH) {
            let rows: Vec<usize> = (start..(start + PREDICT_BATCH).min(n)).collect();
            let lb: Vec<usize> = rows.iter().map(|&r| lengths[r]).collect();
            let tb = lb.iter().copied().max().unwrap_or(0);
            let out = predict_batch(&layers, cut(x, &rows, tb), Some(&lb))?;
            if !self.returns_sequences() {
                outs.push(out);
                continue;
            }
            // Back to T steps, zero past each length.
            let mut full = ArrayD::zeros(vec![rows.len(), t, out.shape()[2]]);
            for (k, &l) in lb.iter().enumerate() {
                full.slice_mut(s![k, ..l, ..]).assign(&out.slice(s![k, ..l, ..]));
            }
            outs.push(full);
        }
        let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| Error::invalid(op, e.to_string()))
    }

    /// The outputs for a list of sequences, one per sequence: `[out]` (at its last step) or
    /// `[T_i, out]`.
    ///
    /// # Errors
    /// As [`Model::predict_padded`]; [`pad_sequences`]'s errors.
    pub fn predict_sequences(&self, x: &[ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        let p = pad_sequences(x).map_err(|e| e.context("predict_sequences"))?;
        let out = self.predict_padded(&p.x, &p.lengths)?;
        Ok(p.lengths
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let row = out.index_axis(Axis(0), i);
                if self.returns_sequences() {
                    row.slice_axis(Axis(0), (..l).into()).to_owned()
                } else {
                    row.to_owned()
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(batch_size: usize, shuffle: bool) -> FitOptions<'static, f32> {
        FitOptions {
            batch_size,
            shuffle,
            ..FitOptions::default()
        }
    }

    #[test]
    fn bucketing_keeps_every_row_once_and_groups_similar_lengths() {
        let lengths: Vec<usize> = (0..103).map(|i| 1 + (i * 37) % 50).collect();
        let mut rng = Rng::seed(3);
        for pool in [None, Some(2), Some(1)] {
            for epoch in 0..3 {
                let b = Bucketing { pool_batches: pool };
                let batches = epoch_batches(&mut rng, 103, &options(10, true), Some((&lengths[..], b)));
                assert_eq!(batches.len(), 11, "pool {pool:?} epoch {epoch}");
                let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
                seen.sort_unstable();
                assert_eq!(seen, (0..103).collect::<Vec<_>>());
                if pool.is_none() {
                    // One sorted pool: each batch spans a narrow band of the 50 lengths.
                    let widest = batches
                        .iter()
                        .map(|b| {
                            let l: Vec<usize> = b.iter().map(|&i| lengths[i]).collect();
                            l.iter().max().unwrap() - l.iter().min().unwrap()
                        })
                        .max()
                        .unwrap();
                    assert!(widest <= 5, "{widest}");
                }
            }
        }
        // Reproducible from the RNG's state, and different from epoch to epoch.
        let b = Some((&lengths[..], Bucketing::default()));
        let (mut r1, mut r2) = (Rng::seed(9), Rng::seed(9));
        let e1 = epoch_batches(&mut r1, 103, &options(10, true), b);
        assert_eq!(e1, epoch_batches(&mut r2, 103, &options(10, true), b));
        assert_ne!(e1, epoch_batches(&mut r1, 103, &options(10, true), b));
    }

    #[test]
    fn without_bucketing_batches_are_the_shuffled_order_in_chunks() {
        let (mut r1, mut r2) = (Rng::seed(4), Rng::seed(4));
        let batches = epoch_batches(&mut r1, 7, &options(3, true), None);
        let mut order: Vec<usize> = (0..7).collect();
        r2.shuffle(&mut order);
        assert_eq!(
            batches,
            vec![order[..3].to_vec(), order[3..6].to_vec(), order[6..].to_vec()]
        );
        let lengths: &[usize] = &[4, 1, 3, 2];
        let unsorted = epoch_batches(
            &mut r1,
            4,
            &options(2, false),
            Some((lengths, Bucketing::default())),
        );
        assert_eq!(unsorted, vec![vec![1, 3], vec![2, 0]]);
    }

    #[test]
    fn batches_are_cut_to_their_longest_sequence() {
        let x = ArrayD::from_shape_fn(vec![3, 5, 2], |ix| (ix[0] * 10 + ix[1]) as f32);
        let y = ArrayD::from_shape_fn(vec![3, 5, 1], |ix| ix[1] as f32);
        let b = Batch::select(&x, &y, Some(&[5, 2, 3]), &[2, 1], true);
        assert_eq!(b.x.shape(), &[2, 3, 2]);
        assert_eq!(b.x[[0, 2, 0]], 22.0);
        assert_eq!(b.y.shape(), &[2, 3, 1]);
        assert_eq!(b.lengths.as_deref(), Some(&[3, 2][..]));
        let m = b.mask.unwrap();
        assert_eq!(
            m.iter().copied().collect::<Vec<f32>>(),
            vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
        );
        let last = Batch::select(
            &x,
            &y.slice(s![.., 0, ..]).to_owned().into_dyn(),
            Some(&[5, 2, 3]),
            &[1],
            false,
        );
        assert_eq!(last.x.shape(), &[1, 2, 2]);
        assert!(last.mask.is_none());
    }
}
