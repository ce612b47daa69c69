//! What moves the bucket reductions along while the backward pass computes.
//!
//! An MPI nonblocking collective progresses only while some thread of the rank is inside MPI
//! (Open MPI has no asynchronous progress for shared memory or TCP). The reverse pass's
//! gradient hooks do not fire during a recurrent layer's reverse sweep (one fused op, often
//! most of the pass), so testing the requests from the hooks leaves a reduction started
//! before the sweep idle until the sweep ends. As in PyTorch DDP's reducer, a communication
//! thread owns the reductions instead: the trainer hands it each full bucket, it starts the
//! bucket's collectives and tests them every [`TEST_INTERVAL`] — sleeping in between, so on a
//! rank with one core it takes a few microseconds per test from the backward pass, not the
//! core — and hands each bucket back when its sum is ready. When the pass ends, the trainer
//! asks it to wait for the rest (`MPI_Wait`, while the trainer's thread is idle).
//!
//! While the thread holds buckets, it is the only thread of the trainer that calls MPI (the
//! trainer's thread only computes and exchanges buckets over channels, and does not return from
//! a step before every bucket is back), so MPI's `Serialized` threading level is enough; when
//! the library gives less, [`Progress`] runs the same [`Pipeline`] on the caller's thread,
//! tested from the gradient hooks.

use crate::bucket::{Bucket, Phase};
use eddy_tape::Float;
use mpi::ffi;
use mpi::Threading;
use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the communication thread sleeps between two tests of the reductions in flight.
/// A test is a few microseconds of MPI polling (plus a context switch on a busy core), at most
/// 2000 times a second while reductions are in flight and none otherwise, so the thread takes
/// a small share of the backward pass's core (an estimate, not measured apart from the
/// waiting); a reduction needs a handful of tests per collective.
pub const TEST_INTERVAL: Duration = Duration::from_micros(500);

/// The two communicators of the reductions (raw handles: the thread uses them while the
/// trainer, which owns them, is alive).
#[derive(Clone, Copy)]
pub(crate) struct Comms {
    pub(crate) exchange: ffi::MPI_Comm,
    pub(crate) gather: ffi::MPI_Comm,
}

// SAFETY: communicator handles are opaque MPI objects not tied to a thread; the trainer keeps the
// communicators alive until the thread has ended (it joins it on drop), and MPI allows calls
// from that thread (threading level `Serialized` or above, checked before the thread starts).
unsafe impl Send for Comms {}

/// A bucket whose reduction has finished, handed back with the moment it did.
pub(crate) struct Finished<F: Float> {
    pub(crate) index: usize,
    pub(crate) bucket: Bucket<F>,
    pub(crate) at: Instant,
}

/// The reductions in flight, in the order they started (the order every rank starts them).
pub(crate) struct Pipeline<F: Float> {
    comms: Comms,
    flight: VecDeque<(usize, Bucket<F>)>,
}

impl<F: Float> Pipeline<F> {
    fn new(comms: Comms) -> Self {
        Pipeline {
            comms,
            flight: VecDeque::new(),
        }
    }

    /// Starts bucket `index`'s reduction (buckets must come in bucket order).
    fn start(&mut self, index: usize, mut bucket: Bucket<F>) {
        bucket.start(self.comms.exchange);
        self.flight.push_back((index, bucket));
    }

    /// Tests (or, with `block`, waits for) the reductions in flight, moving each as far as it
    /// goes (gathers start in bucket order), and hands back the finished ones at the front.
    fn advance(&mut self, block: bool, done: &mut impl FnMut(Finished<F>)) {
        let mut may_gather = true;
        for (_, b) in &mut self.flight {
            let phase = b.advance(self.comms.gather, block, may_gather);
            may_gather = matches!(phase, Phase::Gathering | Phase::Done);
            if !block && !may_gather {
                break;
            }
        }
        while self.flight.front().is_some_and(|(_, b)| b.phase == Phase::Done) {
            let (index, bucket) = self.flight.pop_front().expect("checked");
            let at = Instant::now();
            done(Finished { index, bucket, at });
        }
    }
}

/// What the trainer tells the communication thread.
pub(crate) enum Order<F: Float> {
    /// Start this bucket's reduction (it is full).
    Start(usize, Bucket<F>),
    /// The backward pass has ended: wait for every reduction in flight.
    Flush,
}

