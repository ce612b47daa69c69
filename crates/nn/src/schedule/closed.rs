//! The schedules with a closed form `lr(lr₀, e)`: each group's learning rate is a function of
//! its base learning rate and the position alone.

use super::{closed_form_schedule, Position};
use crate::optim::Optimizer;
use eddy_tape::{Error, Float, Result};
use std::f64::consts::PI;
use std::fmt;

/// Builds a schedule at position 0 from `opt`'s learning rates and sets them to position 0's
/// (as PyTorch's constructors do through their initial step).
fn started<F: Float, S: super::Schedule>(opt: &mut dyn Optimizer<F>, make: impl FnOnce(Position) -> S) -> S {
    let s = make(Position::start(opt));
    opt.set_group_lrs(&s.lrs());
    s
}

/// Multiplies the learning rate by `gamma` every `step_size` positions: `lr₀ · γ^⌊e/step_size⌋`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLr {
    pos: Position,
    step_size: usize,
    gamma: f64,
}

impl StepLr {
    /// A step schedule from `opt`'s learning rates. PyTorch's default `gamma` is `0.1`.
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
        Ok(started(opt, |pos| StepLr {
            pos,
            step_size,
            gamma,
        }))
    }

    fn lr_at(&self, base: f64, e: usize) -> f64 {
        base * self.gamma.powf((e / self.step_size) as f64)
    }
}

closed_form_schedule!(StepLr, "StepLR");

/// Multiplies the learning rate by `gamma` at each milestone: `lr₀ · γ^(number of milestones ≤ e)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStepLr {
    pos: Position,
    milestones: Vec<usize>,
    gamma: f64,
}

impl MultiStepLr {
    /// A multi-step schedule from `opt`'s learning rates. The milestones may come in any order;
    /// one listed twice multiplies by `γ²`, as in PyTorch. PyTorch's default `gamma` is `0.1`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a non-finite `gamma`.
    pub fn new<F: Float>(
        opt: &mut dyn Optimizer<F>,
        milestones: &[usize],
        gamma: f64,
    ) -> Result<MultiStepLr> {
        if !gamma.is_finite() {
            return Err(Error::invalid(
                "MultiStepLR",
                format!("gamma must be finite, got {gamma}"),
            ));
        }
        let mut milestones = milestones.to_vec();
        milestones.sort_unstable();
        Ok(started(opt, |pos| MultiStepLr {
            pos,
            milestones,
            gamma,
        }))
    }

    fn lr_at(&self, base: f64, e: usize) -> f64 {
        let passed = self.milestones.partition_point(|&m| m <= e);
        base * self.gamma.powf(passed as f64)
    }
}

closed_form_schedule!(MultiStepLr, "MultiStepLR");

/// Multiplies the learning rate by `gamma` every position: `lr₀ · γᵉ`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialLr {
    pos: Position,
    gamma: f64,
}

impl ExponentialLr {
    /// An exponential schedule from `opt`'s learning rates.
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
        Ok(started(opt, |pos| ExponentialLr { pos, gamma }))
    }

    fn lr_at(&self, base: f64, e: usize) -> f64 {
        base * self.gamma.powf(e as f64)
    }
}

closed_form_schedule!(ExponentialLr, "ExponentialLR");

/// `η_min + (lr₀ − η_min)(1 + cos(π t / T))/2`, the half cosine of both cosine schedules.
fn cosine(base: f64, eta_min: f64, t: f64, period: f64) -> f64 {
    eta_min + (base - eta_min) * (1.0 + (PI * t / period).cos()) / 2.0
}

/// Half a cosine from `lr₀` down to `eta_min` over `t_max` positions (and back up after, as
/// PyTorch's closed form): `η_min + (lr₀ − η_min)(1 + cos(π e / T_max))/2`.
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingLr {
    pos: Position,
    t_max: usize,
    eta_min: f64,
}

impl CosineAnnealingLr {
    /// A cosine schedule from `opt`'s learning rates. PyTorch's default `eta_min` is 0.
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
        Ok(started(opt, |pos| CosineAnnealingLr { pos, t_max, eta_min }))
    }

    fn lr_at(&self, base: f64, e: usize) -> f64 {
        cosine(base, self.eta_min, e as f64, self.t_max as f64)
    }
}

closed_form_schedule!(CosineAnnealingLr, "CosineAnnealingLR");

/// SGDR: the cosine from `lr₀` down to `eta_min` over a cycle of `T_i` positions, then a
/// restart at `lr₀` with the next cycle `T_mult` times as long (`T_0, T_0·T_mult, …`).
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingWarmRestarts {
    pos: Position,
    t_0: usize,
    t_mult: usize,
    eta_min: f64,
}

