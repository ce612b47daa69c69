//! The cyclical schedules, `OneCycleLR` and `CyclicLR`, whose learning rates are given by
//! their own bounds rather than by the optimizer's.
//!
//! Both take their bounds per parameter group (a slice with one entry per group, or a single
//! entry for every group, as PyTorch takes a float or a list). PyTorch also cycles the momentum
//! by default (`cycle_momentum=True`); eddy cycles the learning rate only, which is PyTorch's
//! `cycle_momentum=False`.

use super::{whole, Schedule};
use crate::optim::Optimizer;
use eddy_tape::{Error, Float, Result};
use std::f64::consts::PI;

/// One bound per group: `values` as given, or its single entry repeated.
fn per_group(op: &str, what: &str, values: &[f64], groups: usize) -> Result<Vec<f64>> {
    let v = match values.len() {
        1 => vec![values[0]; groups],
        n if n == groups => values.to_vec(),
        n => {
            return Err(Error::invalid(
                op,
                format!("expected 1 or {groups} values of {what} (one per parameter group), got {n}"),
            ))
        }
    };
    if let Some(x) = v.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
        return Err(Error::invalid(
            op,
            format!("{what} must be finite and >= 0, got {x}"),
        ));
    }
    Ok(v)
}

/// Loads `[position, x₀, x₁, …]` with one `x` per group.
fn load_position(op: &str, state: &[f64], groups: usize) -> Result<(usize, Vec<f64>)> {
    match state.split_first() {
        Some((&e, rest)) if whole(e) && rest.len() == groups && rest.iter().all(|v| v.is_finite()) => {
            Ok((e as usize, rest.to_vec()))
        }
        _ => Err(Error::invalid(
            op,
            format!("expected a state [position, one rate for each of {groups} groups], got {state:?}"),
        )),
    }
}

fn check_groups(op: &str, got: &[f64], groups: usize) -> Result<()> {
    if got.len() == groups && got.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("expected {groups} finite base learning rates, got {got:?}"),
        ))
    }
}

/// How [`OneCycleLr`] moves between its rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnnealStrategy {
    /// Half a cosine, `end + (start − end)(1 + cos(π·pct))/2`. PyTorch's default.
    #[default]
    Cos,
    /// A straight line, `start + (end − start)·pct`.
    Linear,
}

/// The options of [`OneCycleLr`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycleConfig {
    /// The fraction of the steps spent rising. Default `0.3`.
    pub pct_start: f64,
    /// How the rate moves. Default [`AnnealStrategy::Cos`].
    pub anneal_strategy: AnnealStrategy,
    /// The first rate is `max_lr / div_factor`. Default 25.
    pub div_factor: f64,
    /// The last rate is `max_lr / (div_factor · final_div_factor)`. Default `1e4`.
    pub final_div_factor: f64,
    /// Rise, fall back to the first rate, then anneal to the last (fast.ai's form) instead of
    /// rise then anneal. Default false.
    pub three_phase: bool,
}

