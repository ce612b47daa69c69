//! Optimizers: plain structs over [`Param`]s that apply [`Grads`], with PyTorch's update rules.
//!
//! | optimizer | PyTorch | state per parameter |
//! |---|---|---|
//! | [`Sgd`] | `torch.optim.SGD` | `momentum_buffer` |
//! | [`Adam`] | `torch.optim.Adam` | `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq` |
//! | [`AdamW`] | `torch.optim.AdamW` | as Adam |
//! | [`RmsProp`] | `torch.optim.RMSprop` | `square_avg`, `grad_avg`, `momentum_buffer` |
//! | [`Adagrad`] | `torch.optim.Adagrad` | `sum` |
//! | [`Adadelta`] | `torch.optim.Adadelta` | `square_avg`, `acc_delta` |
//! | [`Adamax`] | `torch.optim.Adamax` | `exp_avg`, `exp_inf` |
//! | [`NAdam`] | `torch.optim.NAdam` | `exp_avg`, `exp_avg_sq` (`mu_product` from the step) |
//! | [`RAdam`] | `torch.optim.RAdam` | `exp_avg`, `exp_avg_sq` |
//!
//! [`ParamGroups`] puts several of one kind together as parameter groups with their own
//! options (PyTorch's list of dicts), e.g. no weight decay on biases ([`split_decay`]).
//!
//! Each is built from its parameters and a config struct whose `Default` is PyTorch's defaults,
//! and implements [`Optimizer`]: [`step`](Optimizer::step) updates every parameter that has a
//! gradient in place (through [`Param::update`]), in the parameters' own float type, and
//! reports the parameters that received none; those are skipped, their state untouched, as in
//! PyTorch. [`state`](Optimizer::state) and [`load_state`](Optimizer::load_state) save and
//! restore the position (learning rate, per-parameter step counts and buffers) as an
//! [`OptimState`] of `f64` arrays, so a checkpoint can store it; a restored optimizer continues
//! bit-identically.
//!
//! ```
//! use eddy_nn::optim::{Optimizer, Sgd, SgdConfig};
//! use eddy_tape::{Grads, Param};
//! use ndarray::arr1;
//!
//! let w = Param::new("w", arr1(&[1.0f64, 2.0]).into_dyn());
//! let mut opt = Sgd::new(vec![w.clone()], SgdConfig { lr: 0.5, ..SgdConfig::default() })?;
//! let mut grads = Grads::default();
//! grads.set_param(&w, arr1(&[1.0, -1.0]).into_dyn());
//! let report = opt.step(&grads)?;
//! assert!(report.no_grad.is_empty());
//! assert_eq!(w.value().as_slice().unwrap(), &[0.5, 2.5]);
//! # Ok::<(), eddy_tape::Error>(())
//! ```

mod adadelta;
mod adagrad;
mod adam;
mod adamax;
mod adamw;
mod groups;
mod nadam;
mod radam;
mod rmsprop;
mod sgd;

pub use adadelta::{Adadelta, AdadeltaConfig};
pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig};
pub use adamax::{Adamax, AdamaxConfig};
pub use adamw::{AdamW, AdamWConfig};
pub use groups::{split_decay, ParamGroups};
pub use nadam::{NAdam, NAdamConfig};
pub use radam::{RAdam, RAdamConfig};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};

use eddy_tape::{Error, Float, Grads, Param, Result};
use ndarray::ArrayD;
use std::collections::{BTreeMap, HashSet};

/// An optimizer: applies gradients to its parameters, has a learning rate, saves its state.
pub trait Optimizer<F: Float> {
    /// Updates every parameter that has a gradient in `grads`, in place.
    ///
    /// # Errors
    /// [`Error::Shape`] if a gradient's shape (or a buffer's, after [`Param::set`]) differs from
    /// its parameter's; nothing is updated then.
    fn step(&mut self, grads: &Grads<F>) -> Result<StepReport>;
    /// The learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (of every parameter group).
    fn set_lr(&mut self, lr: f64);
    /// The learning rate of each parameter group: one for a plain optimizer, one per group for
    /// [`ParamGroups`]. Schedules read their base rates here.
    fn group_lrs(&self) -> Vec<f64> {
        vec![self.lr()]
    }
    /// Sets the learning rate of each parameter group (schedules call this); `lrs` has one
    /// entry per group, as [`Optimizer::group_lrs`] gives them.
    fn set_group_lrs(&mut self, lrs: &[f64]) {
        if let Some(&lr) = lrs.first() {
            self.set_lr(lr);
        }
    }
    /// The parameters, in the order the state keys number them.
    fn params(&self) -> &[Param<F>];
    /// The position: learning rate, step counts and buffers.
    fn state(&self) -> OptimState;
    /// Restores a position saved by [`Optimizer::state`] of the same optimizer over parameters
    /// of the same shapes.
    ///
    /// # Errors
    /// [`Error::Invalid`] for another optimizer's state, another number of parameters, a
    /// missing learning rate or an unknown key; [`Error::Shape`] for a buffer of another shape.
    /// Nothing is changed on error.
    fn load_state(&mut self, state: OptimState) -> Result<()>;
}

