//! [`GradientSync`]: what [`Model::fit_distributed`](crate::Model::fit_distributed) needs from
//! the processes it trains with, so that eddy-nn knows nothing of MPI.
//!
//! Data-parallel training keeps one copy of the model per process (a *rank*). Each rank runs
//! the forward and backward pass on its shard of every global batch; the ranks then sum their
//! gradients, and every rank takes the same optimizer step with the same sum, so the copies stay
//! identical. The crate `eddy-dist` implements this trait over MPI; [`SingleProcess`] is the
//! one-rank implementation (no communication), which `fit_distributed` on one process uses and
//! the tests compare against.

use eddy_tape::{Float, Grads, Param, Result, Var};

/// The collective operations of data-parallel training, as seen from one rank.
///
/// Every rank of a job calls the same methods in the same order (they are collective: a rank
/// waits in a call until every rank has made it). An implementation must give every rank the
/// same bits from [`sum`](Self::sum) and [`backward`](Self::backward), so that decisions taken
/// on the results (skipping a step, early stopping) agree and the parameters stay identical.
pub trait GradientSync<F: Float> {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;

    /// How many ranks train together.
    fn world_size(&self) -> usize;

    /// Replaces `bytes` on every rank by rank 0's (the model's training state at the start).
    ///
    /// # Errors
    /// The transport's errors.
    fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<()>;

    /// Sums `values` element-wise over the ranks (losses and metric sums).
    ///
    /// # Errors
    /// The transport's errors.
    fn sum(&mut self, values: &mut [f64]) -> Result<()>;

    /// The step's gradient summed over the ranks.
    ///
    /// This rank's part is `scale ×` the parameter gradients of `loss` (when it has rows in this
    /// batch) plus `partial` (what earlier micro-batches of the step left). `params` are the
    /// model's parameters in [`Module::params`](crate::Module::params) order; the result holds
    /// a gradient for each of them that any rank's part holds. An implementation may start
    /// reducing gradients while the reverse pass of `loss` still runs
    /// ([`Var::backward_with_ready`]).
    ///
    /// # Errors
    /// The reverse pass's errors and the transport's.
    fn backward(
        &mut self,
        loss: Option<(&Var<F>, F)>,
        partial: Grads<F>,
        params: &[Param<F>],
    ) -> Result<Grads<F>>;
}

/// One rank on its own: [`GradientSync`] without communication.
///
/// `fit_distributed` with it trains as `fit` does: bit for bit without dropout and
/// micro-batches (with dropout the masks come from a stream derived per rank, and micro-batch
/// gradients are weighted before they are summed rather than after; see
/// [`Model::fit_distributed`](crate::Model::fit_distributed)).
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl<F: Float> GradientSync<F> for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn broadcast(&mut self, _bytes: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }

    fn sum(&mut self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn backward(
        &mut self,
        loss: Option<(&Var<F>, F)>,
        partial: Grads<F>,
        _params: &[Param<F>],
    ) -> Result<Grads<F>> {
        let Some((loss, scale)) = loss else {
            return Ok(partial);
        };
        let mut grads = loss.backward()?;
        grads.scale(scale);
        grads += &partial;
        Ok(grads)
    }
}
