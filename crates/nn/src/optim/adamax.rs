//! Adamax: Adam with the infinity norm in place of the second moment.

use super::{check_at_least, check_unit, lerp, OptimState, Optimizer, Slots, StepReport};
use eddy_tape::{Float, Grads, Param, Result};
use ndarray::{ArrayD, Zip};

/// The hyper-parameters of [`Adamax`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamaxConfig {
    /// Learning rate. Default `2e-3`.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the first moment and of the infinity norm. Default `(0.9, 0.999)`.
    pub betas: (f64, f64),
    /// ε added to `|g|` before the maximum. Default `1e-8`.
    pub eps: f64,
    /// L2 penalty λ added to the gradient. Default 0.
    pub weight_decay: f64,
    /// Ascend instead of descend. Default false.
    pub maximize: bool,
}

impl Default for AdamaxConfig {
    fn default() -> Self {
        AdamaxConfig {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// Adamax as `torch.optim.Adamax`. For each parameter `w` with gradient `g`, at its step `t`:
///
/// ```text
/// g ← g + λw
/// m ← m + (1 − β₁)(g − m)
/// u ← max(β₂u, |g| + ε)
/// w ← w − lr/(1 − β₁ᵗ) · m/u
/// ```
#[derive(Debug, Clone)]
pub struct Adamax<F: Float = f32> {
    config: AdamaxConfig,
    slots: Slots<F>,
}

const NAME: &str = "Adamax";

impl<F: Float> Adamax<F> {
    /// Adamax over `params`.
    ///
    /// # Errors
    /// [`Error::Invalid`](eddy_tape::Error::Invalid) for a negative or non-finite learning rate,
    /// ε or weight decay, a β outside `[0, 1)`, or a parameter listed twice.
    pub fn new(params: impl IntoIterator<Item = Param<F>>, config: AdamaxConfig) -> Result<Adamax<F>> {
        check_at_least(NAME, "lr", config.lr, 0.0)?;
        check_at_least(NAME, "eps", config.eps, 0.0)?;
        check_at_least(NAME, "weight_decay", config.weight_decay, 0.0)?;
        check_unit(NAME, "beta1", config.betas.0)?;
        check_unit(NAME, "beta2", config.betas.1)?;
        let slots = Slots::new(NAME, params.into_iter().collect(), &["exp_avg", "exp_inf"])?;
        Ok(Adamax { config, slots })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &AdamaxConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for Adamax<F> {
    fn step(&mut self, grads: &Grads<F>) -> Result<StepReport> {
        let (found, report) = self.slots.gather(NAME, grads)?;
        let c = self.config;
        let (b1, b2) = c.betas;
        let (wd, eps, beta2) = (F::of(c.weight_decay), F::of(c.eps), F::of(b2));
        let one_minus_b1 = F::of(1.0 - b1);
        for (i, g) in found.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let p = &self.slots.params[i];
            self.slots.steps[i] += 1;
            let t = self.slots.steps[i] as f64;
            let clr = F::of(c.lr / (1.0 - b1.powf(t)));
            let shape = p.shape();
            let [m, u] = self.slots.bufs[i].as_mut_slice() else {
                unreachable!("two buffers")
            };
            let m = m.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
            let u = u.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
            p.update(|w| {
                let mut d = if c.maximize { g.mapv(|x| -x) } else { g.clone() };
                if c.weight_decay != 0.0 {
                    Zip::from(&mut d).and(&*w).for_each(|d, &w| *d += wd * w);
                }
                Zip::from(w)
                    .and(&mut *m)
                    .and(&mut *u)
                    .and(&d)
                    .for_each(|w, m, u, &d| {
                        *m = lerp(*m, d, one_minus_b1);
                        *u = (*u * beta2).max(d.abs() + eps);
                        *w += (-clr) * (*m / *u);
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
