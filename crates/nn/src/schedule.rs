//! Learning-rate schedules, with PyTorch's closed-form formulas.
//!
//! A schedule is built from an optimizer, whose learning rate becomes its base `lr₀`, and sets
//! the optimizer's learning rate for its position `e` (0 at construction, as PyTorch's
//! `last_epoch`): call [`Schedule::step`] once per epoch (or per batch), after the optimizer's
//! step.
//!
//! | schedule | `lr(e)` | PyTorch |
//! |---|---|---|
//! | [`StepLr`] | `lr₀ · γ^⌊e / step_size⌋` | `StepLR` |
//! | [`ExponentialLr`] | `lr₀ · γᵉ` | `ExponentialLR` |
//! | [`CosineAnnealingLr`] | `η_min + (lr₀ − η_min)(1 + cos(π e / T_max))/2` | `CosineAnnealingLR` |
//! | [`LinearWarmup`] | `lr₀ · (s + (1 − s) · min(e, n)/n)` | `LinearLR(start_factor=s, total_iters=n)` |
//! | [`ReduceLrOnPlateau`] | `lr · factor` after `patience` epochs without improvement | `ReduceLROnPlateau` |
//!
//! PyTorch's `step()` evaluates these recursively, which can differ from the closed forms in
//! the last bits; eddy uses the closed forms, so a restored schedule is exact.
//!
//! ```
//! use eddy_nn::optim::{Optimizer, Sgd, SgdConfig};
//! use eddy_nn::schedule::{Schedule, StepLr};
//! use eddy_tape::Param;
//!
//! let mut opt = Sgd::<f32>::new(Vec::<Param<f32>>::new(), SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
//! let mut schedule = StepLr::new(&mut opt, 2, 0.5)?;
//! for _ in 0..3 {
//!     // ... opt.step(&grads)? for each batch ...
//!     schedule.step(&mut opt);
//! }
//! assert_eq!(opt.lr(), 0.05);
//! # Ok::<(), eddy_tape::Error>(())
//! ```

use crate::optim::Optimizer;
use eddy_tape::{Error, Float, Result};
use std::f64::consts::PI;

/// A learning-rate schedule over positions `e = 0, 1, 2, …`.
pub trait Schedule {
    /// The learning rate at the current position.
    fn lr(&self) -> f64;
    /// The current position (PyTorch's `last_epoch`).
    fn position(&self) -> usize;
    /// Moves to position `e`.
    fn seek(&mut self, e: usize);
    /// Moves one position on and sets `opt`'s learning rate to the new [`Schedule::lr`].
    fn step<F: Float>(&mut self, opt: &mut dyn Optimizer<F>)
    where
        Self: Sized,
    {
        self.seek(self.position() + 1);
        opt.set_lr(self.lr());
    }
    /// The saved position: `[position, base lr]`.
    fn state(&self) -> Vec<f64>;
    /// Restores a position saved by [`Schedule::state`].
    ///
    /// # Errors
    /// [`Error::Invalid`] if `state` is not `[position, base lr]` with a whole position.
    fn load_state(&mut self, state: &[f64]) -> Result<()>;
}

/// Position and base learning rate, shared by the closed-form schedules.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Position {
    epoch: usize,
    base_lr: f64,
}

impl Position {
    fn state(&self) -> Vec<f64> {
        vec![self.epoch as f64, self.base_lr]
    }
    fn load(&mut self, op: &str, state: &[f64]) -> Result<()> {
        match *state {
            [e, lr] if e >= 0.0 && e.fract() == 0.0 && e <= u32::MAX as f64 && lr.is_finite() => {
                self.epoch = e as usize;
                self.base_lr = lr;
                Ok(())
            }
            _ => Err(Error::invalid(
                op,
                format!("expected a state [position, base lr], got {state:?}"),
            )),
        }
    }
}

macro_rules! closed_form_schedule {
    ($ty:ident, $name:literal, |$s:ident, $e:ident| $lr:expr) => {
        impl Schedule for $ty {
            fn lr(&self) -> f64 {
                let $s = self;
                let $e = self.pos.epoch as f64;
                $lr
            }
            fn position(&self) -> usize {
                self.pos.epoch
            }
            fn seek(&mut self, e: usize) {
                self.pos.epoch = e;
            }
            fn state(&self) -> Vec<f64> {
                self.pos.state()
            }
            fn load_state(&mut self, state: &[f64]) -> Result<()> {
                self.pos.load($name, state)
            }
        }
    };
}

