//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

use super::{check_at_least, OptimState, Optimizer, Slots, StepReport};
use eddy_tape::{Error, Float, Grads, Param, Result};
use ndarray::Zip;

/// The hyper-parameters of [`Sgd`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate. Default `1e-3`.
    pub lr: f64,
    /// Momentum factor μ. Default 0.
    pub momentum: f64,
    /// Dampening τ of the momentum. Default 0.
    pub dampening: f64,
    /// L2 penalty λ added to the gradient. Default 0.
    pub weight_decay: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening = 0`). Default false.
    pub nesterov: bool,
    /// Ascend instead of descend. Default false.
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

/// SGD as `torch.optim.SGD`. For each parameter `w` with gradient `g`:
///
/// ```text
/// g ← g + λw
/// b ← g on the first step, else μb + (1 − τ)g      (if μ ≠ 0)
/// g ← g + μb if nesterov, else b                   (if μ ≠ 0)
/// w ← w − lr·g
/// ```
#[derive(Debug, Clone)]
pub struct Sgd<F: Float = f32> {
    config: SgdConfig,
    slots: Slots<F>,
}

const NAME: &str = "SGD";
const MOMENTUM_BUFFER: usize = 0;

impl<F: Float> Sgd<F> {
    /// SGD over `params`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a negative or non-finite hyper-parameter, Nesterov without momentum
    /// or with dampening, or a parameter listed twice.
    pub fn new(params: impl IntoIterator<Item = Param<F>>, config: SgdConfig) -> Result<Sgd<F>> {
        check_at_least(NAME, "lr", config.lr, 0.0)?;
        check_at_least(NAME, "momentum", config.momentum, 0.0)?;
        check_at_least(NAME, "dampening", config.dampening, f64::NEG_INFINITY)?;
        check_at_least(NAME, "weight_decay", config.weight_decay, 0.0)?;
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(Error::invalid(
                NAME,
                "Nesterov momentum requires a momentum and zero dampening",
            ));
        }
        let slots = Slots::new(NAME, params.into_iter().collect(), &["momentum_buffer"])?;
        Ok(Sgd { config, slots })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for Sgd<F> {
    fn step(&mut self, grads: &Grads<F>) -> Result<StepReport> {
        let (found, report) = self.slots.gather(NAME, grads)?;
        let c = self.config;
        let (lr, mu, damp, wd) = (
            F::of(c.lr),
            F::of(c.momentum),
            F::of(c.dampening),
            F::of(c.weight_decay),
        );
        for (i, g) in found.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let p = &self.slots.params[i];
            self.slots.steps[i] += 1;
            let buf = &mut self.slots.bufs[i][MOMENTUM_BUFFER];
            p.update(|w| {
                // d = the (decayed, possibly negated) gradient.
                let mut d = if c.maximize { g.mapv(|v| -v) } else { g.clone() };
                if c.weight_decay != 0.0 {
                    Zip::from(&mut d).and(&*w).for_each(|d, &w| *d += wd * w);
                }
                if c.momentum != 0.0 {
                    match buf {
                        None => *buf = Some(d.clone()),
                        Some(b) => Zip::from(b)
                            .and(&d)
                            .for_each(|b, &d| *b = *b * mu + (F::one() - damp) * d),
                    }
                    let b = buf.as_ref().expect("set above");
                    if c.nesterov {
                        Zip::from(&mut d).and(b).for_each(|d, &b| *d += mu * b);
                    } else {
                        d.assign(b);
                    }
                }
                Zip::from(w).and(&d).for_each(|w, &d| *w += (-lr) * d);
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
