//! `SequentialLR`: schedules one after another.

use super::{whole, Schedule};
use crate::optim::Optimizer;
use eddy_tape::{Error, Float, Result};
use std::fmt;

/// Runs `schedules[0]` until the first milestone, then `schedules[1]` restarted at position 0,
/// and so on, as PyTorch's `SequentialLR`: at position `e` it is schedule `i` (the number of
/// milestones `≤ e`) at position `e − milestones[i−1]`. Every schedule starts from the
/// optimizer's initial learning rates (the first schedule's bases), whatever the others'
/// constructors did to the optimizer.
///
/// ```
/// use eddy_nn::optim::{Optimizer, Sgd, SgdConfig};
/// use eddy_nn::schedule::{CosineAnnealingLr, LinearWarmup, Schedule, SequentialLr};
/// use eddy_tape::Param;
///
/// let mut opt = Sgd::<f64>::new(Vec::<Param<f64>>::new(), SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
/// // Warm up over 5 positions, then a cosine over 20.
/// let warmup = LinearWarmup::new(&mut opt, 0.1, 5)?;
/// let cosine = CosineAnnealingLr::new(&mut opt, 20, 0.0)?;
/// let mut s = SequentialLr::new(&mut opt, vec![Box::new(warmup), Box::new(cosine)], &[5])?;
/// assert!((opt.lr() - 0.01).abs() < 1e-15);
/// for _ in 0..5 {
///     s.step(&mut opt);
/// }
/// assert_eq!(opt.lr(), 0.1); // the cosine's start
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub struct SequentialLr {
    epoch: usize,
    schedules: Vec<Box<dyn Schedule>>,
    milestones: Vec<usize>,
}

impl fmt::Debug for SequentialLr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SequentialLr")
            .field("epoch", &self.epoch)
            .field("milestones", &self.milestones)
            .finish_non_exhaustive()
    }
}

const NAME: &str = "SequentialLR";

impl SequentialLr {
    /// Chains `schedules`, switching at the `milestones` (one fewer than the schedules, in
    /// increasing order); sets `opt`'s rates to the first schedule's at position 0.
    ///
    /// # Errors
    /// [`Error::Invalid`] for no schedules, a wrong number of milestones or milestones out of
    /// order, and the schedules' own errors for another number of groups.
    pub fn new<F: Float>(
        opt: &mut dyn Optimizer<F>,
        mut schedules: Vec<Box<dyn Schedule>>,
        milestones: &[usize],
    ) -> Result<SequentialLr> {
        if schedules.is_empty() || milestones.len() + 1 != schedules.len() {
            return Err(Error::invalid(
                NAME,
                format!(
                    "needs one milestone fewer than schedules, got {} schedules and {} milestones",
                    schedules.len(),
                    milestones.len()
                ),
            ));
        }
        if milestones.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::invalid(
                NAME,
                format!("milestones must be in increasing order, got {milestones:?}"),
            ));
        }
        let initial = schedules[0].base_lrs();
        for s in &mut schedules {
            s.set_base_lrs(&initial)?;
            s.seek(0);
        }
        let s = SequentialLr {
            epoch: 0,
            schedules,
            milestones: milestones.to_vec(),
        };
        opt.set_group_lrs(&s.lrs());
        Ok(s)
    }

    /// The index of the schedule in charge at position `e`, and its position.
    fn current(&self, e: usize) -> (usize, usize) {
        let i = self.milestones.partition_point(|&m| m <= e);
        (i, if i == 0 { e } else { e - self.milestones[i - 1] })
    }
}

impl Schedule for SequentialLr {
    fn lrs(&self) -> Vec<f64> {
        self.schedules[self.current(self.epoch).0].lrs()
    }
    fn position(&self) -> usize {
        self.epoch
    }
    fn seek(&mut self, e: usize) {
        self.epoch = e;
        let (i, local) = self.current(e);
        self.schedules[i].seek(local);
    }
    fn base_lrs(&self) -> Vec<f64> {
        self.schedules[0].base_lrs()
    }
    fn set_base_lrs(&mut self, base_lrs: &[f64]) -> Result<()> {
        self.schedules
            .iter_mut()
            .try_for_each(|s| s.set_base_lrs(base_lrs))
    }
    /// `[position, then for each schedule: the length of its state, its state]`.
    fn state(&self) -> Vec<f64> {
        let mut out = vec![self.epoch as f64];
        for s in &self.schedules {
            let st = s.state();
            out.push(st.len() as f64);
            out.extend(st);
        }
        out
    }
    fn load_state(&mut self, state: &[f64]) -> Result<()> {
        let bad = || {
            Error::invalid(
                NAME,
                format!(
                    "expected a state [position, then a length and a state for each of {} schedules], got {state:?}",
                    self.schedules.len()
                ),
            )
        };
        let (&e, mut rest) = state.split_first().ok_or_else(bad)?;
        if !whole(e) {
            return Err(bad());
        }
        let mut parts = Vec::with_capacity(self.schedules.len());
        for _ in &self.schedules {
            let (&n, tail) = rest.split_first().ok_or_else(bad)?;
            if !whole(n) || n as usize > tail.len() {
                return Err(bad());
            }
            parts.push(&tail[..n as usize]);
            rest = &tail[n as usize..];
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        // Load into copies first, so that nothing changes on error.
        let old: Vec<Vec<f64>> = self.schedules.iter().map(|s| s.state()).collect();
        for (k, part) in parts.iter().enumerate() {
            if let Err(err) = self.schedules[k].load_state(part) {
                for (s, o) in self.schedules.iter_mut().zip(&old).take(k) {
                    s.load_state(o).expect("its own state loads");
                }
                return Err(err);
            }
        }
        self.seek(e as usize);
        Ok(())
    }
}
