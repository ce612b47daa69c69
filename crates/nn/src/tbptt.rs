//! Truncated backpropagation through time in [`Model::fit`]: [`FitOptions::tbptt`].
//!
//! With `tbptt(k)`, each batch's sequences are cut into chunks of `k` time steps (the last may
//! be shorter). The chunks run in order, each on a fresh tape, every recurrent layer starting
//! from the state the previous chunk left: a value, not a graph node, so no gradient flows
//! across a chunk boundary. This is a PyTorch loop that calls `h = h.detach()` between chunks,
//! and Keras's stateful RNN fed one chunk per batch. The state starts at zero with each batch.
//!
//! - **Sequence targets** (`[N, T, out]`, a model that returns sequences): each chunk's targets
//!   are cut with its inputs, and the optimizer steps once per chunk on that chunk's loss.
//! - **Last-step targets** (`[N, out]`): the target belongs to the end of the sequence, so the
//!   loss exists only on the final chunk. The earlier chunks only advance the state, on no-grad
//!   tapes (PyTorch's `with torch.no_grad()` warm-up), and the optimizer steps once per batch
//!   on the final chunk's loss, whose gradient reaches back at most `k` steps. Memory is one
//!   chunk's activations either way.
//!
//! Micro-batches, gradient clipping, non-finite handling, validation, early stopping,
//! checkpoints, schedules and [`Model::fit_distributed`] all work per chunk step as they do per
//! batch step. The History's `loss` is the mean of the chunk steps' losses (each weighted by
//! its rows, as batches are), its metrics are over every target element. Validation runs on
//! whole sequences, as `evaluate` does. With `k ≥ T` there is one chunk and `fit` trains
//! exactly as without `tbptt` (bit for bit).

use crate::clip::GradAccumulator;
use crate::fit::{non_finite, FitOptions, OnNonFinite, Sums};
use crate::sequential::Model;
use crate::stream::{run_chunk, Carry};
use crate::sync::GradientSync;
use crate::Module;
use eddy_tape::{Error, Float, Grads, Result, Rng, Tape, Var};
use ndarray::{ArrayD, Axis, Slice};
use std::ops::Range;

impl<F: Float> FitOptions<'_, F> {
    /// Truncated BPTT over chunks of `k` time steps; see the [module docs](crate::tbptt).
    /// `k = 0` is an error of `fit`.
    ///
    /// ```
    /// use eddy_nn::sequential::{dense, lstm, Loss, Optim, Sequential};
    /// use eddy_nn::FitOptions;
    /// use eddy_tape::Rng;
    /// use ndarray::Array3;
    ///
    /// let mut model = Sequential::new()
    ///     .add(lstm(8).return_sequences(true))
    ///     .add(dense(1))
    ///     .build::<f32>(1, &mut Rng::seed(0))?;
    /// model.compile(Optim::adam(0.01), Loss::Mse)?;
    /// let x = Array3::from_shape_fn((16, 100, 1), |(i, t, _)| ((i + t) as f32 * 0.1).sin()).into_dyn();
    /// let y = x.mapv(|v| 0.5 * v);
    /// let options = FitOptions { epochs: 2, batch_size: 8, progress: false, ..FitOptions::default() };
    /// let history = model.fit(&x, &y, options.tbptt(25))?; // 4 optimizer steps per batch
    /// assert_eq!(history.loss.len(), 2);
    /// # Ok::<(), eddy_tape::Error>(())
    /// ```
    pub fn tbptt(mut self, k: usize) -> Self {
        self.tbptt = Some(k);
        self
    }
}

/// Checks the `tbptt` option of `fit`.
pub(crate) fn check<F: Float>(options: &FitOptions<'_, F>) -> Result<()> {
    if options.tbptt == Some(0) {
        return Err(Error::invalid(
            "fit",
            "tbptt(k) needs chunks of at least k = 1 time step, got 0",
        ));
    }
    Ok(())
}

/// The time ranges of the chunks of `t` steps, `k` at a time.
fn chunks(t: usize, k: usize) -> Vec<Range<usize>> {
    (0..t).step_by(k).map(|s| s..(s + k).min(t)).collect()
}

