//! [`DataParallel`]: eddy-nn's [`GradientSync`] over MPI, after PyTorch DDP.

use crate::bucket::{Bucket, Phase};
use crate::layout::{BucketOptions, Layout};
use crate::{abort_job, Dist};
use eddy_nn::GradientSync;
use eddy_tape::{Float, Grads, Param, ParamId, Result, Var};
use mpi::collective::{CommunicatorCollectives, Root};
use mpi::topology::{Communicator, SimpleCommunicator};
use ndarray::ArrayD;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What the gradient reductions cost, summed over the steps since the last
/// [`DataParallel::take_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommStats {
    /// Steps (calls of `backward`).
    pub steps: usize,
    /// Gradient bytes this rank contributed per step (the model's parameter bytes).
    pub bytes_per_step: usize,
    /// Buckets per step.
    pub buckets: usize,
    /// Time from the first bucket's start to the last bucket's end, summed over steps: how long
    /// reductions were in flight.
    pub in_flight: Duration,
    /// Time spent waiting for reductions after the backward pass ended: the part of
    /// `in_flight` not hidden behind the backward pass.
    pub waiting: Duration,
}

/// Data-parallel training over MPI: rank 0's state at the start, gradients summed over the
/// ranks in buckets while the backward pass runs, every rank taking the same step.
///
/// Made by [`Dist::data_parallel`] and handed to
/// [`Model::fit_distributed`](eddy_nn::Model::fit_distributed). It works on its own
/// duplicates of the world communicator, so a program's own MPI calls do not interfere.
///
/// - **Buckets** ([`BucketOptions`]): the parameters in reverse model order, packed into
///   contiguous buckets (1 MiB first, then 25 MiB by default).
/// - **Overlap**: the reverse pass reports each parameter's gradient as soon as it is final
///   ([`Var::backward_with_ready`]); the gradient is scaled and written into its bucket, and a
///   full bucket starts its reduction at once (buckets start in order). Each report also tests
///   the reductions in flight, which is what moves MPI's nonblocking collectives along.
/// - **Fixed order**: each bucket is summed in rank order (see the `bucket` module), so
///   every rank holds the same bits and the parameters stay bit-identical.
/// - **Failure**: a reverse pass that fails on one rank cannot leave the others waiting in a
///   collective: it prints the error with the rank and aborts the job (`MPI_Abort`).
pub struct DataParallel<F: Float> {
    exchange: SimpleCommunicator,
    gather: SimpleCommunicator,
    rank: usize,
    ranks: usize,
    options: BucketOptions,
    /// The parameters (id and length) the layout was made for.
    key: Vec<(ParamId, usize)>,
    index: HashMap<ParamId, usize>,
    layout: Layout,
    buckets: Vec<Bucket<F>>,
    /// Buckets started this step (they start in order).
    started: usize,
    first_start: Option<Instant>,
    stats: CommStats,
}

impl Dist {
    /// A [`DataParallel`] trainer over this job's ranks, with gradient buckets of `options`.
    pub fn data_parallel<F: Float>(&self, options: BucketOptions) -> DataParallel<F> {
        DataParallel::over(&self.world, options)
    }
}

impl<F: Float> DataParallel<F> {
    /// A [`DataParallel`] trainer over the ranks of `comm` (for example a group split from the
    /// world with `split_by_color`, to train on some of the job's ranks). Every rank of `comm`
    /// must make one, in the same order as its other communicators; it works on duplicates of
    /// `comm`.
    pub fn over(comm: &SimpleCommunicator, options: BucketOptions) -> DataParallel<F> {
        DataParallel {
            exchange: comm.duplicate(),
            gather: comm.duplicate(),
            rank: comm.rank() as usize,
            ranks: comm.size() as usize,
            options,
            key: Vec::new(),
            index: HashMap::new(),
            layout: Layout::new(&[], 1, options),
            buckets: Vec::new(),
            started: 0,
            first_start: None,
            stats: CommStats::default(),
        }
    }

    /// The bucket layout in use (after the first step).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The communication statistics since the last call, resetting them.
    pub fn take_stats(&mut self) -> CommStats {
        let s = self.stats;
        self.stats = CommStats {
            bytes_per_step: s.bytes_per_step,
            buckets: s.buckets,
            ..CommStats::default()
        };
        s
    }

    /// Lays out the buckets for `params` (again, if they changed) and readies them for a step.
    fn prepare(&mut self, params: &[Param<F>]) {
        let key: Vec<(ParamId, usize)> = params.iter().map(|p| (p.id(), p.len())).collect();
        if key != self.key {
            let sizes: Vec<usize> = key.iter().map(|&(_, n)| n).collect();
            let elem = std::mem::size_of::<F>();
            self.layout = Layout::new(&sizes, elem, self.options);
            self.buckets = self
                .layout
                .lens
                .iter()
                .map(|&len| Bucket::new(len, self.ranks))
                .collect();
            self.index = key.iter().enumerate().map(|(i, &(id, _))| (id, i)).collect();
            self.stats.bytes_per_step = sizes.iter().sum::<usize>() * elem;
            self.stats.buckets = self.buckets.len();
            self.key = key;
        }
        for (b, members) in self.buckets.iter_mut().zip(&self.layout.members) {
            b.missing = members.len();
            b.phase = Phase::Filling;
        }
        self.started = 0;
        self.first_start = None;
    }

