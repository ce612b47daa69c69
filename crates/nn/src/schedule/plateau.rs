//! `ReduceLROnPlateau`: a schedule driven by a metric rather than by the position.

use crate::optim::Optimizer;
use eddy_tape::{Error, Float, Result};

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

    /// Records the metric of an epoch and reduces `opt`'s learning rates (each group's) if it
    /// has plateaued. Returns whether it reduced any. A NaN metric counts as no improvement.
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
            // Each parameter group is reduced on its own, as PyTorch does.
            let mut lrs = opt.group_lrs();
            let mut reduced = false;
            for old in &mut lrs {
                let new = (*old * c.factor).max(c.min_lr);
                if *old - new > c.eps {
                    *old = new;
                    reduced = true;
                }
            }
            if reduced {
                opt.set_group_lrs(&lrs);
            }
            return reduced;
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
