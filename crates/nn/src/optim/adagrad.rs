//! Adagrad, with learning-rate decay and weight decay.

use super::{check_at_least, OptimState, Optimizer, Slots, StepReport};
use eddy_tape::{Float, Grads, Param, Result};
use ndarray::{ArrayD, Zip};

/// The hyper-parameters of [`Adagrad`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate. Default `1e-2`.
    pub lr: f64,
    /// Learning-rate decay η: step `t` uses `lr / (1 + (t − 1)η)`. Default 0.
    pub lr_decay: f64,
    /// L2 penalty λ added to the gradient. Default 0.
    pub weight_decay: f64,
    /// The starting value of the sum of squared gradients. Default 0.
    pub initial_accumulator_value: f64,
    /// ε added to the denominator. Default `1e-10`.
    pub eps: f64,
    /// Ascend instead of descend. Default false.
    pub maximize: bool,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
        }
    }
}

/// Adagrad as `torch.optim.Adagrad`. For each parameter `w` with gradient `g`, at its step `t`:
///
/// ```text
/// g ← g + λw
/// s ← s + g²                  (s starts at initial_accumulator_value)
/// w ← w − lr/(1 + (t − 1)η) · g / (√s + ε)
/// ```
#[derive(Debug, Clone)]
pub struct Adagrad<F: Float = f32> {
    config: AdagradConfig,
    slots: Slots<F>,
}

const NAME: &str = "Adagrad";

impl<F: Float> Adagrad<F> {
    /// Adagrad over `params`.
    ///
    /// # Errors
    /// [`Error::Invalid`](eddy_tape::Error::Invalid) for a negative or non-finite
    /// hyper-parameter, or a parameter listed twice.
    pub fn new(params: impl IntoIterator<Item = Param<F>>, config: AdagradConfig) -> Result<Adagrad<F>> {
        check_at_least(NAME, "lr", config.lr, 0.0)?;
        check_at_least(NAME, "lr_decay", config.lr_decay, 0.0)?;
        check_at_least(NAME, "weight_decay", config.weight_decay, 0.0)?;
        check_at_least(
            NAME,
            "initial_accumulator_value",
            config.initial_accumulator_value,
            0.0,
        )?;
        check_at_least(NAME, "eps", config.eps, 0.0)?;
        let slots = Slots::new(NAME, params.into_iter().collect(), &["sum"])?;
        Ok(Adagrad { config, slots })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &AdagradConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for Adagrad<F> {
    fn step(&mut self, grads: &Grads<F>) -> Result<StepReport> {
        let (found, report) = self.slots.gather(NAME, grads)?;
        let c = self.config;
        let (wd, eps, init) = (
            F::of(c.weight_decay),
            F::of(c.eps),
            F::of(c.initial_accumulator_value),
        );
        for (i, g) in found.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let p = &self.slots.params[i];
            self.slots.steps[i] += 1;
            let t = self.slots.steps[i] as f64;
            let clr = F::of(c.lr / (1.0 + (t - 1.0) * c.lr_decay));
            let sum = self.slots.bufs[i][0].get_or_insert_with(|| ArrayD::from_elem(p.shape(), init));
            p.update(|w| {
                let mut d = if c.maximize { g.mapv(|x| -x) } else { g.clone() };
                if c.weight_decay != 0.0 {
                    Zip::from(&mut d).and(&*w).for_each(|d, &w| *d += wd * w);
                }
                Zip::from(w).and(&mut *sum).and(&d).for_each(|w, s, &d| {
                    *s += d * d;
                    *w += (-clr) * d / (s.sqrt() + eps);
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