impl Default for OneCycleConfig {
    fn default() -> Self {
        OneCycleConfig {
            pct_start: 0.3,
            anneal_strategy: AnnealStrategy::Cos,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }
}

/// The 1cycle policy: from `max_lr/div_factor` up to `max_lr` over the first `pct_start` of
/// `total_steps`, then down to `max_lr/(div_factor·final_div_factor)`, as PyTorch's
/// `OneCycleLR` (stepped once per batch). Past `total_steps` (where PyTorch raises) the rate
/// stays at its position-`total_steps` value.
#[derive(Debug, Clone, PartialEq)]
pub struct OneCycleLr {
    epoch: usize,
    max_lrs: Vec<f64>,
    total_steps: usize,
    config: OneCycleConfig,
}

impl OneCycleLr {
    /// A one-cycle schedule over `total_steps`, peaking at `max_lr` (one per parameter group
    /// of `opt`, or one for all); sets `opt`'s rates to the first ones.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `total_steps` 0, a `pct_start` outside `[0, 1]`, a non-positive
    /// or non-finite factor, or a wrong number of `max_lr`s.
    pub fn new<F: Float>(
        opt: &mut dyn Optimizer<F>,
        max_lr: &[f64],
        total_steps: usize,
        config: OneCycleConfig,
    ) -> Result<OneCycleLr> {
        let op = "OneCycleLR";
        let max_lrs = per_group(op, "max_lr", max_lr, opt.group_lrs().len())?;
        if total_steps == 0 || !(0.0..=1.0).contains(&config.pct_start) {
            return Err(Error::invalid(
                op,
                format!(
                    "needs total_steps > 0 and pct_start in [0, 1], got {total_steps} and {}",
                    config.pct_start
                ),
            ));
        }
        for (name, v) in [
            ("div_factor", config.div_factor),
            ("final_div_factor", config.final_div_factor),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(
                    op,
                    format!("{name} must be finite and > 0, got {v}"),
                ));
            }
        }
        let s = OneCycleLr {
            epoch: 0,
            max_lrs,
            total_steps,
            config,
        };
        opt.set_group_lrs(&s.lrs());
        Ok(s)
    }

    fn anneal(&self, start: f64, end: f64, pct: f64) -> f64 {
        match self.config.anneal_strategy {
            AnnealStrategy::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
            AnnealStrategy::Linear => (end - start) * pct + start,
        }
    }

    fn lr_at(&self, max_lr: f64) -> f64 {
        let c = &self.config;
        let initial = max_lr / c.div_factor;
        let min = initial / c.final_div_factor;
        let total = self.total_steps as f64;
        // (end step, start rate, end rate) of each phase, as PyTorch lays them out.
        let phases: Vec<(f64, f64, f64)> = if c.three_phase {
            vec![
                (c.pct_start * total - 1.0, initial, max_lr),
                (2.0 * c.pct_start * total - 2.0, max_lr, initial),
                (total - 1.0, initial, min),
            ]
        } else {
            vec![
                (c.pct_start * total - 1.0, initial, max_lr),
                (total - 1.0, max_lr, min),
            ]
        };
        let step = self.epoch.min(self.total_steps) as f64;
        let mut start_step = 0.0;
        for (i, &(end_step, from, to)) in phases.iter().enumerate() {
            if step <= end_step || i == phases.len() - 1 {
                let pct = (step - start_step) / (end_step - start_step);
                return self.anneal(from, to, pct);
            }
            start_step = end_step;
        }
        unreachable!("the last phase always answers")
    }
}

impl Schedule for OneCycleLr {
    fn lrs(&self) -> Vec<f64> {
        self.max_lrs.iter().map(|&m| self.lr_at(m)).collect()
    }
    fn position(&self) -> usize {
        self.epoch
    }
    fn seek(&mut self, e: usize) {
        self.epoch = e;
    }
    /// The first rates, `max_lr / div_factor`.
    fn base_lrs(&self) -> Vec<f64> {
        self.max_lrs.iter().map(|m| m / self.config.div_factor).collect()
    }
    /// Checks the number of groups only: the rates come from `max_lr`.
    fn set_base_lrs(&mut self, base_lrs: &[f64]) -> Result<()> {
        check_groups("OneCycleLR", base_lrs, self.max_lrs.len())
    }
    /// `[position, max_lr of each group]`.
    fn state(&self) -> Vec<f64> {
        let mut s = vec![self.epoch as f64];
        s.extend(&self.max_lrs);
        s
    }
    fn load_state(&mut self, state: &[f64]) -> Result<()> {
        (self.epoch, self.max_lrs) = load_position("OneCycleLR", state, self.max_lrs.len())?;
        Ok(())
    }
}

/// The shape of [`CyclicLr`]'s cycles.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum CyclicMode {
    /// Every cycle the same triangle. PyTorch's default.
    #[default]
    Triangular,
    /// Each cycle's height half the last one's.
    Triangular2,
    /// The height scaled by `gammaᵉ` at position `e`.
    ExpRange {
        /// The per-position factor.
        gamma: f64,
    },
}

