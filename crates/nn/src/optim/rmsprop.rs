//! RMSprop, plain or centered, with momentum and weight decay.

use super::{check_at_least, lerp, OptimState, Optimizer, Slots, StepReport};
use eddy_tape::{Float, Grads, Param, Result};
use ndarray::{ArrayD, Zip};

/// The hyper-parameters of [`RmsProp`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate. Default `1e-2`.
    pub lr: f64,
    /// Smoothing constant α of the squared-gradient average. Default `0.99`.
    pub alpha: f64,
    /// ε added to the denominator. Default `1e-8`.
    pub eps: f64,
    /// L2 penalty λ added to the gradient. Default 0.
    pub weight_decay: f64,
    /// Momentum factor μ. Default 0.
    pub momentum: f64,
    /// Normalise by the variance estimate `v − ḡ²` instead of `v`. Default false.
    pub centered: bool,
    /// Ascend instead of descend. Default false.
    pub maximize: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
        }
    }
}

/// RMSprop as `torch.optim.RMSprop`. For each parameter `w` with gradient `g`:
///
/// ```text
/// g ← g + λw
/// v ← αv + (1 − α)g²
/// ḡ ← ḡ + (1 − α)(g − ḡ)                                 (if centered)
/// a ← √(v − ḡ²) + ε if centered, else √v + ε
/// b ← μb + g/a;  w ← w − lr·b     if μ > 0, else   w ← w − lr·g/a
/// ```
#[derive(Debug, Clone)]
pub struct RmsProp<F: Float = f32> {
    config: RmsPropConfig,
    slots: Slots<F>,
}

const NAME: &str = "RMSprop";

impl<F: Float> RmsProp<F> {
    /// RMSprop over `params`.
    ///
    /// # Errors
    /// [`Error::Invalid`](eddy_tape::Error::Invalid) for a negative or non-finite
    /// hyper-parameter, or a parameter listed twice.
    pub fn new(params: impl IntoIterator<Item = Param<F>>, config: RmsPropConfig) -> Result<RmsProp<F>> {
        check_at_least(NAME, "lr", config.lr, 0.0)?;
        check_at_least(NAME, "alpha", config.alpha, 0.0)?;
        check_at_least(NAME, "eps", config.eps, 0.0)?;
        check_at_least(NAME, "weight_decay", config.weight_decay, 0.0)?;
        check_at_least(NAME, "momentum", config.momentum, 0.0)?;
        let names = &["square_avg", "grad_avg", "momentum_buffer"];
        let slots = Slots::new(NAME, params.into_iter().collect(), names)?;
        Ok(RmsProp { config, slots })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &RmsPropConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for RmsProp<F> {
    fn step(&mut self, grads: &Grads<F>) -> Result<StepReport> {
        let (found, report) = self.slots.gather(NAME, grads)?;
        let c = self.config;
        let (lr, alpha, eps, wd, mu) = (
            F::of(c.lr),
            F::of(c.alpha),
            F::of(c.eps),
            F::of(c.weight_decay),
            F::of(c.momentum),
        );
        let one_minus_alpha = F::of(1.0 - c.alpha);
        for (i, g) in found.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let p = &self.slots.params[i];
            self.slots.steps[i] += 1;
            let shape = p.shape();
            let [sq, ga, buf] = self.slots.bufs[i].as_mut_slice() else {
                unreachable!("three buffers")
            };
            let sq = sq.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
            p.update(|w| {
                let mut d = if c.maximize { g.mapv(|x| -x) } else { g.clone() };
                if c.weight_decay != 0.0 {
                    Zip::from(&mut d).and(&*w).for_each(|d, &w| *d += wd * w);
                }
                Zip::from(&mut *sq)
                    .and(&d)
                    .for_each(|s, &d| *s = *s * alpha + one_minus_alpha * d * d);
                // avg = √(v − ḡ²) + ε (centered) or √v + ε.
                let mut avg = sq.clone();
                if c.centered {
                    let ga = ga.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
                    Zip::from(&mut avg).and(&mut *ga).and(&d).for_each(|a, ga, &d| {
                        *ga = lerp(*ga, d, one_minus_alpha);
                        *a += -*ga * *ga;
                    });
                }
                avg.mapv_inplace(|a| a.sqrt() + eps);
                if c.momentum > 0.0 {
                    let buf = buf.get_or_insert_with(|| ArrayD::zeros(shape.clone()));
                    Zip::from(&mut *buf)
                        .and(&d)
                        .and(&avg)
                        .for_each(|b, &d, &a| *b = *b * mu + d / a);
                    Zip::from(w).and(&*buf).for_each(|w, &b| *w += (-lr) * b);
                } else {
                    Zip::from(w)
                        .and(&d)
                        .and(&avg)
                        .for_each(|w, &d, &a| *w += (-lr) * d / a);
                }
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
