//! Adam, with AMSGrad and either L2 or decoupled weight decay.

use super::{check_at_least, check_unit, lerp, OptimState, Optimizer, Slots, StepReport};
use eddy_tape::{Float, Grads, Param, Result};
use ndarray::{ArrayD, Zip};

/// The hyper-parameters of [`Adam`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate. Default `1e-3`.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the moment estimates. Default `(0.9, 0.999)`.
    pub betas: (f64, f64),
    /// ε added to the denominator. Default `1e-8`.
    pub eps: f64,
    /// Weight decay λ. Default 0.
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (AMSGrad). Default false.
    pub amsgrad: bool,
    /// Decay the weights directly, `w ← w(1 − lr·λ)`, as AdamW, instead of adding `λw` to the
    /// gradient. Default false.
    pub decoupled_weight_decay: bool,
    /// Ascend instead of descend. Default false.
    pub maximize: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// Adam as `torch.optim.Adam`. For each parameter `w` with gradient `g`, at its step `t`:
///
/// ```text
/// g ← g + λw                      (L2 decay)   or   w ← w(1 − lr·λ)   (decoupled)
/// m ← m + (1 − β₁)(g − m)
/// v ← β₂v + (1 − β₂)g²
/// v̂ ← max(v̂, v) if amsgrad, else v
/// w ← w − lr/(1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + ε)
/// ```
#[derive(Debug, Clone)]
pub struct Adam<F: Float = f32> {
    config: AdamConfig,
    slots: Slots<F>,
    name: &'static str,
}

const BUFFERS: &[&str] = &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];

impl<F: Float> Adam<F> {
    /// Adam over `params`.
    ///
    /// # Errors
    /// [`Error::Invalid`](eddy_tape::Error::Invalid) for a negative or non-finite learning rate,
    /// ε or weight decay, a β outside `[0, 1)`, or a parameter listed twice.
    pub fn new(params: impl IntoIterator<Item = Param<F>>, config: AdamConfig) -> Result<Adam<F>> {
        Adam::named("Adam", params, config)
    }

    pub(crate) fn named(
        name: &'static str,
        params: impl IntoIterator<Item = Param<F>>,
        config: AdamConfig,
    ) -> Result<Adam<F>> {
        check_at_least(name, "lr", config.lr, 0.0)?;
        check_at_least(name, "eps", config.eps, 0.0)?;
        check_at_least(name, "weight_decay", config.weight_decay, 0.0)?;
        check_unit(name, "beta1", config.betas.0)?;
        check_unit(name, "beta2", config.betas.1)?;
        let slots = Slots::new(name, params.into_iter().collect(), BUFFERS)?;
        Ok(Adam { config, slots, name })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for Adam<F> {
    fn step(&mut self, grads: &Grads<F>) -> Result<StepReport> {
        let (found, report) = self.slots.gather(self.name, grads)?;
        let c = self.config;
        let (b1, b2) = c.betas;
        let (wd, eps) = (F::of(c.weight_decay), F::of(c.eps));
        let (one_minus_b1, one_minus_b2) = (F::of(1.0 - b1), F::of(1.0 - b2));
        let decay = F::of(1.0 - c.lr * c.weight_decay);
        for (i, g) in found.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let p = &self.slots.params[i];
            self.slots.steps[i] += 1;
            let t = self.slots.steps[i] as f64;
            let step_size = F::of(c.lr / (1.0 - b1.powf(t)));
            let bc2_sqrt = F::of((1.0 - b2.powf(t)).sqrt());
            let shape = p.shape();
            let [m, v, vmax] = self.slots.bufs[i].as_mut_slice() else {
                unreachable!("three buffers")
            };
            let m = m.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
            let v = v.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
            p.update(|w| {
                // The gradient as it is, copied only when it changes (maximizing, or the
                // weight decay added to it).
                let coupled = c.weight_decay != 0.0 && !c.decoupled_weight_decay;
                let mut d = match c.maximize || coupled {
                    true => std::borrow::Cow::Owned(if c.maximize { g.mapv(|x| -x) } else { g.clone() }),
                    false => std::borrow::Cow::Borrowed(g),
                };
                if coupled {
                    Zip::from(d.to_mut()).and(&*w).for_each(|d, &w| *d += wd * w);
                } else if c.weight_decay != 0.0 {
                    w.mapv_inplace(|x| x * decay);
                }
                Zip::from(&mut *m).and(&mut *v).and(&*d).for_each(|m, v, &d| {
                    *m = lerp(*m, d, one_minus_b1);
                    *v = *v * F::of(b2) + one_minus_b2 * d * d;
                });
                let second = if c.amsgrad {
                    let vmax = vmax.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
                    Zip::from(&mut *vmax).and(&*v).for_each(|a, &b| *a = a.max(b));
                    &*vmax
                } else {
                    &*v
                };
                Zip::from(w).and(&*m).and(second).for_each(|w, &m, &s| {
                    let denom = s.sqrt() / bc2_sqrt + eps;
                    *w += (-step_size) * m / denom;
                });
            });
        }
        Ok(report)
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn params(&self) -> &[Param<F>] {
        &self.slots.params
    }

    fn state(&self) -> OptimState {
        self.slots.save(self.name, self.config.lr)
    }

    fn load_state(&mut self, state: OptimState) -> Result<()> {
        self.config.lr = self.slots.load(self.name, &state)?;
        Ok(())
    }
}