/// What a step did: the names of the parameters that received no gradient (and were skipped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepReport {
    /// Names of the parameters without a gradient, in parameter order.
    pub no_grad: Vec<String>,
}

/// A saved optimizer position, plain data for a checkpoint.
///
/// Keys: `"lr"` among the scalars; per parameter `i` (its index in
/// [`Optimizer::params`]) the scalar `"{i}.step"` and buffers such as `"{i}.exp_avg"` (PyTorch's
/// names). Buffers are `f64` whatever the parameters' type, which holds `f32` values exactly.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OptimState {
    /// Which optimizer saved it (`"Adam"`).
    pub optimizer: String,
    /// Scalars: the learning rate, step counts.
    pub scalars: BTreeMap<String, f64>,
    /// Per-parameter buffers.
    pub buffers: BTreeMap<String, ArrayD<f64>>,
}

/// The parameters of an optimizer and their per-parameter state: a step count and a fixed
/// list of named buffers, each created on the parameter's first update.
#[derive(Debug, Clone)]
pub(crate) struct Slots<F: Float> {
    pub(crate) params: Vec<Param<F>>,
    pub(crate) steps: Vec<u64>,
    /// `bufs[i][k]` is buffer `names[k]` of parameter `i`.
    pub(crate) bufs: Vec<Vec<Option<ArrayD<F>>>>,
    names: &'static [&'static str],
}