fn start<F: Float>(opt: &mut dyn Optimizer<F>) -> Position {
    Position {
        epoch: 0,
        base_lr: opt.lr(),
    }
}

/// Multiplies the learning rate by `gamma` every `step_size` positions: `lr₀ · γ^⌊e/step_size⌋`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLr {
    pos: Position,
    step_size: usize,
    gamma: f64,
}

impl StepLr {
    /// A step schedule from `opt`'s learning rate.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `step_size` 0 or a non-finite `gamma`.
    pub fn new<F: Float>(opt: &mut dyn Optimizer<F>, step_size: usize, gamma: f64) -> Result<StepLr> {
        if step_size == 0 || !gamma.is_finite() {
            return Err(Error::invalid(
                "StepLR",
                format!("needs step_size > 0 and a finite gamma, got {step_size} and {gamma}"),
            ));
        }
        Ok(StepLr {
            pos: start(opt),
            step_size,
            gamma,
        })
    }
}

closed_form_schedule!(StepLr, "StepLR", |s, _e| {
    s.pos.base_lr * s.gamma.powf((s.pos.epoch / s.step_size) as f64)
});

/// Multiplies the learning rate by `gamma` every position: `lr₀ · γᵉ`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialLr {
    pos: Position,
    gamma: f64,
}

impl ExponentialLr {
    /// An exponential schedule from `opt`'s learning rate.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a non-finite `gamma`.
    pub fn new<F: Float>(opt: &mut dyn Optimizer<F>, gamma: f64) -> Result<ExponentialLr> {
        if !gamma.is_finite() {
            return Err(Error::invalid(
                "ExponentialLR",
                format!("gamma must be finite, got {gamma}"),
            ));
        }
        Ok(ExponentialLr {
            pos: start(opt),
            gamma,
        })
    }
}

closed_form_schedule!(ExponentialLr, "ExponentialLR", |s, e| s.pos.base_lr
    * s.gamma.powf(e));

/// Half a cosine from `lr₀` down to `eta_min` over `t_max` positions (and back up after, as
/// PyTorch's closed form): `η_min + (lr₀ − η_min)(1 + cos(π e / T_max))/2`.
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingLr {
    pos: Position,
    t_max: usize,
    eta_min: f64,
}

impl CosineAnnealingLr {
    /// A cosine schedule from `opt`'s learning rate.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `t_max` 0 or a non-finite `eta_min`.
    pub fn new<F: Float>(
        opt: &mut dyn Optimizer<F>,
        t_max: usize,
        eta_min: f64,
    ) -> Result<CosineAnnealingLr> {
        if t_max == 0 || !eta_min.is_finite() {
            return Err(Error::invalid(
                "CosineAnnealingLR",
                format!("needs t_max > 0 and a finite eta_min, got {t_max} and {eta_min}"),
            ));
        }
        Ok(CosineAnnealingLr {
            pos: start(opt),
            t_max,
            eta_min,
        })
    }
}

closed_form_schedule!(CosineAnnealingLr, "CosineAnnealingLR", |s, e| {
    s.eta_min + (s.pos.base_lr - s.eta_min) * (1.0 + (PI * e / s.t_max as f64).cos()) / 2.0
});

/// Linear warmup: the factor on `lr₀` rises linearly from `start_factor` to 1 over
/// `total_iters` positions, then stays 1 (PyTorch's `LinearLR` with `end_factor = 1`).
///
/// Construction sets the optimizer's learning rate to `lr₀ · start_factor`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearWarmup {
    pos: Position,
    start_factor: f64,
    total_iters: usize,
}

impl LinearWarmup {
    /// A warmup from `opt`'s learning rate; sets it to `lr₀ · start_factor`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `start_factor` outside `(0, 1]`.
    pub fn new<F: Float>(
        opt: &mut dyn Optimizer<F>,
        start_factor: f64,
        total_iters: usize,
    ) -> Result<LinearWarmup> {
        if !(start_factor > 0.0 && start_factor <= 1.0) {
            return Err(Error::invalid(
                "LinearWarmup",
                format!("start_factor must be in (0, 1], got {start_factor}"),
            ));
        }
        let s = LinearWarmup {
            pos: start(opt),
            start_factor,
            total_iters,
        };
        opt.set_lr(s.lr());
        Ok(s)
    }
}