/// The bucket reductions of a trainer: on a communication thread when MPI's threading level
/// allows it, otherwise on the caller's thread.
pub(crate) enum Progress<F: Float> {
    Thread {
        orders: Option<Sender<Order<F>>>,
        finished: Receiver<Finished<F>>,
        thread: Option<JoinHandle<()>>,
    },
    Inline {
        pipeline: Pipeline<F>,
        finished: VecDeque<Finished<F>>,
    },
}

impl<F: Float> Progress<F> {
    /// Reductions over `comms`, on a thread if MPI's threading level is `Serialized` or above.
    pub(crate) fn new(comms: Comms) -> Self {
        if mpi::environment::threading_support() < Threading::Serialized {
            return Progress::Inline {
                pipeline: Pipeline::new(comms),
                finished: VecDeque::new(),
            };
        }
        let (orders, inbox) = channel();
        let (outbox, finished) = channel();
        let thread = std::thread::Builder::new()
            .name("eddy-dist-comm".into())
            .spawn(move || serve(Pipeline::new(comms), inbox, outbox))
            .expect("spawn the communication thread");
        Progress::Thread {
            orders: Some(orders),
            finished,
            thread: Some(thread),
        }
    }

    /// Whether the reductions run on a thread of their own.
    pub(crate) fn threaded(&self) -> bool {
        matches!(self, Progress::Thread { .. })
    }

    /// Starts bucket `index`'s reduction.
    pub(crate) fn start(&mut self, index: usize, bucket: Bucket<F>) {
        match self {
            Progress::Thread { orders, .. } => send(orders, Order::Start(index, bucket)),
            Progress::Inline { pipeline, .. } => pipeline.start(index, bucket),
        }
    }

    /// Moves the reductions along from the caller's thread (inline only; the thread needs
    /// nothing).
    pub(crate) fn poll(&mut self) {
        if let Progress::Inline { pipeline, finished } = self {
            pipeline.advance(false, &mut |f| finished.push_back(f));
        }
    }

    /// Waits for the `count` reductions still out and returns them (the backward pass has
    /// ended).
    pub(crate) fn finish(&mut self, count: usize) -> Vec<Finished<F>> {
        match self {
            Progress::Thread { orders, finished, .. } => {
                if count > 0 {
                    send(orders, Order::Flush);
                }
                (0..count)
                    .map(|_| finished.recv().expect("the communication thread ended early"))
                    .collect()
            }
            Progress::Inline { pipeline, finished } => {
                pipeline.advance(true, &mut |f| finished.push_back(f));
                debug_assert_eq!(finished.len(), count);
                finished.drain(..).collect()
            }
        }
    }
}

fn send<F: Float>(orders: &Option<Sender<Order<F>>>, order: Order<F>) {
    orders
        .as_ref()
        .and_then(|o| o.send(order).ok())
        .expect("the communication thread ended early");
}

impl<F: Float> Drop for Progress<F> {
    fn drop(&mut self) {
        if let Progress::Thread { orders, thread, .. } = self {
            // Closing the channel ends the thread (it holds no bucket between steps).
            orders.take();
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The communication thread: starts the buckets it is given, tests them every
/// [`TEST_INTERVAL`] (or waits for them after a [`Order::Flush`]) and hands them back. It calls
/// MPI only while it holds buckets.
fn serve<F: Float>(mut pipeline: Pipeline<F>, inbox: Receiver<Order<F>>, outbox: Sender<Finished<F>>) {
    let mut flush = false;
    loop {
        let order = if pipeline.flight.is_empty() {
            flush = false;
            match inbox.recv() {
                Ok(order) => Some(order),
                Err(_) => return,
            }
        } else if flush {
            None
        } else {
            match inbox.recv_timeout(TEST_INTERVAL) {
                Ok(order) => Some(order),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Order::Flush),
            }
        };
        match order {
            Some(Order::Start(index, bucket)) => pipeline.start(index, bucket),
            Some(Order::Flush) => flush = true,
            None => {}
        }
        let mut send_back = |f: Finished<F>| {
            // The trainer waits for every bucket; if it is gone, so is the job.
            let _ = outbox.send(f);
        };
        pipeline.advance(flush, &mut send_back);
    }
}
