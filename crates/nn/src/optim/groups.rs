//! Parameter groups: one optimizer whose parameters fall into groups with their own options,
//! as `torch.optim` takes a list of `{"params": …, "lr": …, "weight_decay": …}` dicts.

use super::{OptimState, Optimizer, StepReport};
use eddy_tape::{Error, Float, Grads, Param, Result};
use std::collections::HashSet;

/// An optimizer over several parameter groups, each an optimizer of one kind with its own
/// hyper-parameters (learning rate, weight decay, betas, …): `torch.optim.Adam([{…}, {…}])`.
///
/// The groups are independent, as in PyTorch: each keeps its own per-parameter state and
/// learning rate. [`Optimizer::group_lrs`] has one rate per group, so a schedule moves each
/// group from its own base rate; [`Optimizer::set_lr`] sets every group's. The saved state
/// holds each group's under the prefix `"{group}/"` (`"0/lr"`, `"1/0.exp_avg"`), and
/// [`Optimizer::params`] lists the groups' parameters group after group.
///
/// ```
/// use eddy_nn::optim::{split_decay, AdamW, AdamWConfig, Optimizer, ParamGroups};
/// use eddy_nn::{Linear, Module};
/// use eddy_tape::Rng;
///
/// let layer = Linear::<f32>::new(4, 2, &mut Rng::seed(0));
/// // Weight decay on the weight matrix only, none on the bias.
/// let (decay, no_decay) = split_decay(layer.param_list());
/// let cfg = AdamWConfig { lr: 1e-3, weight_decay: 0.01, ..AdamWConfig::default() };
/// let mut opt = ParamGroups::new(vec![
///     Box::new(AdamW::new(decay, cfg)?),
///     Box::new(AdamW::new(no_decay, AdamWConfig { weight_decay: 0.0, ..cfg })?),
/// ])?;
/// assert_eq!(opt.group_lrs(), vec![1e-3, 1e-3]);
/// opt.set_group_lrs(&[1e-3, 5e-4]);
/// assert_eq!(opt.params().len(), 2);
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub struct ParamGroups<F: Float = f32> {
    groups: Vec<Box<dyn Optimizer<F>>>,
    params: Vec<Param<F>>,
    name: String,
}

impl<F: Float> std::fmt::Debug for ParamGroups<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamGroups")
            .field("name", &self.name)
            .field("group_lrs", &self.group_lrs())
            .finish_non_exhaustive()
    }
}

const OP: &str = "ParamGroups";

impl<F: Float> ParamGroups<F> {
    /// The groups, in order: optimizers of one kind over disjoint parameters.
    ///
    /// # Errors
    /// [`Error::Invalid`] for no groups, groups of different optimizers, or a parameter in two
    /// groups.
    pub fn new(groups: Vec<Box<dyn Optimizer<F>>>) -> Result<ParamGroups<F>> {
        let kind = match groups.first() {
            Some(g) => g.state().optimizer,
            None => return Err(Error::invalid(OP, "needs at least one group")),
        };
        if let Some(other) = groups.iter().map(|g| g.state().optimizer).find(|k| *k != kind) {
            return Err(Error::invalid(
                OP,
                format!("the groups must be one optimizer, got {kind} and {other}"),
            ));
        }
        let mut seen = HashSet::new();
        let mut params = Vec::new();
        for (k, g) in groups.iter().enumerate() {
            for p in g.params() {
                if !seen.insert(p.id()) {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "parameter {:?} is in more than one group (again in group {k})",
                            p.name()
                        ),
                    ));
                }
                params.push(p.clone());
            }
        }
        let name = format!("{kind}[{} groups]", groups.len());
        Ok(ParamGroups { groups, params, name })
    }

    /// The number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no groups (never: [`ParamGroups::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Group `k`'s optimizer, if there is one.
    pub fn group(&self, k: usize) -> Option<&dyn Optimizer<F>> {
        self.groups.get(k).map(|g| g.as_ref())
    }

    /// Group `k`'s optimizer, to change its options, if there is one.
    pub fn group_mut(&mut self, k: usize) -> Option<&mut (dyn Optimizer<F> + 'static)> {
        self.groups.get_mut(k).map(|g| g.as_mut())
    }
}

