//! [`Model::fit_distributed`]: `fit` on one rank of a data-parallel job, over any
//! [`GradientSync`] (MPI in the crate `eddy-dist`).

use crate::checkpoint::training_bytes;
use crate::fit::{non_finite, Evaluation, FitOptions, History, OnNonFinite, Sums};
use crate::parallel::shard_ranges;
use crate::sequential::{run_layers, Model};
use crate::sync::GradientSync;
use crate::Module;
use eddy_tape::{Float, Grads, Result, Rng, Var};
use ndarray::{ArrayD, Axis};

impl<F: Float> Model<F> {
    /// Trains like [`Model::fit`], as one rank of a data-parallel job: every rank calls it with
    /// the same model (built and compiled alike), the same data and the same options.
    ///
    /// - At the start every rank takes rank 0's training state (parameters, optimizer, schedule,
    ///   RNG, epoch): load a checkpoint on rank 0 (or on all) to resume, with the same or
    ///   another number of ranks.
    /// - Each epoch's shuffled order is the same on every rank (the model's RNG is); each global
    ///   batch of `batch_size` rows is split into contiguous shards, one per rank
    ///   ([`shard_ranges`]). Each rank runs its shard (in micro-batches if asked) and the ranks
    ///   sum their gradients, each weighted by its share of the batch, so the step's gradient
    ///   is the global batch's, as one process would compute it up to rounding. Every rank then
    ///   takes the same optimizer step.
    /// - The loss of each batch is summed over the ranks before the step, so a non-finite loss
    ///   on any rank stops (or skips the step on) every rank alike.
    /// - The epoch's loss and metrics and the validation loss (each rank evaluates its shard of
    ///   the validation rows) are summed over the ranks: the [`History`] is the same on every
    ///   rank and early stopping stops every rank at the same epoch.
    /// - Only rank 0 draws the progress bar and writes checkpoints.
    /// - Dropout masks come from a stream derived from the model's RNG and the rank, so ranks
    ///   draw different masks and the model's RNG (the shuffle) stays the same on every rank.
    ///
    /// With [`SingleProcess`](crate::sync::SingleProcess) this is `fit` (bit for bit without
    /// dropout and micro-batches).
    ///
    /// # Errors
    /// As [`Model::fit`]; the errors of `sync`; [`Error::File`](eddy_tape::Error::File) if rank
    /// 0's state does not fit this rank's model.
    ///
    /// # Example
    /// ```
    /// use eddy_nn::sequential::{dense, lstm, Loss, Optim, Sequential};
    /// use eddy_nn::sync::SingleProcess;
    /// use eddy_nn::FitOptions;
    /// use eddy_tape::Rng;
    /// use ndarray::Array3;
    ///
    /// let build = || -> eddy_tape::Result<_> {
    ///     let mut model = Sequential::new().add(lstm(4)).add(dense(1)).build::<f64>(2, &mut Rng::seed(1))?;
    ///     model.compile(Optim::adam(0.01), Loss::Mse)?;
    ///     Ok(model)
    /// };
    /// let x = Array3::from_shape_fn((12, 5, 2), |(i, t, f)| ((i + t + f) as f64).sin()).into_dyn();
    /// let y = x.slice(ndarray::s![.., 4, ..1]).to_owned().into_dyn(); // [12, 1]
    /// let options = || FitOptions { epochs: 2, batch_size: 4, progress: false, ..FitOptions::default() };
    /// let (mut a, mut b) = (build()?, build()?);
    /// let ha = a.fit(&x, &y, options())?;
    /// let hb = b.fit_distributed(&x, &y, options(), &mut SingleProcess)?;
    /// assert_eq!(ha.loss, hb.loss);
    /// # Ok::<(), eddy_tape::Error>(())
    /// ```
    pub fn fit_distributed(
        &mut self,
        x: &ArrayD<F>,
        y: &ArrayD<F>,
        options: FitOptions<'_, F>,
        sync: &mut dyn GradientSync<F>,
    ) -> Result<History> {
        self.fit_impl(x, y, options, Some(sync), None)
    }

    /// Makes this rank's training state rank 0's.
    pub(crate) fn sync_state(&mut self, sync: &mut dyn GradientSync<F>) -> Result<()> {
        if sync.world_size() == 1 {
            return Ok(());
        }
        let mut bytes = if sync.rank() == 0 {
            training_bytes(self, &self.training_state()?)?
        } else {
            Vec::new()
        };
        sync.broadcast(&mut bytes)?;
        if sync.rank() != 0 {
            self.load_checkpoint_bytes(&bytes, "rank 0's training state")?;
        }
        Ok(())
    }

