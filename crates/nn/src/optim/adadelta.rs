//! Adadelta: step sizes from running averages of squared gradients and squared updates.

use super::{check_at_least, OptimState, Optimizer, Slots, StepReport};
use eddy_tape::{Error, Float, Grads, Param, Result};
use ndarray::{ArrayD, Zip};

/// The hyper-parameters of [`Adadelta`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdadeltaConfig {
    /// Learning rate, a factor on the update. Default `1.0`.
    pub lr: f64,
    /// Decay rate ρ of both running averages. Default `0.9`.
    pub rho: f64,
    /// ε inside both square roots. Default `1e-6`.
    pub eps: f64,
    /// L2 penalty λ added to the gradient. Default 0.
    pub weight_decay: f64,
    /// Ascend instead of descend. Default false.
    pub maximize: bool,
}

impl Default for AdadeltaConfig {
    fn default() -> Self {
        AdadeltaConfig {
            lr: 1.0,
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// Adadelta as `torch.optim.Adadelta`. For each parameter `w` with gradient `g`:
///
/// ```text
/// g ← g + λw
/// v ← ρv + (1 − ρ)g²
/// Δ = √(a + ε)/√(v + ε) · g
/// a ← ρa + (1 − ρ)Δ²
/// w ← w − lr·Δ
/// ```
#[derive(Debug, Clone)]
pub struct Adadelta<F: Float = f32> {
    config: AdadeltaConfig,
    slots: Slots<F>,
}

const NAME: &str = "Adadelta";

impl<F: Float> Adadelta<F> {
    /// Adadelta over `params`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a negative or non-finite learning rate, ε or weight decay, a ρ
    /// outside `[0, 1]`, or a parameter listed twice.
    pub fn new(params: impl IntoIterator<Item = Param<F>>, config: AdadeltaConfig) -> Result<Adadelta<F>> {
        check_at_least(NAME, "lr", config.lr, 0.0)?;
        check_at_least(NAME, "eps", config.eps, 0.0)?;
        check_at_least(NAME, "weight_decay", config.weight_decay, 0.0)?;
        if !(0.0..=1.0).contains(&config.rho) {
            return Err(Error::invalid(
                NAME,
                format!("rho must be in [0, 1], got {}", config.rho),
            ));
        }
        let names = &["square_avg", "acc_delta"];
        let slots = Slots::new(NAME, params.into_iter().collect(), names)?;
        Ok(Adadelta { config, slots })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &AdadeltaConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for Adadelta<F> {
    fn step(&mut self, grads: &Grads<F>) -> Result<StepReport> {
        let (found, report) = self.slots.gather(NAME, grads)?;
        let c = self.config;
        let (lr, rho, eps, wd) = (F::of(c.lr), F::of(c.rho), F::of(c.eps), F::of(c.weight_decay));
        let one_minus_rho = F::of(1.0 - c.rho);
        for (i, g) in found.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let p = &self.slots.params[i];
            self.slots.steps[i] += 1;
            let shape = p.shape();
            let [sq, acc] = self.slots.bufs[i].as_mut_slice() else {
                unreachable!("two buffers")
            };
            let sq = sq.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
            let acc = acc.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
            p.update(|w| {
                let mut d = if c.maximize { g.mapv(|x| -x) } else { g.clone() };
                if c.weight_decay != 0.0 {
                    Zip::from(&mut d).and(&*w).for_each(|d, &w| *d += wd * w);
                }
                Zip::from(w)
                    .and(&mut *sq)
                    .and(&mut *acc)
                    .and(&d)
                    .for_each(|w, v, a, &d| {
                        *v = *v * rho + one_minus_rho * d * d;
                        let std = (*v + eps).sqrt();
                        let delta = (*a + eps).sqrt() / std * d;
                        *a = *a * rho + one_minus_rho * delta * delta;
                        *w += (-lr) * delta;
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
