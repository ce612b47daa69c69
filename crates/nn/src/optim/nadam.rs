//! NAdam: Adam with Nesterov momentum and a momentum-decay schedule.

use super::{check_at_least, check_unit, lerp, OptimState, Optimizer, Slots, StepReport};
use eddy_tape::{Float, Grads, Param, Result};
use ndarray::{ArrayD, Zip};

/// The hyper-parameters of [`NAdam`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NAdamConfig {
    /// Learning rate. Default `2e-3`.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the moment estimates. Default `(0.9, 0.999)`.
    pub betas: (f64, f64),
    /// ε added to the denominator. Default `1e-8`.
    pub eps: f64,
    /// Weight decay λ. Default 0.
    pub weight_decay: f64,
    /// ψ of the momentum schedule `μₜ = β₁(1 − ½·0.96^(tψ))`. Default `4e-3`.
    pub momentum_decay: f64,
    /// Decay the weights directly, `w ← w(1 − lr·λ)`, instead of adding `λw` to the gradient
    /// (PyTorch's NAdamW form). Default false.
    pub decoupled_weight_decay: bool,
    /// Ascend instead of descend. Default false.
    pub maximize: bool,
}

impl Default for NAdamConfig {
    fn default() -> Self {
        NAdamConfig {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            momentum_decay: 4e-3,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// NAdam as `torch.optim.NAdam`. For each parameter `w` with gradient `g`, at its step `t`:
///
/// ```text
/// g ← g + λw                      (L2 decay)   or   w ← w(1 − lr·λ)   (decoupled)
/// μₜ = β₁(1 − ½·0.96^(tψ)),   Πₜ = μ₁⋯μₜ
/// m ← m + (1 − β₁)(g − m)
/// v ← β₂v + (1 − β₂)g²
/// d = √(v / (1 − β₂ᵗ)) + ε
/// w ← w − lr(1 − μₜ)/(1 − Πₜ) · g/d − lr·μₜ₊₁/(1 − Πₜμₜ₊₁) · m/d
/// ```
///
/// PyTorch keeps the product `Πₜ` as state (`mu_product`); eddy recomputes it from the step
/// count in the same order, so the saved state is the step count and the two moments.
#[derive(Debug, Clone)]
pub struct NAdam<F: Float = f32> {
    config: NAdamConfig,
    slots: Slots<F>,
}

const NAME: &str = "NAdam";

/// `μₜ = β₁(1 − ½·0.96^(tψ))`, as PyTorch computes it.
fn mu(beta1: f64, t: f64, psi: f64) -> f64 {
    beta1 * (1.0 - 0.5 * 0.96f64.powf(t * psi))
}

impl<F: Float> NAdam<F> {
    /// NAdam over `params`.
    ///
    /// # Errors
    /// [`Error::Invalid`](eddy_tape::Error::Invalid) for a negative or non-finite learning rate,
    /// ε, weight decay or momentum decay, a β outside `[0, 1)`, or a parameter listed twice.
    pub fn new(params: impl IntoIterator<Item = Param<F>>, config: NAdamConfig) -> Result<NAdam<F>> {
        check_at_least(NAME, "lr", config.lr, 0.0)?;
        check_at_least(NAME, "eps", config.eps, 0.0)?;
        check_at_least(NAME, "weight_decay", config.weight_decay, 0.0)?;
        check_at_least(NAME, "momentum_decay", config.momentum_decay, 0.0)?;
        check_unit(NAME, "beta1", config.betas.0)?;
        check_unit(NAME, "beta2", config.betas.1)?;
        let slots = Slots::new(NAME, params.into_iter().collect(), &["exp_avg", "exp_avg_sq"])?;
        Ok(NAdam { config, slots })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &NAdamConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for NAdam<F> {
    fn step(&mut self, grads: &Grads<F>) -> Result<StepReport> {
        let (found, report) = self.slots.gather(NAME, grads)?;
        let c = self.config;
        let (b1, b2) = c.betas;
        let (wd, eps) = (F::of(c.weight_decay), F::of(c.eps));
        let (one_minus_b1, one_minus_b2) = (F::of(1.0 - b1), F::of(1.0 - b2));
        let decay = F::of(1.0 - c.lr * c.weight_decay);
        for (i, g) in found.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let p = &self.slots.params[i];
            self.slots.steps[i] += 1;
            let steps = self.slots.steps[i];
            let t = steps as f64;
            let bc2 = F::of(1.0 - b2.powf(t));
            let mu_t = mu(b1, t, c.momentum_decay);
            let mu_next = mu(b1, t + 1.0, c.momentum_decay);
            let mu_product = (1..=steps).fold(1.0, |acc, s| acc * mu(b1, s as f64, c.momentum_decay));
            let grad_coef = F::of(-c.lr * (1.0 - mu_t) / (1.0 - mu_product));
            let avg_coef = F::of(-c.lr * mu_next / (1.0 - mu_product * mu_next));
            let shape = p.shape();
            let [m, v] = self.slots.bufs[i].as_mut_slice() else {
                unreachable!("two buffers")
            };
            let m = m.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
            let v = v.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
            p.update(|w| {
                let mut d = if c.maximize { g.mapv(|x| -x) } else { g.clone() };
                if c.weight_decay != 0.0 {
                    if c.decoupled_weight_decay {
                        w.mapv_inplace(|x| x * decay);
                    } else {
                        Zip::from(&mut d).and(&*w).for_each(|d, &w| *d += wd * w);
                    }
                }
                Zip::from(&mut *m).and(&mut *v).and(&d).for_each(|m, v, &d| {
                    *m = lerp(*m, d, one_minus_b1);
                    *v = *v * F::of(b2) + one_minus_b2 * d * d;
                });
                Zip::from(w).and(&d).and(&*m).and(&*v).for_each(|w, &d, &m, &v| {
                    let denom = (v / bc2).sqrt() + eps;
                    *w += grad_coef * d / denom;
                    *w += avg_coef * m / denom;
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
        self.slots.save(NAME, self.config.lr)
    }

    fn load_state(&mut self, state: OptimState) -> Result<()> {
        self.config.lr = self.slots.load(NAME, &state)?;
        Ok(())
    }
}
