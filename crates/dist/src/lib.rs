//! # eddy-dist: data-parallel training over MPI
//!
//! One process per rank, launched by `mpirun` (or `srun`); each holds a copy of the model and
//! trains on its shard of every global batch. The design is PyTorch DDP's:
//!
//! - at the start rank 0's training state (parameters, optimizer, schedule, RNG, epoch) is
//!   broadcast, so every rank starts identical;
//! - gradients are written into contiguous buckets in reverse layer order as the backward pass
//!   finishes them, and a full bucket is reduced across the ranks while the pass goes on;
//! - the reduction sums in rank order ([`DataParallel`]), so every rank holds the same bits
//!   and takes the same optimizer step: the parameters stay bit-identical;
//! - a rank that fails (an error it cannot share, a panic) aborts the whole job with a message
//!   naming the rank, instead of leaving the others waiting in a collective.
//!
//! ```no_run
//! use eddy_dist::{BucketOptions, Dist};
//! use eddy_nn::sequential::{dense, lstm, Loss, Optim, Sequential};
//! use eddy_nn::FitOptions;
//! use eddy_tape::Rng;
//! # fn data() -> (ndarray::ArrayD<f32>, ndarray::ArrayD<f32>) { unimplemented!() }
//!
//! let dist = Dist::init()?;
//! let mut model = Sequential::new().add(lstm(32)).add(dense(1)).build::<f32>(3, &mut Rng::seed(0))?;
//! model.compile(Optim::adam(1e-3), Loss::Mse)?;
//! let (x, y) = data(); // the same data on every rank
//! let mut sync = dist.data_parallel::<f32>(BucketOptions::default());
//! let options = FitOptions { epochs: 5, batch_size: 64, ..FitOptions::default() };
//! let history = dist.check(model.fit_distributed(&x, &y, options, &mut sync));
//! if dist.rank() == 0 {
//!     println!("final loss {:.4}", history.loss.last().unwrap());
//! }
//! # Ok::<(), eddy_tape::Error>(())
//! ```
//!
//! Run it with `mpirun -n 4 target/release/examples/…`. The crate is not a member of the
//! workspace (building it needs an MPI library); see `docs/distributed.md`.

mod bucket;
mod data_parallel;
mod layout;
mod progress;

pub use data_parallel::{CommStats, DataParallel};
pub use layout::{BucketOptions, Layout, Slot};
/// The `mpi` crate (rsmpi) eddy-dist is built on, for a program's own MPI calls on
/// [`Dist::world`] (its traits: `mpi::traits::*`).
pub use mpi;
pub use progress::TEST_INTERVAL;

use eddy_tape::{Error, Result};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;
use std::sync::OnceLock;

/// This process's place in the job, for the panic hook: (rank, size).
static PLACE: OnceLock<(usize, usize)> = OnceLock::new();

/// The MPI job this process is a rank of. Keep it alive for as long as MPI is used: dropping
/// it finalizes MPI.
pub struct Dist {
    world: SimpleCommunicator,
    // Dropped last (fields drop in order): finalizes MPI.
    _universe: Universe,
}

impl Dist {
    /// Initializes MPI and installs a panic hook that aborts the job, naming the rank, when any
    /// thread of this rank panics.
    ///
    /// It asks for MPI's `Multiple` threading level: each [`DataParallel`] runs its gradient
    /// reductions on a communication thread, so they progress while the backward pass
    /// computes, which needs `Serialized` or above (Open MPI gives `Multiple`). With a library
    /// that gives only `Funneled` it still works, testing the reductions from the main thread
    /// between gradients (less overlap; [`DataParallel::threaded`] tells).
    ///
    /// # Errors
    /// [`Error::Invalid`] if MPI was already initialized in this process or gives less than
    /// `Funneled`.
    pub fn init() -> Result<Dist> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Multiple)
            .ok_or_else(|| Error::invalid("Dist::init", "MPI is already initialized in this process"))?;
        if level < Threading::Funneled {
            return Err(Error::invalid(
                "Dist::init",
                format!("the MPI library gives threading level {level:?}, eddy-dist needs Funneled"),
            ));
        }
        let world = universe.world();
        let place = (world.rank() as usize, world.size() as usize);
        let _ = PLACE.set(place);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let (rank, size) = PLACE.get().copied().unwrap_or((0, 1));
            abort_job(rank, size, &format!("panicked: {info}"));
        }));
        Ok(Dist {
            world,
            _universe: universe,
        })
    }

    /// This process's rank, `0..size()`.
    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    /// The number of ranks in the job.
    pub fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// The world communicator, for a program's own MPI calls.
    pub fn world(&self) -> &SimpleCommunicator {
        &self.world
    }

    /// The value of `result`, or, on an error, prints it with this rank and aborts the whole
    /// job (every rank exits non-zero). Errors that every rank meets alike (a bad option, a
    /// non-finite loss, which [`DataParallel`] shares) end every rank the same way; an error of
    /// one rank would otherwise leave the others waiting in a collective.
    pub fn check<T>(&self, result: Result<T>) -> T {
        match result {
            Ok(v) => v,
            Err(e) => abort_job(self.rank(), self.size(), &e.to_string()),
        }
    }
}

/// Prints `message` naming the rank and aborts every rank of the job (`MPI_Abort` with exit
/// code 1).
pub fn abort_job(rank: usize, size: usize, message: &str) -> ! {
    eprintln!("eddy-dist: rank {rank} of {size} failed: {message}");
    // SAFETY: MPI_Abort may be called at any time after initialization; it does not return
    // (Open MPI kills the job). The exit below is for an MPI that returns anyway.
    unsafe {
        mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 1);
    }
    std::process::exit(1)
}
