//! What the cells that are linear in their state share (minGRU, minLSTM, RG-LRU): the step
//! `h' = a ⊙ h + b` from a projection `[a, b]`, and the log-space form of minGRU and minLSTM
//! ("Were RNNs All We Needed?", Feng et al. 2024, appendix: the paper's `g` and `log_g`), and
//! the split of the projection into the coefficients the layer's scan takes.

use crate::LinearRecurrence;
use eddy_ops::{where_, VarExt};
use eddy_tape::{Error, Float, Result, Tape, Var};
use ndarray::ArrayD;

/// `[a, b]` (`[B, 2H]`) and `h` (`[B, H]`) → `a ⊙ h + b`.
pub(crate) fn linear_step<F: Float>(ab: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
    let [a, b]: [Var<F>; 2] = ab.chunk(2, 1)?.try_into().expect("two chunks");
    (a * h)? + b
}

/// The projection `[a, b]` (or `[log a, log b]`, `[T, B, 2H]`) as the scan's coefficients.
pub(crate) fn coefficients<F: Float>(ab: &Var<F>, log_space: bool) -> Result<LinearRecurrence<F>> {
    let [a, b]: [Var<F>; 2] = ab.chunk(2, -1)?.try_into().expect("two chunks");
    Ok(match log_space {
        true => LinearRecurrence::LogSpace { log_a: a, log_b: b },
        false => LinearRecurrence::Linear { a, b },
    })
}

/// `[log a, log b]` (`[B, 2H]`) and a positive `h` (`[B, H]`) → `exp(logaddexp(log a + log h,
/// log b))`, the log-space form of `a ⊙ h + b` for positive `a`, `b`, `h`.
///
/// # Errors
/// [`Error::Invalid`] naming `cell` if an element of `h` is not positive (its log is undefined).
pub(crate) fn log_space_step<F: Float>(cell: &str, lab: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
    if let Some(bad) = h.value().iter().find(|v| v.is_nan() || **v <= F::zero()) {
        return Err(Error::invalid(
            cell,
            format!("the log-space mode needs a positive state h (as the paper's g makes it), found {bad}"),
        ));
    }
    let [log_a, log_b]: [Var<F>; 2] = lab.chunk(2, 1)?.try_into().expect("two chunks");
    (log_a + h.log()?)?.logaddexp(&log_b)?.exp()
}

/// `ln g(v)` for the paper's `g(v) = v + 0.5` (`v ≥ 0`), `σ(v)` (`v < 0`): `ln(v + 0.5)` or
/// `ln σ(v)`, both branches finite everywhere.
pub(crate) fn log_g<F: Float>(v: &Var<F>) -> Result<Var<F>> {
    let mask = v.value().mapv(|x| x >= F::zero());
    where_(&mask, &v.relu()?.shift(F::of(0.5))?.log()?, &v.log_sigmoid()?)
}

/// The log-space mode's default initial state, `g(0) = 0.5` everywhere: the paper passes its
/// `h_0` through `g`, so a zero `h_0` starts the recurrence at 0.5.
pub(crate) fn half_state<F: Float>(tape: &Tape<F>, batch: usize, hidden: usize) -> Var<F> {
    tape.constant(ArrayD::from_elem(vec![batch, hidden], F::of(0.5)))
}