    /// Writes parameter `i`'s part, `scale × grad + partial`, into its bucket.
    fn deliver(&mut self, i: usize, grad: Option<(&ArrayD<F>, F)>, partial: Option<&ArrayD<F>>) {
        let slot = &self.layout.slots[i];
        let bucket = &mut self.buckets[slot.bucket];
        let dst = &mut bucket.flat[slot.range.clone()];
        match (grad, partial) {
            (Some((g, s)), Some(p)) => {
                for ((d, g), p) in dst.iter_mut().zip(g.iter()).zip(p.iter()) {
                    *d = *g * s + *p;
                }
            }
            (Some((g, s)), None) => {
                for (d, g) in dst.iter_mut().zip(g.iter()) {
                    *d = *g * s;
                }
            }
            (None, Some(p)) => {
                for (d, p) in dst.iter_mut().zip(p.iter()) {
                    *d = *p;
                }
            }
            (None, None) => dst.fill(F::zero()),
        }
        bucket.missing -= 1;
    }

    /// Starts every full bucket whose predecessors have started, then moves the reductions in
    /// flight along (waiting for all of them with `block`).
    fn pump(&mut self, block: bool) {
        while self.started < self.buckets.len() && self.buckets[self.started].missing == 0 {
            self.first_start.get_or_insert_with(Instant::now);
            self.buckets[self.started].start(&self.exchange);
            self.started += 1;
        }
        let mut may_gather = true;
        for b in &mut self.buckets[..self.started] {
            let phase = b.advance(&self.gather, block, may_gather);
            may_gather = matches!(phase, Phase::Gathering | Phase::Done);
            if !block && !may_gather {
                break;
            }
        }
    }

    fn check_len(&self, i: usize, got: usize, params: &[Param<F>]) {
        let want = self.layout.slots[i].range.len();
        if got != want {
            abort_job(
                self.rank,
                self.ranks,
                &format!(
                    "DataParallel: the gradient of parameter {:?} has {got} elements, its bucket slot {want}",
                    params[i].name()
                ),
            );
        }
    }
}

impl<F: Float> GradientSync<F> for DataParallel<F> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.ranks
    }

    fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<()> {
        let root = self.exchange.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
        Ok(())
    }

    fn sum(&mut self, values: &mut [f64]) -> Result<()> {
        if self.ranks == 1 || values.is_empty() {
            return Ok(());
        }
        let n = values.len();
        let mut all = vec![0.0f64; n * self.ranks];
        self.exchange.all_gather_into(&values[..], &mut all[..]);
        values.copy_from_slice(&all[..n]);
        for row in all[n..].chunks_exact(n) {
            for (v, r) in values.iter_mut().zip(row) {
                *v += r;
            }
        }
        Ok(())
    }

    fn backward(
        &mut self,
        loss: Option<(&Var<F>, F)>,
        partial: Grads<F>,
        params: &[Param<F>],
    ) -> Result<Grads<F>> {
        self.prepare(params);
        let mut delivered = vec![false; params.len()];
        if let Some((loss, scale)) = loss {
            let result = loss.backward_with_ready(|id, g| {
                let Some(&i) = self.index.get(&id) else {
                    return;
                };
                self.check_len(i, g.len(), params);
                self.deliver(i, Some((g, scale)), partial.param(&params[i]));
                delivered[i] = true;
                self.pump(false);
            });
            if let Err(e) = result {
                abort_job(self.rank, self.ranks, &format!("backward: {e}"));
            }
        }
        for (i, p) in params.iter().enumerate() {
            if !delivered[i] {
                let part = partial.param(p);
                if let Some(a) = part {
                    self.check_len(i, a.len(), params);
                }
                self.deliver(i, None, part);
            }
        }
        let backward_end = Instant::now();
        self.pump(true);
        let end = Instant::now();
        self.stats.steps += 1;
        self.stats.waiting += end - backward_end;
        if let Some(t) = self.first_start {
            self.stats.in_flight += end - t;
        }
        let mut grads = Grads::default();
        for (i, p) in params.iter().enumerate() {
            let slot = &self.layout.slots[i];
            let values = self.buckets[slot.bucket].result()[slot.range.clone()].to_vec();
            let g = ArrayD::from_shape_vec(p.shape(), values).expect("the slot has the parameter's length");
            grads.set_param(p, g);
        }
        Ok(grads)
    }
}
