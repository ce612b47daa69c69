//! How the recurrent layer runs a cell that is linear in its state: the whole sequence as one
//! scan ([`eddy_ops::linear_scan`], [`eddy_ops::log_scan`]) instead of a loop of steps.

use crate::{Cell, LinearRecurrence, RecurrentState};
use eddy_ops::{length_mask, linear_scan, log_scan, where_, VarExt};
use eddy_tape::{Error, Float, Result, Var};
use ndarray::ArrayD;

/// The outputs (`[T, B, H]`, zero past each length) and the final state of `cell` over the
/// projected sequence `xp` from `state`, by the scan, if the cell declares itself linear in its
/// state ([`Cell::linear_recurrence`]); `None` otherwise. A ragged sequence keeps its state past
/// its length and the reverse direction starts at its last valid step, as the layer's loop does.
pub(crate) fn unroll<F: Float, C: Cell<F>>(
    cell: &C,
    xp: &Var<F>,
    state: &C::State,
    reverse: bool,
    lengths: Option<&[usize]>,
) -> Option<Result<(Var<F>, C::State)>> {
    let coefficients = cell.linear_recurrence(xp)?;
    Some(coefficients.and_then(|c| run::<F, C>(c, state, reverse, lengths)))
}

fn run<F: Float, C: Cell<F>>(
    coefficients: LinearRecurrence<F>,
    state: &C::State,
    reverse: bool,
    lengths: Option<&[usize]>,
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
        LinearRecurrence::Linear { a, b } => linear_scan(&a, &b, &h0, reverse, lengths)?,
        LinearRecurrence::LogSpace { log_a, log_b } => {
            if let Some(bad) = h0.value().iter().find(|v| v.is_nan() || **v <= F::zero()) {
                return Err(Error::invalid(
                    "log_scan",
                    format!("the log-space form needs a positive initial state h, found {bad}"),
                ));
            }
            log_scan(&log_a, &log_b, &h0.log()?, reverse, lengths)?.exp()?
        }
    };
    let steps = all.shape()[0];
    let last = all.select(0, if reverse { 0 } else { steps - 1 })?;
    let out = match lengths {
        None => all,
        Some(l) => {
            let mask = length_mask("linear_recurrence", l, steps, all.shape()[1])?;
            let zeros = all.tape().constant(ArrayD::zeros(all.shape()));
            where_(&mask, &all, &zeros)?
        }
    };
    Ok((out, C::State::from_parts(vec![last])?))
}
