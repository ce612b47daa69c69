//! One gradient bucket and its reduction across the ranks, in a fixed order.
//!
//! MPI's own `MPI_Allreduce` sums in an order its algorithm picks (and may pick differently for
//! another message size or number of ranks), so the ranks could in principle differ in the last
//! bit. We reduce in two nonblocking collectives instead, each rank owning one chunk of the
//! bucket:
//!
//! 1. `MPI_Ialltoall`: rank `j` receives chunk `j` of every rank's bucket;
//! 2. rank `j` sums its chunk over the ranks in rank order (`((g₀ + g₁) + g₂) + …`);
//! 3. `MPI_Iallgather`: every rank receives every summed chunk.
//!
//! Every element is summed once, by one rank, in rank order, and copied to the others: all
//! ranks hold the same bits. Each rank sends and receives `(P − 1)/P` of the bucket twice, as
//! in a ring allreduce. The bucket is padded with zeros to a multiple of the number of ranks.
//!
//! The collectives are nonblocking: [`Bucket::advance`] tests (or waits for) the current one and
//! moves on; the communication thread (the `progress` module) calls it while the backward pass
//! runs. Nonblocking
//! collectives on one communicator must be started in the same order on every rank; buckets
//! start their exchange in bucket order on one communicator and their gather in bucket order on
//! another.

use eddy_tape::Float;
use mpi::ffi;
use std::os::raw::{c_int, c_void};

/// Where a bucket is in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Gradients are being written into it.
    Filling,
    /// Its chunks are being exchanged (`MPI_Ialltoall` in flight).
    Exchanging,
    /// Its summed chunks are being gathered (`MPI_Iallgather` in flight).
    Gathering,
    /// The sum is in [`Bucket::result`].
    Done,
}

/// A bucket's buffers and its request in flight.
///
/// Invariant: while the phase is `Exchanging` or `Gathering`, MPI holds pointers into `flat`,
/// `gathered`, `reduced` and `out`; they are neither resized nor dropped until the request
/// completes (the owner waits for every bucket before it returns from a step, and a failing
/// rank aborts the job instead of returning).
pub(crate) struct Bucket<F: Float> {
    len: usize,
    chunk: usize,
    ranks: usize,
    /// This rank's gradients, `chunk × ranks` elements (the tail is zero padding).
    pub(crate) flat: Vec<F>,
    /// Chunk `rank` of every rank's `flat`, rank after rank.
    gathered: Vec<F>,
    /// The sum of `gathered`'s rows.
    reduced: Vec<F>,
    /// Every rank's `reduced`, rank after rank: the summed bucket.
    out: Vec<F>,
    request: ffi::MPI_Request,
    pub(crate) phase: Phase,
    /// Parameters still to be written this step.
    pub(crate) missing: usize,
}

// SAFETY: the only field that is not `Send` is the request handle, an opaque MPI object not tied
// to a thread; the bucket moves to the communication thread whole, with the buffers the request
// points into (a `Vec`'s heap buffer does not move with the `Vec`), and MPI is initialized with
// a threading level that allows calls from that thread (`Serialized` or above).
unsafe impl<F: Float> Send for Bucket<F> {}

/// The MPI datatype of `F`.
fn datatype<F: Float>() -> ffi::MPI_Datatype {
    // Float is sealed to f32 and f64.
    // SAFETY: reading the datatype handles rsmpi's C shim exports.
    unsafe {
        if F::NAME == "f64" {
            ffi::RSMPI_DOUBLE
        } else {
            ffi::RSMPI_FLOAT
        }
    }
}