impl<F: Float> Slots<F> {
    /// Slots for `params`, refusing a parameter listed twice (it would be updated twice).
    pub(crate) fn new(op: &str, params: Vec<Param<F>>, names: &'static [&'static str]) -> Result<Slots<F>> {
        let mut seen = HashSet::new();
        if let Some(p) = params.iter().find(|p| !seen.insert(p.id())) {
            return Err(Error::invalid(
                op,
                format!("parameter {:?} is listed more than once", p.name()),
            ));
        }
        let n = params.len();
        Ok(Slots {
            params,
            steps: vec![0; n],
            bufs: vec![vec![None; names.len()]; n],
            names,
        })
    }

    /// The gradient of each parameter (`None` if it has none), after checking every shape, and
    /// the report of those without one.
    pub(crate) fn gather<'g>(
        &self,
        op: &str,
        grads: &'g Grads<F>,
    ) -> Result<(Vec<Option<&'g ArrayD<F>>>, StepReport)> {
        let mut report = StepReport::default();
        let mut found = Vec::with_capacity(self.params.len());
        for (i, p) in self.params.iter().enumerate() {
            let g = grads.param(p);
            let shape = p.shape();
            match g {
                None => report.no_grad.push(p.name().to_string()),
                Some(g) if g.shape() != shape.as_slice() => {
                    return Err(Error::shape(
                        op,
                        &[&shape, g.shape()],
                        format!("the gradient of parameter {:?} has another shape", p.name()),
                    ))
                }
                Some(_) => {}
            }
            for (k, b) in self.bufs[i].iter().enumerate() {
                if let Some(b) = b.as_ref().filter(|b| b.shape() != shape.as_slice()) {
                    return Err(Error::shape(
                        op,
                        &[&shape, b.shape()],
                        format!(
                            "parameter {:?} changed shape since its {} was made",
                            p.name(),
                            self.names[k]
                        ),
                    ));
                }
            }
            found.push(g);
        }
        Ok((found, report))
    }

    /// Saves the steps and buffers, and `lr`, under `optimizer`'s name.
    pub(crate) fn save(&self, optimizer: &str, lr: f64) -> OptimState {
        let mut state = OptimState {
            optimizer: optimizer.to_string(),
            ..OptimState::default()
        };
        state.scalars.insert("lr".into(), lr);
        for (i, (step, bufs)) in self.steps.iter().zip(&self.bufs).enumerate() {
            state.scalars.insert(format!("{i}.step"), *step as f64);
            for (name, b) in self.names.iter().zip(bufs) {
                if let Some(b) = b {
                    state
                        .buffers
                        .insert(format!("{i}.{name}"), b.mapv(|v| v.as_f64()));
                }
            }
        }
        state
    }

    /// Checks `state` against these parameters and, if it fits, takes its steps and buffers;
    /// returns its learning rate.
    pub(crate) fn load(&mut self, optimizer: &str, state: &OptimState) -> Result<f64> {
        let op = "load_state";
        if state.optimizer != optimizer {
            return Err(Error::invalid(
                op,
                format!(
                    "a state of {:?} cannot be loaded into {optimizer}",
                    state.optimizer
                ),
            ));
        }
        let lr = *state
            .scalars
            .get("lr")
            .ok_or_else(|| Error::invalid(op, "the state has no \"lr\""))?;
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::invalid(
                op,
                format!("scalar \"lr\" must be finite and >= 0, got {lr}"),
            ));
        }
        let n = self.params.len();
        let mut steps = vec![0u64; n];
        let mut bufs: Vec<Vec<Option<ArrayD<F>>>> = vec![vec![None; self.names.len()]; n];
        for (key, &v) in &state.scalars {
            if key == "lr" {
                continue;
            }
            let (i, rest) = self.split_key(key)?;
            if rest != "step" {
                return Err(Error::invalid(op, format!("unexpected scalar {key:?} = {v}")));
            }
            steps[i] = whole_count(v).ok_or_else(|| {
                Error::invalid(
                    op,
                    format!("step count {key:?} must be a whole number in [0, 2^53], got {v}"),
                )
            })?;
        }
        for (key, b) in &state.buffers {
            let (i, rest) = self.split_key(key)?;
            let k = self
                .names
                .iter()
                .position(|name| *name == rest)
                .ok_or_else(|| Error::invalid(op, format!("{optimizer} has no buffer {key:?}")))?;
            let shape = self.params[i].shape();
            if b.shape() != shape.as_slice() {
                return Err(Error::shape(
                    op,
                    &[&shape, b.shape()],
                    format!(
                        "buffer {key:?} does not fit parameter {:?}",
                        self.params[i].name()
                    ),
                ));
            }
            bufs[i][k] = Some(b.mapv(F::of));
        }
        self.steps = steps;
        self.bufs = bufs;
        Ok(lr)
    }

    /// Splits `"{i}.{rest}"`, checking that `i` names a parameter.
    fn split_key<'k>(&self, key: &'k str) -> Result<(usize, &'k str)> {
        let bad = || Error::invalid("load_state", format!("unexpected key {key:?}"));
        let (i, rest) = key.split_once('.').ok_or_else(bad)?;
        let i: usize = i.parse().map_err(|_| bad())?;
        if i >= self.params.len() {
            return Err(Error::invalid(
                "load_state",
                format!(
                    "key {key:?} names parameter {i}, but there are {}",
                    self.params.len()
                ),
            ));
        }
        Ok((i, rest))
    }
}

/// The largest count a checkpoint holds: 2⁵³, the last integer an `f64` stores exactly, far
/// beyond any real run and far from `u64` overflow when counting on.
pub const MAX_COUNT: u64 = 1 << 53;

/// `v` as a count if it is a whole number in `[0, MAX_COUNT]`.
pub(crate) fn whole_count(v: f64) -> Option<u64> {
    (v >= 0.0 && v.fract() == 0.0 && v <= MAX_COUNT as f64).then_some(v as u64)
}

/// Checks that a hyper-parameter is finite and at least `min`.
pub(crate) fn check_at_least(op: &str, name: &str, v: f64, min: f64) -> Result<()> {
    if v.is_finite() && v >= min {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("{name} must be finite and >= {min}, got {v}"),
        ))
    }
}

/// Checks that a decay rate is in `[0, 1)`.
pub(crate) fn check_unit(op: &str, name: &str, v: f64) -> Result<()> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::invalid(op, format!("{name} must be in [0, 1), got {v}")))
    }
}

/// PyTorch's `lerp` kernel: `a + w·(b − a)`, or `b − (b − a)·(1 − w)` for `|w| ≥ ½`.
#[inline]
pub(crate) fn lerp<F: Float>(a: F, b: F, w: F) -> F {
    if w.abs() < F::of(0.5) {
        a + w * (b - a)
    } else {
        b - (b - a) * (F::one() - w)
    }
}
