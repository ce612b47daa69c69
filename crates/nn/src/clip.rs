//! Gradient clipping ([`clip_grad_norm`], [`clip_grad_value`]) and accumulation over
//! micro-batches ([`GradAccumulator`]).
//!
//! These act on the parameter gradients of a [`Grads`], between `backward()` and the
//! optimizer's step.

use eddy_tape::{Error, Float, Grads, ParamId, Result};
use ndarray::ArrayD;

/// Scales all parameter gradients together so that their joint L2 norm is at most `max_norm`,
/// as PyTorch's `clip_grad_norm_`: the factor is `max_norm / (norm + 1e-6)` when that is below 1.
///
/// Returns the joint norm before clipping, `√(Σ ‖g‖²)` over every parameter gradient, computed
/// in `f64` in parameter-id order (so it does not depend on hashing). A non-finite norm is
/// returned as is and the gradients are then scaled by NaN, as in PyTorch; check the result.
///
/// # Errors
/// [`Error::Invalid`] if `max_norm` is negative or NaN.
pub fn clip_grad_norm<F: Float>(grads: &mut Grads<F>, max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::invalid(
            "clip_grad_norm",
            format!("max_norm must be >= 0, got {max_norm}"),
        ));
    }
    let mut norms: Vec<(ParamId, f64)> = grads
        .params()
        .map(|(id, g)| (*id, g.iter().map(|v| v.as_f64() * v.as_f64()).sum::<f64>()))
        .collect();
    norms.sort_by_key(|(id, _)| *id);
    let total = norms.iter().map(|(_, sq)| sq).sum::<f64>().sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 || total.is_nan() {
        let coef = F::of(coef);
        for (_, g) in grads.params_mut() {
            g.mapv_inplace(|v| v * coef);
        }
    }
    Ok(total)
}

/// Clamps every parameter gradient element to `[−clip, clip]`, as PyTorch's
/// `clip_grad_value_`.
///
/// # Errors
/// [`Error::Invalid`] if `clip` is negative or NaN.
pub fn clip_grad_value<F: Float>(grads: &mut Grads<F>, clip: f64) -> Result<()> {
    if clip.is_nan() || clip < 0.0 {
        return Err(Error::invalid(
            "clip_grad_value",
            format!("clip must be >= 0, got {clip}"),
        ));
    }
    let c = F::of(clip);
    for (_, g) in grads.params_mut() {
        g.mapv_inplace(|v| {
            if v > c {
                c
            } else if v < -c {
                -c
            } else {
                v
            }
        });
    }
    Ok(())
}

/// Sums the parameter gradients of micro-batches and yields their (weighted) average, so a
/// large batch can be processed in pieces: with a mean loss over equal micro-batches the
/// average is the full batch's gradient.
///
/// ```
/// use eddy_nn::clip::GradAccumulator;
/// use eddy_tape::{Grads, Param};
/// use ndarray::arr1;
///
/// let w = Param::new("w", arr1(&[0.0f64]).into_dyn());
/// let mut acc = GradAccumulator::new();
/// for g in [1.0, 3.0] {
///     let mut grads = Grads::default();
///     grads.set_param(&w, arr1(&[g]).into_dyn());
///     acc.add(&grads);
/// }
/// let mean = acc.take_average().unwrap();
/// assert_eq!(mean.param(&w).unwrap()[[0]], 2.0);
/// ```
#[derive(Debug, Clone)]
pub struct GradAccumulator<F: Float = f32> {
    sum: Grads<F>,
    weight: f64,
    count: usize,
}

impl<F: Float> Default for GradAccumulator<F> {
    fn default() -> Self {
        GradAccumulator::new()
    }
}

impl<F: Float> GradAccumulator<F> {
    /// An empty accumulator.
    pub fn new() -> GradAccumulator<F> {
        GradAccumulator {
            sum: Grads::default(),
            weight: 0.0,
            count: 0,
        }
    }

    /// Adds a micro-batch's parameter gradients with weight 1.
    pub fn add(&mut self, grads: &Grads<F>) {
        self.sum += grads;
        self.weight += 1.0;
        self.count += 1;
    }

    /// Adds a micro-batch's parameter gradients with a weight, e.g. its number of examples
    /// when micro-batches differ in size (the gradients are of a mean loss).
    ///
    /// # Errors
    /// [`Error::Invalid`] if `weight` is negative or not finite.
    pub fn add_weighted(&mut self, grads: &Grads<F>, weight: f64) -> Result<()> {
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(Error::invalid(
                "GradAccumulator",
                format!("weight must be finite and >= 0, got {weight}"),
            ));
        }
        let mut scaled = Grads::default();
        scaled += grads;
        scaled.scale(F::of(weight));
        self.sum += &scaled;
        self.weight += weight;
        self.count += 1;
        Ok(())
    }

    /// The number of micro-batches added since the last take.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing was added since the last take.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The sum of the gradients so far (weighted by [`add_weighted`](Self::add_weighted)).
    pub fn sum(&self) -> &Grads<F> {
        &self.sum
    }

    /// The weighted average of the gradients added, resetting the accumulator; `None` if
    /// nothing (or only weight 0) was added.
    pub fn take_average(&mut self) -> Option<Grads<F>> {
        let weight = self.weight;
        let mut sum = std::mem::take(&mut self.sum);
        self.weight = 0.0;
        self.count = 0;
        if weight <= 0.0 {
            return None;
        }
        sum.scale(F::of(1.0 / weight));
        Some(sum)
    }
}

/// The L2 norm of one gradient array in `f64`; a helper for logging per-parameter norms.
pub fn grad_norm<F: Float>(g: &ArrayD<F>) -> f64 {
    g.iter().map(|v| v.as_f64() * v.as_f64()).sum::<f64>().sqrt()
}