closed_form_schedule!(LinearWarmup, "LinearWarmup", |s, _e| {
    let factor = if s.total_iters == 0 {
        1.0
    } else {
        let done = s.pos.epoch.min(s.total_iters) as f64;
        s.start_factor + (1.0 - s.start_factor) * done / s.total_iters as f64
    };
    s.pos.base_lr * factor
});

/// Whether a smaller or a larger metric is better, for [`ReduceLrOnPlateau`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlateauMode {
    /// Lower is better (a loss). Default.
    #[default]
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// The hyper-parameters of [`ReduceLrOnPlateau`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlateauConfig {
    /// Whether lower or higher is better. Default [`PlateauMode::Min`].
    pub mode: PlateauMode,
    /// The factor the learning rate is multiplied by. Default `0.1`.
    pub factor: f64,
    /// How many epochs without improvement are tolerated. Default 10.
    pub patience: usize,
    /// A relative improvement: better means `< best·(1 − threshold)` (min). Default `1e-4`.
    pub threshold: f64,
    /// Epochs to wait after a reduction before counting again. Default 0.
    pub cooldown: usize,
    /// The learning rate is not reduced below this. Default 0.
    pub min_lr: f64,
    /// A reduction smaller than this is skipped. Default `1e-8`.
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        PlateauConfig {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// Reduces the learning rate by `factor` when a metric has stopped improving for more than
/// `patience` epochs, as PyTorch's `ReduceLROnPlateau` (relative threshold).
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceLrOnPlateau {
    config: PlateauConfig,
    best: f64,
    num_bad_epochs: usize,
    cooldown_counter: usize,
    epoch: usize,
}

impl ReduceLrOnPlateau {
    /// A plateau schedule.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a `factor` outside `[0, 1)`, or a negative or non-finite
    /// `threshold`, `min_lr` or `eps`.
    pub fn new(config: PlateauConfig) -> Result<ReduceLrOnPlateau> {
        let op = "ReduceLROnPlateau";
        if !(0.0..1.0).contains(&config.factor) {
            return Err(Error::invalid(
                op,
                format!("factor must be in [0, 1), got {}", config.factor),
            ));
        }
        for (name, v) in [
            ("threshold", config.threshold),
            ("min_lr", config.min_lr),
            ("eps", config.eps),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(
                    op,
                    format!("{name} must be finite and >= 0, got {v}"),
                ));
            }
        }
        Ok(ReduceLrOnPlateau {
            config,
            best: Self::worst(config.mode),
            num_bad_epochs: 0,
            cooldown_counter: 0,
            epoch: 0,
        })
    }

    fn worst(mode: PlateauMode) -> f64 {
        match mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        }
    }

    /// The best metric so far.
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Records the metric of an epoch and reduces `opt`'s learning rate if it has plateaued.
    /// Returns whether it reduced it. A NaN metric counts as no improvement.
    pub fn step<F: Float>(&mut self, metric: f64, opt: &mut dyn Optimizer<F>) -> bool {
        let c = &self.config;
        self.epoch += 1;
        let better = match c.mode {
            PlateauMode::Min => metric < self.best * (1.0 - c.threshold),
            PlateauMode::Max => metric > self.best * (1.0 + c.threshold),
        };
        if better {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > c.patience {
            self.cooldown_counter = c.cooldown;
            self.num_bad_epochs = 0;
            let old = opt.lr();
            let new = (old * c.factor).max(c.min_lr);
            if old - new > c.eps {
                opt.set_lr(new);
                return true;
            }
        }
        false
    }

    /// The saved position: `[best, bad epochs, cooldown counter, epoch]`.
    pub fn state(&self) -> Vec<f64> {
        vec![
            self.best,
            self.num_bad_epochs as f64,
            self.cooldown_counter as f64,
            self.epoch as f64,
        ]
    }

    /// Restores a position saved by [`ReduceLrOnPlateau::state`].
    ///
    /// # Errors
    /// [`Error::Invalid`] if `state` does not have that form.
    pub fn load_state(&mut self, state: &[f64]) -> Result<()> {
        let whole = |v: f64| v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64;
        match *state {
            [best, bad, cool, epoch] if !best.is_nan() && whole(bad) && whole(cool) && whole(epoch) => {
                self.best = best;
                self.num_bad_epochs = bad as usize;
                self.cooldown_counter = cool as usize;
                self.epoch = epoch as usize;
                Ok(())
            }
            _ => Err(Error::invalid(
                "ReduceLROnPlateau",
                format!("expected a state [best, bad epochs, cooldown, epoch], got {state:?}"),
            )),
        }
    }
}