/// The options of [`CyclicLr`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CyclicConfig {
    /// Positions from the lower to the upper bound. Default 2000.
    pub step_size_up: usize,
    /// Positions back down; `None` means `step_size_up`. Default `None`.
    pub step_size_down: Option<usize>,
    /// The cycle's shape. Default [`CyclicMode::Triangular`].
    pub mode: CyclicMode,
}

impl Default for CyclicConfig {
    fn default() -> Self {
        CyclicConfig {
            step_size_up: 2000,
            step_size_down: None,
            mode: CyclicMode::Triangular,
        }
    }
}

/// Cyclical learning rates (Smith 2017): triangles between `base_lr` and `max_lr`, as PyTorch's
/// `CyclicLR` (stepped once per batch).
#[derive(Debug, Clone, PartialEq)]
pub struct CyclicLr {
    epoch: usize,
    base_lrs: Vec<f64>,
    max_lrs: Vec<f64>,
    config: CyclicConfig,
}

impl CyclicLr {
    /// Cycles between `base_lr` and `max_lr` (each one per parameter group of `opt`, or one
    /// for all); sets `opt`'s rates to `base_lr`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a wrong number of bounds, a negative or non-finite bound, a cycle
    /// of length 0 or a non-finite `gamma`.
    pub fn new<F: Float>(
        opt: &mut dyn Optimizer<F>,
        base_lr: &[f64],
        max_lr: &[f64],
        config: CyclicConfig,
    ) -> Result<CyclicLr> {
        let op = "CyclicLR";
        let groups = opt.group_lrs().len();
        let base_lrs = per_group(op, "base_lr", base_lr, groups)?;
        let max_lrs = per_group(op, "max_lr", max_lr, groups)?;
        let down = config.step_size_down.unwrap_or(config.step_size_up);
        if config.step_size_up + down == 0 {
            return Err(Error::invalid(op, "the cycle has length 0"));
        }
        if let CyclicMode::ExpRange { gamma } = config.mode {
            if !gamma.is_finite() {
                return Err(Error::invalid(op, format!("gamma must be finite, got {gamma}")));
            }
        }
        let s = CyclicLr {
            epoch: 0,
            base_lrs,
            max_lrs,
            config,
        };
        opt.set_group_lrs(&s.lrs());
        Ok(s)
    }
}

impl Schedule for CyclicLr {
    fn lrs(&self) -> Vec<f64> {
        let c = &self.config;
        let up = c.step_size_up as f64;
        let total = up + c.step_size_down.unwrap_or(c.step_size_up) as f64;
        let ratio = up / total;
        let e = self.epoch as f64;
        let cycle = (1.0 + e / total).floor();
        let x = 1.0 + e / total - cycle;
        let scale = if x <= ratio {
            x / ratio
        } else {
            (x - 1.0) / (ratio - 1.0)
        };
        let height = match c.mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2f64.powf(cycle - 1.0),
            CyclicMode::ExpRange { gamma } => gamma.powf(e),
        };
        self.base_lrs
            .iter()
            .zip(&self.max_lrs)
            .map(|(&b, &m)| b + (m - b) * scale * height)
            .collect()
    }
    fn position(&self) -> usize {
        self.epoch
    }
    fn seek(&mut self, e: usize) {
        self.epoch = e;
    }
    /// The lower bounds.
    fn base_lrs(&self) -> Vec<f64> {
        self.base_lrs.clone()
    }
    fn set_base_lrs(&mut self, base_lrs: &[f64]) -> Result<()> {
        check_groups("CyclicLR", base_lrs, self.base_lrs.len())?;
        self.base_lrs = base_lrs.to_vec();
        Ok(())
    }
    /// `[position, lower bound of each group]`.
    fn state(&self) -> Vec<f64> {
        let mut s = vec![self.epoch as f64];
        s.extend(&self.base_lrs);
        s
    }
    fn load_state(&mut self, state: &[f64]) -> Result<()> {
        (self.epoch, self.base_lrs) = load_position("CyclicLR", state, self.base_lrs.len())?;
        Ok(())
    }
}