/// The time steps `r` of `a` (`[B, T, ·]`).
fn steps<F: Float>(a: &ArrayD<F>, r: &Range<usize>) -> ArrayD<F> {
    a.slice_axis(Axis(1), Slice::from(r.clone())).to_owned()
}

/// The context of an error in chunk `c` of `n`.
fn chunk_context(c: usize, n: usize, r: &Range<usize>) -> impl Fn(Error) -> Error {
    let what = format!("chunk {} of {n} (steps {}..{})", c + 1, r.start, r.end);
    move |e: Error| e.context(what.clone())
}

/// One micro-batch piece of a batch under truncated BPTT: its rows' inputs and targets and
/// the layers' carried state.
struct Piece<F: Float> {
    x: ArrayD<F>,
    y: ArrayD<F>,
    rows: usize,
    carry: Carry<F>,
}

impl<F: Float> Model<F> {
    fn pieces(&self, x: &ArrayD<F>, y: &ArrayD<F>, rows: &[usize], micro: usize) -> Vec<Piece<F>> {
        rows.chunks(micro.max(1))
            .map(|p| Piece {
                x: x.select(Axis(0), p),
                y: y.select(Axis(0), p),
                rows: p.len(),
                carry: vec![None; self.layers.len()],
            })
            .collect()
    }

    /// Runs `piece` over the time steps `r` on `tape`, carrying its state on; returns the
    /// output and the chunk's targets.
    fn run_piece(
        &self,
        tape: &Tape<F>,
        piece: &mut Piece<F>,
        r: &Range<usize>,
        rng: &mut Rng,
    ) -> Result<(Var<F>, ArrayD<F>)> {
        let xc = tape.constant(steps(&piece.x, r));
        let out = run_chunk(&self.layers, self.is_training(), &xc, &mut piece.carry, rng)?;
        let yc = if self.returns_sequences() {
            steps(&piece.y, r)
        } else {
            piece.y.clone()
        };
        Ok((out, yc))
    }

    /// Runs `piece` over the time steps `r` on a tape of its own and applies the model's loss;
    /// adds the loss and the metrics to `chunk_sums`. Returns the loss and its value.
    fn piece_loss(
        &self,
        piece: &mut Piece<F>,
        r: &Range<usize>,
        rng: &mut Rng,
        chunk_sums: &mut Sums,
    ) -> Result<(Var<F>, f64)> {
        let loss_fn = self.compiled.as_ref().expect("checked").loss;
        let tape = Tape::new();
        let (out, yc) = self.run_piece(&tape, piece, r, rng)?;
        let loss = loss_fn.apply(&out, &tape.constant(yc.clone()), None)?;
        let v = loss.item()?.as_f64();
        chunk_sums.add(v, out.value(), &yc);
        Ok((loss, v))
    }

    /// Advances every piece's state over the steps `r` without gradients (the chunks before
    /// the last of a model with last-step targets).
    fn advance(&self, pieces: &mut [Piece<F>], r: &Range<usize>, rng: &mut Rng) -> Result<()> {
        for piece in pieces {
            self.run_piece(&Tape::no_grad(), piece, r, rng)?;
        }
        Ok(())
    }