impl CosineAnnealingWarmRestarts {
    /// Warm restarts from `opt`'s learning rates. PyTorch's defaults are `t_mult = 1` and
    /// `eta_min = 0`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `t_0` or `t_mult` 0, or a non-finite `eta_min`.
    pub fn new<F: Float>(
        opt: &mut dyn Optimizer<F>,
        t_0: usize,
        t_mult: usize,
        eta_min: f64,
    ) -> Result<CosineAnnealingWarmRestarts> {
        if t_0 == 0 || t_mult == 0 || !eta_min.is_finite() {
            return Err(Error::invalid(
                "CosineAnnealingWarmRestarts",
                format!("needs t_0 > 0, t_mult >= 1 and a finite eta_min, got {t_0}, {t_mult} and {eta_min}"),
            ));
        }
        Ok(started(opt, |pos| CosineAnnealingWarmRestarts {
            pos,
            t_0,
            t_mult,
            eta_min,
        }))
    }

    /// The position within the current cycle and the cycle's length, `(T_cur, T_i)`.
    pub fn cycle(&self) -> (usize, usize) {
        let (mut t_cur, mut t_i) = (self.pos.epoch, self.t_0);
        while t_cur >= t_i {
            t_cur -= t_i;
            t_i = t_i.saturating_mul(self.t_mult);
        }
        (t_cur, t_i)
    }

    fn lr_at(&self, base: f64, _e: usize) -> f64 {
        let (t_cur, t_i) = self.cycle();
        cosine(base, self.eta_min, t_cur as f64, t_i as f64)
    }
}

closed_form_schedule!(CosineAnnealingWarmRestarts, "CosineAnnealingWarmRestarts");

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
    /// A warmup from `opt`'s learning rates; sets them to `lr₀ · start_factor`. PyTorch's
    /// `LinearLR` defaults are `start_factor = 1/3`, `total_iters = 5`.
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
        Ok(started(opt, |pos| LinearWarmup {
            pos,
            start_factor,
            total_iters,
        }))
    }

    fn lr_at(&self, base: f64, e: usize) -> f64 {
        let factor = if self.total_iters == 0 {
            1.0
        } else {
            let done = e.min(self.total_iters) as f64;
            self.start_factor + (1.0 - self.start_factor) * done / self.total_iters as f64
        };
        base * factor
    }
}

closed_form_schedule!(LinearWarmup, "LinearWarmup");

/// Polynomial decay to 0 over `total_iters` positions: `lr₀ · (1 − min(e, n)/n)^power`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolynomialLr {
    pos: Position,
    total_iters: usize,
    power: f64,
}

impl PolynomialLr {
    /// A polynomial decay from `opt`'s learning rates. PyTorch's defaults are
    /// `total_iters = 5`, `power = 1`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `total_iters` 0 or a non-finite `power`.
    pub fn new<F: Float>(opt: &mut dyn Optimizer<F>, total_iters: usize, power: f64) -> Result<PolynomialLr> {
        if total_iters == 0 || !power.is_finite() {
            return Err(Error::invalid(
                "PolynomialLR",
                format!("needs total_iters > 0 and a finite power, got {total_iters} and {power}"),
            ));
        }
        Ok(started(opt, |pos| PolynomialLr {
            pos,
            total_iters,
            power,
        }))
    }

    fn lr_at(&self, base: f64, e: usize) -> f64 {
        let n = self.total_iters as f64;
        base * (1.0 - e.min(self.total_iters) as f64 / n).powf(self.power)
    }
}

closed_form_schedule!(PolynomialLr, "PolynomialLR");

/// The learning rate `lr₀ · f(e)` for a closure `f` of the position (PyTorch's `LambdaLR` with
/// one function for every group).
///
/// ```
/// use eddy_nn::optim::{Optimizer, Sgd, SgdConfig};
/// use eddy_nn::schedule::{LambdaLr, Schedule};
/// use eddy_tape::Param;
///
/// let mut opt = Sgd::<f32>::new(Vec::<Param<f32>>::new(), SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
/// // Warm up over 4 positions, then decay as 1/√e.
/// let mut s = LambdaLr::new(&mut opt, |e| if e < 4 { (e + 1) as f64 / 4.0 } else { 2.0 / (e as f64).sqrt() })?;
/// assert_eq!(opt.lr(), 0.025);
/// s.seek(16);
/// assert_eq!(s.lr(), 0.05);
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub struct LambdaLr {
    pos: Position,
    f: Box<dyn Fn(usize) -> f64>,
}

impl fmt::Debug for LambdaLr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LambdaLr")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl LambdaLr {
    /// A schedule from `opt`'s learning rates scaled by `f(e)`; sets them to `lr₀ · f(0)`.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `f(0)` is not finite.
    pub fn new<F: Float>(opt: &mut dyn Optimizer<F>, f: impl Fn(usize) -> f64 + 'static) -> Result<LambdaLr> {
        if !f(0).is_finite() {
            return Err(Error::invalid(
                "LambdaLR",
                format!("the factor at position 0 is {}", f(0)),
            ));
        }
        Ok(started(opt, |pos| LambdaLr { pos, f: Box::new(f) }))
    }

    fn lr_at(&self, base: f64, e: usize) -> f64 {
        base * (self.f)(e)
    }
}

closed_form_schedule!(LambdaLr, "LambdaLR");