impl<F: Float> Bucket<F> {
    /// A bucket of `len` elements reduced over `ranks` ranks.
    pub(crate) fn new(len: usize, ranks: usize) -> Bucket<F> {
        let chunk = len.div_ceil(ranks).max(1);
        let comm = ranks > 1;
        Bucket {
            len,
            chunk,
            ranks,
            flat: vec![F::zero(); chunk * ranks],
            gathered: if comm {
                vec![F::zero(); chunk * ranks]
            } else {
                Vec::new()
            },
            reduced: if comm { vec![F::zero(); chunk] } else { Vec::new() },
            out: if comm {
                vec![F::zero(); chunk * ranks]
            } else {
                Vec::new()
            },
            // SAFETY: reading a handle exported by rsmpi's C shim.
            request: unsafe { ffi::RSMPI_REQUEST_NULL },
            phase: Phase::Done,
            missing: 0,
        }
    }

    /// Starts the exchange (on one rank there is nothing to exchange: the bucket is done).
    pub(crate) fn start(&mut self, exchange: ffi::MPI_Comm) {
        debug_assert_eq!(self.phase, Phase::Filling);
        if self.ranks == 1 {
            self.phase = Phase::Done;
            return;
        }
        let count = self.chunk as c_int;
        let dt = datatype::<F>();
        // SAFETY: `flat` and `gathered` hold `chunk × ranks` elements of `F`, whose datatype
        // is `dt`; they stay in place until the request completes (see the invariant).
        unsafe {
            ffi::MPI_Ialltoall(
                self.flat.as_ptr() as *const c_void,
                count,
                dt,
                self.gathered.as_mut_ptr() as *mut c_void,
                count,
                dt,
                exchange,
                &mut self.request,
            );
        }
        self.phase = Phase::Exchanging;
    }

    /// Tests (or, with `block`, waits for) the request in flight and moves on as far as it can;
    /// returns the phase reached. A bucket leaves `Exchanging` only when `may_gather` (the
    /// buckets before it have started their gather, so gathers start in bucket order).
    pub(crate) fn advance(&mut self, gather: ffi::MPI_Comm, block: bool, may_gather: bool) -> Phase {
        loop {
            let phase = self.phase;
            match phase {
                Phase::Exchanging if may_gather && self.finished(block) => {
                    self.sum_chunks();
                    let count = self.chunk as c_int;
                    let dt = datatype::<F>();
                    // SAFETY: `reduced` holds `chunk` and `out` `chunk × ranks` elements of `F`;
                    // they stay in place until the request completes.
                    unsafe {
                        ffi::MPI_Iallgather(
                            self.reduced.as_ptr() as *const c_void,
                            count,
                            dt,
                            self.out.as_mut_ptr() as *mut c_void,
                            count,
                            dt,
                            gather,
                            &mut self.request,
                        );
                    }
                    self.phase = Phase::Gathering;
                }
                Phase::Gathering if self.finished(block) => self.phase = Phase::Done,
                phase => return phase,
            }
        }
    }

    /// Whether the request in flight has completed (waiting for it with `block`).
    fn finished(&mut self, block: bool) -> bool {
        // SAFETY: `request` is the live request of this bucket's collective; MPI sets it to
        // MPI_REQUEST_NULL when it completes.
        unsafe {
            if block {
                ffi::MPI_Wait(&mut self.request, ffi::RSMPI_STATUS_IGNORE);
                true
            } else {
                let mut flag: c_int = 0;
                ffi::MPI_Test(&mut self.request, &mut flag, ffi::RSMPI_STATUS_IGNORE);
                flag != 0
            }
        }
    }

    /// `reduced = gathered[0] + gathered[1] + …`, in rank order.
    fn sum_chunks(&mut self) {
        let c = self.chunk;
        self.reduced.copy_from_slice(&self.gathered[..c]);
        for row in self.gathered[c..].chunks_exact(c) {
            for (r, g) in self.reduced.iter_mut().zip(row) {
                *r += *g;
            }
        }
    }

    /// The summed bucket (after [`Phase::Done`]).
    pub(crate) fn result(&self) -> &[F] {
        if self.ranks == 1 {
            &self.flat[..self.len]
        } else {
            &self.out[..self.len]
        }
    }
}
