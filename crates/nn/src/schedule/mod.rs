//! Learning-rate schedules, with PyTorch's formulas.
//!
//! A schedule is built from an optimizer, whose learning rate (of each parameter group, see
//! [`Optimizer::group_lrs`]) becomes its base `lr₀`, and sets the optimizer's learning rates for
//! its position `e` (0 at construction, as PyTorch's `last_epoch`): call [`Schedule::step`] once
//! per epoch (or per batch), after the optimizer's step. Each group follows the formula from its
//! own base learning rate, as in `torch.optim.lr_scheduler`.
//!
//! | schedule | `lr(e)` | PyTorch |
//! |---|---|---|
//! | [`StepLr`] | `lr₀ · γ^⌊e / step_size⌋` | `StepLR` |
//! | [`MultiStepLr`] | `lr₀ · γ^(milestones ≤ e)` | `MultiStepLR` |
//! | [`ExponentialLr`] | `lr₀ · γᵉ` | `ExponentialLR` |
//! | [`CosineAnnealingLr`] | `η_min + (lr₀ − η_min)(1 + cos(π e / T_max))/2` | `CosineAnnealingLR` |
//! | [`CosineAnnealingWarmRestarts`] | the cosine over `T_cur` of a cycle of `T_i`, restarting | `CosineAnnealingWarmRestarts` |
//! | [`LinearWarmup`] | `lr₀ · (s + (1 − s) · min(e, n)/n)` | `LinearLR(start_factor=s, total_iters=n)` |
//! | [`PolynomialLr`] | `lr₀ · (1 − min(e, n)/n)^p` | `PolynomialLR` |
//! | [`LambdaLr`] | `lr₀ · f(e)` for a closure `f` | `LambdaLR` |
//! | [`OneCycleLr`] | up from `max/div` to `max`, then down to `max/(div·final_div)` | `OneCycleLR` |
//! | [`CyclicLr`] | triangles between `base` and `max` | `CyclicLR` |
//! | [`SequentialLr`] | one schedule after another, each restarted at its milestone | `SequentialLR` |
//! | [`ReduceLrOnPlateau`] | `lr · factor` after `patience` epochs without improvement | `ReduceLROnPlateau` |
//!
//! PyTorch's `step()` evaluates several of these recursively, which can differ from the closed
//! forms in the last bits; eddy uses the closed forms, so a restored schedule is exact. The
//! fixtures in `fixtures/torch/schedule` (from `tools/torch_schedule_fixtures.py`) hold
//! PyTorch's learning rates for every schedule over two parameter groups; the test
//! `schedule_parity` checks eddy's against them.
//!
//! Constructors take every hyper-parameter; PyTorch's defaults, where it has them, are: `StepLR`
//! and `MultiStepLR` `gamma = 0.1`, cosine `eta_min = 0`, `LinearLR` `start_factor = 1/3` over
//! `total_iters = 5`, `PolynomialLR` `total_iters = 5, power = 1`, and the `Default`s of
//! [`OneCycleConfig`], [`CyclicConfig`] and [`PlateauConfig`].
//!
//! A schedule can be boxed: `Box<dyn Schedule>` is itself a [`Schedule`], so
//! [`step`](Schedule::step) works on it too.
//!
//! ```
//! use eddy_nn::optim::{Optimizer, Sgd, SgdConfig};
//! use eddy_nn::schedule::{CosineAnnealingLr, Schedule, StepLr};
//! use eddy_tape::Param;
//!
//! let mut opt = Sgd::<f32>::new(Vec::<Param<f32>>::new(), SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
//! let mut schedule = StepLr::new(&mut opt, 2, 0.5)?;
//! for _ in 0..3 {
//!     // ... opt.step(&grads)? for each batch ...
//!     schedule.step(&mut opt);
//! }
//! assert_eq!(opt.lr(), 0.05);
//!
//! // Chosen at run time, behind a box:
//! let mut boxed: Box<dyn Schedule> = Box::new(CosineAnnealingLr::new(&mut opt, 10, 0.0)?);
//! boxed.step(&mut opt);
//! assert!(opt.lr() < 0.05);
//! # Ok::<(), eddy_tape::Error>(())
//! ```

mod closed;
mod cyclic;
mod plateau;
mod sequential;

pub use closed::{
    CosineAnnealingLr, CosineAnnealingWarmRestarts, ExponentialLr, LambdaLr, LinearWarmup, MultiStepLr,
    PolynomialLr, StepLr,
};
pub use cyclic::{AnnealStrategy, CyclicConfig, CyclicLr, CyclicMode, OneCycleConfig, OneCycleLr};
pub use plateau::{PlateauConfig, PlateauMode, ReduceLrOnPlateau};
pub use sequential::SequentialLr;

use crate::optim::Optimizer;
use eddy_tape::{Error, Float, Result};