/// Splits parameters into those to decay (rank ≥ 2: weight matrices, kernels) and those not to
/// (rank ≤ 1: biases, normalisation scales and shifts), the usual pair of groups for weight
/// decay. Order is kept within each.
pub fn split_decay<F: Float>(params: impl IntoIterator<Item = Param<F>>) -> (Vec<Param<F>>, Vec<Param<F>>) {
    params.into_iter().partition(|p| p.shape().len() >= 2)
}

impl<F: Float> Optimizer<F> for ParamGroups<F> {
    /// Steps every group. Every gradient's shape is checked first, so a wrong one changes
    /// nothing; a buffer whose parameter was reshaped is found by its group's own check, after
    /// the groups before it have stepped.
    fn step(&mut self, grads: &Grads<F>) -> Result<StepReport> {
        for p in &self.params {
            if let Some(g) = grads.param(p) {
                let shape = p.shape();
                if g.shape() != shape.as_slice() {
                    return Err(Error::shape(
                        OP,
                        &[&shape, g.shape()],
                        format!("the gradient of parameter {:?} has another shape", p.name()),
                    ));
                }
            }
        }
        let mut report = StepReport::default();
        for g in &mut self.groups {
            report.no_grad.extend(g.step(grads)?.no_grad);
        }
        Ok(report)
    }

    /// The first group's learning rate.
    fn lr(&self) -> f64 {
        self.groups[0].lr()
    }

    /// Sets every group's learning rate.
    fn set_lr(&mut self, lr: f64) {
        self.groups.iter_mut().for_each(|g| g.set_lr(lr));
    }

    fn group_lrs(&self) -> Vec<f64> {
        self.groups.iter().map(|g| g.lr()).collect()
    }

    fn set_group_lrs(&mut self, lrs: &[f64]) {
        for (g, &lr) in self.groups.iter_mut().zip(lrs) {
            g.set_lr(lr);
        }
    }

    fn params(&self) -> &[Param<F>] {
        &self.params
    }

    fn state(&self) -> OptimState {
        let mut state = OptimState {
            optimizer: self.name.clone(),
            ..OptimState::default()
        };
        for (k, g) in self.groups.iter().enumerate() {
            let s = g.state();
            state
                .scalars
                .extend(s.scalars.into_iter().map(|(key, v)| (format!("{k}/{key}"), v)));
            state
                .buffers
                .extend(s.buffers.into_iter().map(|(key, v)| (format!("{k}/{key}"), v)));
        }
        state
    }

    fn load_state(&mut self, state: OptimState) -> Result<()> {
        let op = "load_state";
        if state.optimizer != self.name {
            return Err(Error::invalid(
                op,
                format!(
                    "a state of {:?} cannot be loaded into {}",
                    state.optimizer, self.name
                ),
            ));
        }
        let kind = self.groups[0].state().optimizer;
        let mut parts: Vec<OptimState> = (0..self.groups.len())
            .map(|_| OptimState {
                optimizer: kind.clone(),
                ..OptimState::default()
            })
            .collect();
        let n = self.groups.len();
        let group_of = |key: &str| -> Result<(usize, String)> {
            let bad = || {
                Error::invalid(
                    op,
                    format!("unexpected key {key:?}: not \"{{group}}/…\" of {n} groups"),
                )
            };
            let (k, rest) = key.split_once('/').ok_or_else(bad)?;
            let k: usize = k.parse().map_err(|_| bad())?;
            if k >= n {
                return Err(bad());
            }
            Ok((k, rest.to_string()))
        };
        for (key, v) in state.scalars {
            let (k, rest) = group_of(&key)?;
            parts[k].scalars.insert(rest, v);
        }
        for (key, v) in state.buffers {
            let (k, rest) = group_of(&key)?;
            parts[k].buffers.insert(rest, v);
        }
        // Nothing changes on error: the groups loaded so far get their old state back.
        let old: Vec<OptimState> = self.groups.iter().map(|g| g.state()).collect();
        for (k, part) in parts.into_iter().enumerate() {
            if let Err(e) = self.groups[k].load_state(part) {
                for (g, o) in self.groups.iter_mut().zip(old).take(k) {
                    g.load_state(o).expect("its own state loads");
                }
                return Err(e.context(format!("parameter group {k}")));
            }
        }
        Ok(())
    }
}
