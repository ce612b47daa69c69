//! [`DataParallel`]: eddy-nn's [`GradientSync`] over MPI, after PyTorch DDP.

use crate::bucket::{Bucket, Phase};
use crate::layout::{BucketOptions, Layout};
use crate::progress::{Comms, Progress};
use crate::{abort_job, Dist};
use eddy_nn::GradientSync;
use eddy_tape::{Float, Grads, Param, ParamId, Result, Var};
use mpi::collective::{CommunicatorCollectives, Root};
use mpi::raw::AsRaw;
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
    /// Bucket reductions that finished before the backward pass reported its last gradient
    /// (summed over steps): they ran while the pass computed, moved along by the communication
    /// thread (without one, only the gradient reports move them).
    pub finished_in_backward: usize,
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
///   full bucket is handed to a communication thread, which starts its reduction at once
///   (buckets start in order) and tests it every half millisecond while the pass computes —
///   what moves MPI's nonblocking collectives along, even during a recurrent layer's long
///   reverse sweep. This needs MPI's `Serialized` threading level or above ([`Dist::init`]
///   asks for `Multiple`); below it the reductions are tested from the gradient reports.
/// - **Fixed order**: each bucket is summed in rank order (see the `bucket` module), so
///   every rank holds the same bits and the parameters stay bit-identical.
/// - **Failure**: a reverse pass that fails on one rank cannot leave the others waiting in a
///   collective: it prints the error with the rank and aborts the job (`MPI_Abort`).
pub struct DataParallel<F: Float> {
    /// The bucket reductions (first: fields drop in order, and its thread must end before the
    /// communicators it uses are freed).
    progress: Progress<F>,
    exchange: SimpleCommunicator,
    /// The gathers' communicator, used through `progress`; kept here to free it last.
    _gather: SimpleCommunicator,
    rank: usize,
    ranks: usize,
    options: BucketOptions,
    /// The parameters (id and length) the layout was made for.
    key: Vec<(ParamId, usize)>,
    index: HashMap<ParamId, usize>,
    layout: Layout,
    /// The buckets; `None` while the reduction has it.
    buckets: Vec<Option<Bucket<F>>>,
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
        let exchange = comm.duplicate();
        let gather = comm.duplicate();
        let progress = Progress::new(Comms {
            exchange: exchange.as_raw(),
            gather: gather.as_raw(),
        });
        DataParallel {
            progress,
            exchange,
            _gather: gather,
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

    /// Whether the reductions run on a communication thread (MPI's threading level is
    /// `Serialized` or above), so they progress while the backward pass computes.
    pub fn threaded(&self) -> bool {
        self.progress.threaded()
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
                .map(|&len| Some(Bucket::new(len, self.ranks)))
                .collect();
            self.index = key.iter().enumerate().map(|(i, &(id, _))| (id, i)).collect();
            self.stats.bytes_per_step = sizes.iter().sum::<usize>() * elem;
            self.stats.buckets = self.buckets.len();
            self.key = key;
        }
        for (b, members) in self.buckets.iter_mut().zip(&self.layout.members) {
            let b = b.as_mut().expect("every bucket is back after a step");
            b.missing = members.len();
            b.phase = Phase::Filling;
        }
        self.started = 0;
        self.first_start = None;
    }

    /// Writes parameter `i`'s part, `scale × grad + partial`, into its bucket.
    fn deliver(&mut self, i: usize, grad: Option<(&ArrayD<F>, F)>, partial: Option<&ArrayD<F>>) {
        let slot = &self.layout.slots[i];
        let bucket = self.buckets[slot.bucket]
            .as_mut()
            .expect("a bucket starts only when all its parameters are in");
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

    /// Hands every full bucket whose predecessors have started to the reductions, then moves
    /// them along (only needed without a communication thread).
    fn pump(&mut self) {
        while self.started < self.buckets.len()
            && self.buckets[self.started]
                .as_ref()
                .is_some_and(|b| b.missing == 0)
        {
            self.first_start.get_or_insert_with(Instant::now);
            let bucket = self.buckets[self.started].take().expect("checked");
            self.progress.start(self.started, bucket);
            self.started += 1;
        }
        self.progress.poll();
    }

    /// Waits for every reduction still out (the backward pass reported its last gradient at
    /// `last_report` and ended at `backward_end`), takes the buckets back and records the
    /// step's statistics.
    fn collect(&mut self, last_report: Option<Instant>, backward_end: Instant) {
        let out = self.buckets.iter().filter(|b| b.is_none()).count();
        let mut last = None;
        for f in self.progress.finish(out) {
            if last_report.is_some_and(|r| f.at < r) {
                self.stats.finished_in_backward += 1;
            }
            last = Some(last.map_or(f.at, |t: Instant| t.max(f.at)));
            self.buckets[f.index] = Some(f.bucket);
        }
        let end = Instant::now();
        self.stats.steps += 1;
        self.stats.waiting += end.saturating_duration_since(backward_end);
        if let (Some(t), Some(l)) = (self.first_start, last) {
            self.stats.in_flight += l.saturating_duration_since(t);
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
        let mut last_report = None;
        if let Some((loss, scale)) = loss {
            let result = loss.backward_with_ready(|id, g| {
                let Some(&i) = self.index.get(&id) else {
                    return;
                };
                last_report = Some(Instant::now());
                self.check_len(i, g.len(), params);
                self.deliver(i, Some((g, scale)), partial.param(&params[i]));
                delivered[i] = true;
                self.pump();
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
        self.pump();
        self.collect(last_report, backward_end);
        let mut grads = Grads::default();
        for (i, p) in params.iter().enumerate() {
            let slot = &self.layout.slots[i];
            let bucket = self.buckets[slot.bucket].as_ref().expect("collected");
            debug_assert_eq!(bucket.phase, Phase::Done);
            let values = bucket.result()[slot.range.clone()].to_vec();
            let g = ArrayD::from_shape_vec(p.shape(), values).expect("the slot has the parameter's length");
            grads.set_param(p, g);
        }
        Ok(grads)
    }
}