/// A learning-rate schedule over positions `e = 0, 1, 2, …`.
///
/// Every method but [`step`](Schedule::step) is object-safe, and `Box<S>` (also
/// `Box<dyn Schedule>`) implements the trait by forwarding, so a boxed schedule steps as well.
pub trait Schedule {
    /// The learning rate of the first parameter group at the current position.
    fn lr(&self) -> f64 {
        self.lrs().first().copied().unwrap_or(0.0)
    }
    /// The learning rate of each parameter group at the current position.
    fn lrs(&self) -> Vec<f64>;
    /// The current position (PyTorch's `last_epoch`).
    fn position(&self) -> usize;
    /// Moves to position `e`.
    fn seek(&mut self, e: usize);
    /// The base learning rate of each parameter group (PyTorch's `base_lrs`).
    fn base_lrs(&self) -> Vec<f64>;
    /// Replaces the base learning rates (one per group); [`SequentialLr`] gives all its
    /// schedules the optimizer's initial ones, as PyTorch does.
    ///
    /// # Errors
    /// [`Error::Invalid`] for another number of groups or a non-finite rate.
    fn set_base_lrs(&mut self, base_lrs: &[f64]) -> Result<()>;
    /// Moves one position on and sets `opt`'s learning rates to the new [`Schedule::lrs`].
    fn step<F: Float>(&mut self, opt: &mut dyn Optimizer<F>)
    where
        Self: Sized,
    {
        self.seek(self.position() + 1);
        opt.set_group_lrs(&self.lrs());
    }
    /// The saved position: `[position, base lr of each group]` (some schedules add more).
    fn state(&self) -> Vec<f64>;
    /// Restores a position saved by [`Schedule::state`].
    ///
    /// # Errors
    /// [`Error::Invalid`] if `state` does not have the form [`Schedule::state`] gives, for as
    /// many groups.
    fn load_state(&mut self, state: &[f64]) -> Result<()>;
}

impl<S: Schedule + ?Sized> Schedule for Box<S> {
    fn lr(&self) -> f64 {
        (**self).lr()
    }
    fn lrs(&self) -> Vec<f64> {
        (**self).lrs()
    }
    fn position(&self) -> usize {
        (**self).position()
    }
    fn seek(&mut self, e: usize) {
        (**self).seek(e)
    }
    fn base_lrs(&self) -> Vec<f64> {
        (**self).base_lrs()
    }
    fn set_base_lrs(&mut self, base_lrs: &[f64]) -> Result<()> {
        (**self).set_base_lrs(base_lrs)
    }
    fn state(&self) -> Vec<f64> {
        (**self).state()
    }
    fn load_state(&mut self, state: &[f64]) -> Result<()> {
        (**self).load_state(state)
    }
}

/// Position and base learning rates (one per group), shared by the closed-form schedules.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Position {
    pub(crate) epoch: usize,
    pub(crate) base_lrs: Vec<f64>,
}

impl Position {
    /// Position 0 with `opt`'s learning rates as the bases.
    pub(crate) fn start<F: Float>(opt: &dyn Optimizer<F>) -> Position {
        Position {
            epoch: 0,
            base_lrs: opt.group_lrs(),
        }
    }
    pub(crate) fn state(&self) -> Vec<f64> {
        let mut s = vec![self.epoch as f64];
        s.extend(&self.base_lrs);
        s
    }
    pub(crate) fn load(&mut self, op: &str, state: &[f64]) -> Result<()> {
        match state.split_first() {
            Some((&e, lrs))
                if whole(e) && lrs.len() == self.base_lrs.len() && lrs.iter().all(|v| v.is_finite()) =>
            {
                self.epoch = e as usize;
                self.base_lrs = lrs.to_vec();
                Ok(())
            }
            _ => Err(Error::invalid(
                op,
                format!(
                    "expected a state [position, base lr of each of {} groups], got {state:?}",
                    self.base_lrs.len()
                ),
            )),
        }
    }
    pub(crate) fn set_bases(&mut self, op: &str, base_lrs: &[f64]) -> Result<()> {
        if base_lrs.len() != self.base_lrs.len() || !base_lrs.iter().all(|v| v.is_finite()) {
            return Err(Error::invalid(
                op,
                format!(
                    "expected {} finite base learning rates, got {base_lrs:?}",
                    self.base_lrs.len()
                ),
            ));
        }
        self.base_lrs = base_lrs.to_vec();
        Ok(())
    }
}

/// Whether `v` is a whole number that fits a position.
pub(crate) fn whole(v: f64) -> bool {
    v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64
}

/// Implements [`Schedule`] for a type with a `pos: Position` field and a method
/// `lr_at(&self, base: f64, e: usize) -> f64`.
macro_rules! closed_form_schedule {
    ($ty:ty, $name:literal) => {
        impl $crate::schedule::Schedule for $ty {
            fn lrs(&self) -> Vec<f64> {
                self.pos
                    .base_lrs
                    .iter()
                    .map(|&b| self.lr_at(b, self.pos.epoch))
                    .collect()
            }
            fn position(&self) -> usize {
                self.pos.epoch
            }
            fn seek(&mut self, e: usize) {
                self.pos.epoch = e;
            }
            fn base_lrs(&self) -> Vec<f64> {
                self.pos.base_lrs.clone()
            }
            fn set_base_lrs(&mut self, base_lrs: &[f64]) -> eddy_tape::Result<()> {
                self.pos.set_bases($name, base_lrs)
            }
            fn state(&self) -> Vec<f64> {
                self.pos.state()
            }
            fn load_state(&mut self, state: &[f64]) -> eddy_tape::Result<()> {
                self.pos.load($name, state)
            }
        }
    };
}
pub(crate) use closed_form_schedule;
