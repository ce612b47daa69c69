//! How the recurrent layer runs a cell that is linear in its state: the whole sequence as one
//! scan ([`eddy_ops::linear_scan`], [`eddy_ops::log_scan`]) instead of a loop of steps.

use crate::{Cell, LinearRecurrence, RecurrentState};
use eddy_ops::{gated_coefficients, gated_scan, linear_scan, log_scan, where_, VarExt};
use eddy_tape::{Error, Float, Result, Var};
use ndarray::ArrayD;

/// The outputs (`[T, B, H]`, zero past each length) and the final state of `cell` over the
/// projected sequence `xp` from `state`, by the scan, if the cell declares itself linear in its
/// state ([`Cell::linear_recurrence`]); `None` otherwise. `valid` (`[T, B, 1]`) marks the steps
/// inside each sequence of a ragged batch: past its end a sequence keeps its state (the step is
/// `a = 1, b = 0`, so the reverse direction starts at its last valid step) and outputs zeros, as
/// the layer's loop does. A sequence may have no valid step at all (a time segment past its end,
/// under checkpointing): its state passes through.
pub(crate) fn unroll<F: Float, C: Cell<F>>(
    cell: &C,
    xp: &Var<F>,
    state: &C::State,
    reverse: bool,
    valid: Option<&ArrayD<bool>>,
) -> Option<Result<(Var<F>, C::State)>> {
    let coefficients = cell.linear_recurrence(xp)?;
    Some(coefficients.and_then(|c| run::<F, C>(c, state, reverse, valid)))
}

/// `where_(valid, v, keep)`: `v` inside each sequence, the constant `keep` past its end.
fn keep_past_end<F: Float>(valid: &ArrayD<bool>, v: &Var<F>, keep: F) -> Result<Var<F>> {
    where_(valid, v, &v.tape().constant(ArrayD::from_elem(v.shape(), keep)))
}

fn run<F: Float, C: Cell<F>>(
    coefficients: LinearRecurrence<F>,
    state: &C::State,
    reverse: bool,
    valid: Option<&ArrayD<bool>>,
) -> Result<(Var<F>, C::State)> {
    let parts = state.parts();
    let [h0]: [Var<F>; 1] = parts.try_into().map_err(|p: Vec<Var<F>>| {
        Error::invalid(
            "linear_recurrence",
            format!(
                "a cell linear in its state has one state part, this one has {}",
                p.len()
            ),
        )
    })?;
    let all = match coefficients {
        LinearRecurrence::Linear { a, b } => {
            let (a, b) = match valid {
                Some(m) => (keep_past_end(m, &a, F::one())?, keep_past_end(m, &b, F::zero())?),
                None => (a, b),
            };
            linear_scan(&a, &b, &h0, reverse, None)?
        }
        LinearRecurrence::Gated { kc } => match valid {
            None => gated_scan(&kc, &h0, reverse)?,
            // Ragged: the general scan, whose steps past a sequence's end are the identity.
            Some(m) => {
                let (a, b) = gated_coefficients(&kc)?;
                linear_scan(
                    &keep_past_end(m, &a, F::one())?,
                    &keep_past_end(m, &b, F::zero())?,
                    &h0,
                    reverse,
                    None,
                )?
            }
        },
        LinearRecurrence::LogSpace { log_a, log_b } => {
            if let Some(bad) = h0.value().iter().find(|v| v.is_nan() || **v <= F::zero()) {
                return Err(Error::invalid(
                    "log_scan",
                    format!("the log-space form needs a positive initial state h, found {bad}"),
                ));
            }
            let (log_a, log_b) = match valid {
                Some(m) => (
                    keep_past_end(m, &log_a, F::zero())?,
                    keep_past_end(m, &log_b, F::neg_infinity())?,
                ),
                None => (log_a, log_b),
            };
            log_scan(&log_a, &log_b, &h0.log()?, reverse, None)?.exp()?
        }
    };
    let steps = all.shape()[0];
    let last = all.select(0, if reverse { 0 } else { steps - 1 })?;
    let out = match valid {
        None => all,
        Some(mask) => keep_past_end(mask, &all, F::zero())?,
    };
    Ok((out, C::State::from_parts(vec![last])?))
}
