//! AdamW: Adam with decoupled weight decay.

use super::{Adam, AdamConfig, OptimState, Optimizer, StepReport};
use eddy_tape::{Float, Grads, Param, Result};

/// The hyper-parameters of [`AdamW`]; `Default` is PyTorch's (note `weight_decay = 0.01`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate. Default `1e-3`.
    pub lr: f64,
    /// Decay rates (β₁, β₂) of the moment estimates. Default `(0.9, 0.999)`.
    pub betas: (f64, f64),
    /// ε added to the denominator. Default `1e-8`.
    pub eps: f64,
    /// Decoupled weight decay λ. Default `0.01`.
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (AMSGrad). Default false.
    pub amsgrad: bool,
    /// Ascend instead of descend. Default false.
    pub maximize: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
            maximize: false,
        }
    }
}

/// AdamW as `torch.optim.AdamW`: [`Adam`] whose weight decay shrinks the weights directly,
/// `w ← w(1 − lr·λ)`, before the Adam update, rather than entering the moments.
#[derive(Debug, Clone)]
pub struct AdamW<F: Float = f32>(Adam<F>);

impl<F: Float> AdamW<F> {
    /// AdamW over `params`.
    ///
    /// # Errors
    /// As [`Adam::new`].
    pub fn new(params: impl IntoIterator<Item = Param<F>>, config: AdamWConfig) -> Result<AdamW<F>> {
        let adam = AdamConfig {
            lr: config.lr,
            betas: config.betas,
            eps: config.eps,
            weight_decay: config.weight_decay,
            amsgrad: config.amsgrad,
            decoupled_weight_decay: true,
            maximize: config.maximize,
        };
        Ok(AdamW(Adam::named("AdamW", params, adam)?))
    }

    /// The hyper-parameters as Adam's (with `decoupled_weight_decay` set).
    pub fn config(&self) -> &AdamConfig {
        self.0.config()
    }
}

impl<F: Float> Optimizer<F> for AdamW<F> {
    fn step(&mut self, grads: &Grads<F>) -> Result<StepReport> {
        self.0.step(grads)
    }
    fn lr(&self) -> f64 {
        self.0.lr()
    }
    fn set_lr(&mut self, lr: f64) {
        self.0.set_lr(lr)
    }
    fn params(&self) -> &[Param<F>] {
        self.0.params()
    }
    fn state(&self) -> OptimState {
        self.0.state()
    }
    fn load_state(&mut self, state: OptimState) -> Result<()> {
        self.0.load_state(state)
    }
}
