//! RAdam: Adam with the variance of the adaptive learning rate rectified.

use super::{check_at_least, check_unit, lerp, OptimState, Optimizer, Slots, StepReport};
use eddy_tape::{Float, Grads, Param, Result};
use ndarray::{ArrayD, Zip};

/// The hyper-parameters of [`RAdam`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RAdamConfig {
    /// Learning rate. Default `1e-3`.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the moment estimates. Default `(0.9, 0.999)`.
    pub betas: (f64, f64),
    /// ε added to the denominator. Default `1e-8`.
    pub eps: f64,
    /// Weight decay λ. Default 0.
    pub weight_decay: f64,
    /// Decay the weights directly, `w ← w(1 − lr·λ)`, instead of adding `λw` to the gradient
    /// (PyTorch's RAdamW form). Default false.
    pub decoupled_weight_decay: bool,
    /// Ascend instead of descend. Default false.
    pub maximize: bool,
}

impl Default for RAdamConfig {
    fn default() -> Self {
        RAdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// RAdam as `torch.optim.RAdam`. For each parameter `w` with gradient `g`, at its step `t`:
///
/// ```text
/// g ← g + λw                      (L2 decay)   or   w ← w(1 − lr·λ)   (decoupled)
/// m ← m + (1 − β₁)(g − m)
/// v ← β₂v + (1 − β₂)g²
/// ρ∞ = 2/(1 − β₂) − 1,   ρₜ = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ)
/// m̂ = m/(1 − β₁ᵗ)
/// w ← w − lr · m̂ · r · √(1 − β₂ᵗ)/(√v + ε)   if ρₜ > 5, with r = √((ρₜ−4)(ρₜ−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρₜ))
/// w ← w − lr · m̂                              otherwise (the first steps: plain momentum)
/// ```
#[derive(Debug, Clone)]
pub struct RAdam<F: Float = f32> {
    config: RAdamConfig,
    slots: Slots<F>,
}

const NAME: &str = "RAdam";

impl<F: Float> RAdam<F> {
    /// RAdam over `params`.
    ///
    /// # Errors
    /// [`Error::Invalid`](eddy_tape::Error::Invalid) for a negative or non-finite learning rate,
    /// ε or weight decay, a β outside `[0, 1)`, or a parameter listed twice.
    pub fn new(params: impl IntoIterator<Item = Param<F>>, config: RAdamConfig) -> Result<RAdam<F>> {
        check_at_least(NAME, "lr", config.lr, 0.0)?;
        check_at_least(NAME, "eps", config.eps, 0.0)?;
        check_at_least(NAME, "weight_decay", config.weight_decay, 0.0)?;
        check_unit(NAME, "beta1", config.betas.0)?;
        check_unit(NAME, "beta2", config.betas.1)?;
        let slots = Slots::new(NAME, params.into_iter().collect(), &["exp_avg", "exp_avg_sq"])?;
        Ok(RAdam { config, slots })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &RAdamConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for RAdam<F> {
    fn step(&mut self, grads: &Grads<F>) -> Result<StepReport> {
        let (found, report) = self.slots.gather(NAME, grads)?;
        let c = self.config;
        let (b1, b2) = c.betas;
        let (wd, eps, lr) = (F::of(c.weight_decay), F::of(c.eps), F::of(c.lr));
        let (one_minus_b1, one_minus_b2) = (F::of(1.0 - b1), F::of(1.0 - b2));
        let decay = F::of(1.0 - c.lr * c.weight_decay);
        let rho_inf = 2.0 / (1.0 - b2) - 1.0;
        for (i, g) in found.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let p = &self.slots.params[i];
            self.slots.steps[i] += 1;
            let t = self.slots.steps[i] as f64;
            let bc1 = F::of(1.0 - b1.powf(t));
            let bc2 = 1.0 - b2.powf(t);
            let rho_t = rho_inf - 2.0 * t * b2.powf(t) / bc2;
            // The rectified branch's two scalar factors, as PyTorch computes them.
            let rect = (rho_t > 5.0).then(|| {
                let r = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                    / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                    .sqrt();
                (F::of(bc2.sqrt()), F::of(r))
            });
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
                Zip::from(w).and(&*m).and(&*v).for_each(|w, &m, &v| {
                    let step = match rect {
                        Some((bc2_sqrt, r)) => m / bc1 * lr * (bc2_sqrt / (v.sqrt() + eps)) * r,
                        None => m / bc1 * lr,
                    };
                    *w += -step;
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