    /// One optimizer step of a global batch of `global` rows, of which this rank holds `rows`;
    /// returns false if it was skipped.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn train_shard(
        &mut self,
        x: &ArrayD<F>,
        y: &ArrayD<F>,
        rows: &[usize],
        global: usize,
        options: &FitOptions<'_, F>,
        sums: &mut Sums,
        sync: &mut dyn GradientSync<F>,
        rng: &mut Rng,
    ) -> Result<bool> {
        if let Some(k) = options.tbptt {
            return self.train_shard_tbptt(x, y, rows, global, k, options, sums, sync, rng);
        }
        let micro = options.micro_batch_size.unwrap_or(rows.len()).max(1);
        let loss_fn = self.compiled.as_ref().expect("checked").loss;
        let params = self.param_list();
        let training = self.is_training();
        let pieces: Vec<&[usize]> = rows.chunks(micro).collect();
        let mut partial = Grads::default();
        let mut batch_sums = Sums::default();
        let mut last: Option<(Var<F>, F)> = None;
        for (k, piece) in pieces.iter().enumerate() {
            let xb = x.select(Axis(0), piece);
            let yb = y.select(Axis(0), piece);
            let tape = crate::fit::batch_tape(options);
            let out = run_layers(&self.layers, training, &tape.constant(xb), None, rng)?;
            let loss = loss_fn.apply(&out, &tape.constant(yb.clone()), None)?;
            let v = loss.item()?.as_f64();
            batch_sums.add(v, out.value(), &yb);
            // This piece's share of the global batch's mean loss.
            let weight = F::of(piece.len() as f64 / global as f64);
            if k + 1 < pieces.len() {
                if v.is_finite() {
                    let mut g = loss.backward()?;
                    g.scale(weight);
                    partial += &g;
                }
            } else {
                last = Some((loss, weight));
            }
        }
        // The global batch's loss: non-finite on any rank makes it non-finite on every rank.
        let mut total = [batch_sums.loss];
        sync.sum(&mut total)?;
        let loss = total[0] / global as f64;
        if !loss.is_finite() {
            if options.on_non_finite == OnNonFinite::SkipStep {
                return Ok(false);
            }
            return Err(non_finite("the loss (summed over the ranks)", loss));
        }
        let grads = sync.backward(last.as_ref().map(|(l, w)| (l, *w)), partial, &params)?;
        self.finish_step(grads, options, sums, &batch_sums)
    }

    /// The compiled loss and metrics on `(x, y)`, each rank evaluating its shard of the rows and
    /// the sums taken over the ranks.
    pub(crate) fn evaluate_shared(
        &self,
        x: &ArrayD<F>,
        y: &ArrayD<F>,
        sync: &mut dyn GradientSync<F>,
    ) -> Result<Evaluation> {
        let loss = self.compiled.as_ref().expect("checked by fit").loss;
        let n = x.shape()[0];
        let sums = match shard_ranges(n, sync.world_size()).get(sync.rank()) {
            Some(r) => self.eval_sums(loss, x, y, None, r.clone())?,
            None => Sums::default(),
        };
        let mut v = sums.to_f64s();
        sync.sum(&mut v)?;
        Ok(self.evaluation(&Sums::from_f64s(v)))
    }
}

/// This rank's contiguous shard of a global batch (empty if the batch has fewer rows than
/// there are ranks and this rank is past them).
pub(crate) fn shard_of(rows: &[usize], rank: usize, world: usize) -> &[usize] {
    shard_ranges(rows.len(), world)
        .get(rank)
        .map_or(&[][..], |r| &rows[r.clone()])
}

/// The dropout stream of `rank` for an epoch: derived from the model's RNG without advancing it.
pub(crate) fn rank_stream(rng: &Rng, rank: usize) -> Rng {
    let s = rng.state();
    let mix = s[0] ^ s[1].rotate_left(13) ^ s[2].rotate_left(29) ^ s[3].rotate_left(43);
    Rng::seed(mix ^ (rank as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_a_batch_and_leave_extra_ranks_empty() {
        let rows = [5, 3, 8, 1, 9];
        assert_eq!(shard_of(&rows, 0, 2), &[5, 3, 8]);
        assert_eq!(shard_of(&rows, 1, 2), &[1, 9]);
        let two = [4, 2];
        assert_eq!(shard_of(&two, 3, 4), &[] as &[usize]);
    }

    #[test]
    fn rank_streams_differ_and_leave_the_model_rng_alone() {
        let rng = Rng::seed(7);
        let (mut a, mut b) = (rank_stream(&rng, 0), rank_stream(&rng, 1));
        assert_ne!(a.next_u64(), b.next_u64());
        assert_eq!(rng, Rng::seed(7));
    }
}