    /// `fit`'s batch under `tbptt(k)`: one optimizer step per chunk (per batch for last-step
    /// targets); returns false if a step was skipped for a non-finite loss, which also ends the
    /// batch (the later chunks' state descends from it).
    pub(crate) fn train_batch_tbptt(
        &mut self,
        x: &ArrayD<F>,
        y: &ArrayD<F>,
        rows: &[usize],
        k: usize,
        options: &FitOptions<'_, F>,
        sums: &mut Sums,
    ) -> Result<bool> {
        // The model's RNG draws the dropout masks, as in `train_batch`.
        let mut rng = self.rng.clone();
        let result = self.tbptt_steps(x, y, rows, k, options, sums, &mut rng);
        self.rng = rng;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn tbptt_steps(
        &mut self,
        x: &ArrayD<F>,
        y: &ArrayD<F>,
        rows: &[usize],
        k: usize,
        options: &FitOptions<'_, F>,
        sums: &mut Sums,
        rng: &mut Rng,
    ) -> Result<bool> {
        let micro = options.micro_batch_size.unwrap_or(rows.len());
        let mut pieces = self.pieces(x, y, rows, micro);
        let ranges = chunks(x.shape()[1], k);
        for (c, r) in ranges.iter().enumerate() {
            let ctx = chunk_context(c, ranges.len(), r);
            if !self.returns_sequences() && c + 1 < ranges.len() {
                self.advance(&mut pieces, r, rng).map_err(&ctx)?;
                continue;
            }
            // As `train_batch`: each piece on its own tape, the gradients size-weighted.
            let mut acc = GradAccumulator::new();
            let mut single: Option<Grads<F>> = None;
            let mut chunk_sums = Sums::default();
            let n = pieces.len();
            for piece in &mut pieces {
                let (loss, v) = self.piece_loss(piece, r, rng, &mut chunk_sums).map_err(&ctx)?;
                if !v.is_finite() {
                    if options.on_non_finite == OnNonFinite::SkipStep {
                        return Ok(false);
                    }
                    return Err(ctx(non_finite("the loss", v)));
                }
                let grads = loss.backward()?;
                if n == 1 {
                    single = Some(grads);
                } else {
                    acc.add_weighted(&grads, piece.rows as f64)?;
                }
            }
            let grads = match single {
                Some(g) => g,
                None => acc.take_average().expect("at least one micro-batch"),
            };
            if !self
                .finish_step(grads, options, sums, &chunk_sums)
                .map_err(&ctx)?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `fit_distributed`'s batch under `tbptt(k)`: as [`train_shard`](Model::train_shard), once
    /// per chunk — every rank runs the same chunks (they depend on `T` only), so the ranks
    /// sum their losses and gradients in step.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn train_shard_tbptt(
        &mut self,
        x: &ArrayD<F>,
        y: &ArrayD<F>,
        rows: &[usize],
        global: usize,
        k: usize,
        options: &FitOptions<'_, F>,
        sums: &mut Sums,
        sync: &mut dyn GradientSync<F>,
        rng: &mut Rng,
    ) -> Result<bool> {
        let micro = options.micro_batch_size.unwrap_or(rows.len());
        let params = self.param_list();
        let mut pieces = self.pieces(x, y, rows, micro);
        let ranges = chunks(x.shape()[1], k);
        for (c, r) in ranges.iter().enumerate() {
            let ctx = chunk_context(c, ranges.len(), r);
            if !self.returns_sequences() && c + 1 < ranges.len() {
                self.advance(&mut pieces, r, rng).map_err(&ctx)?;
                continue;
            }
            let mut partial = Grads::default();
            let mut chunk_sums = Sums::default();
            let mut last: Option<(Var<F>, F)> = None;
            let n = pieces.len();
            for (p, piece) in pieces.iter_mut().enumerate() {
                let (loss, v) = self.piece_loss(piece, r, rng, &mut chunk_sums).map_err(&ctx)?;
                // This piece's share of the global batch's mean loss.
                let weight = F::of(piece.rows as f64 / global as f64);
                if p + 1 < n {
                    if v.is_finite() {
                        let mut g = loss.backward()?;
                        g.scale(weight);
                        partial += &g;
                    }
                } else {
                    last = Some((loss, weight));
                }
            }
            let mut total = [chunk_sums.loss];
            sync.sum(&mut total)?;
            let loss = total[0] / global as f64;
            if !loss.is_finite() {
                if options.on_non_finite == OnNonFinite::SkipStep {
                    return Ok(false);
                }
                return Err(ctx(non_finite("the loss (summed over the ranks)", loss)));
            }
            let grads = sync.backward(last.as_ref().map(|(l, w)| (l, *w)), partial, &params)?;
            if !self
                .finish_step(grads, options, sums, &chunk_sums)
                .map_err(&ctx)?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_cover_the_sequence_in_order() {
        assert_eq!(chunks(10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(chunks(10, 10), vec![0..10]);
        assert_eq!(chunks(3, 7), vec![0..3]);
        assert_eq!(chunks(1, 1), vec![0..1]);
    }
}
