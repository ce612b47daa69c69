//! The linear-recurrence scan as a differentiable op: every `hₜ = aₜ ⊙ hₜ₋₁ + bₜ` of a sequence
//! in one node, and its log-space form for positive recurrences. The loops are in
//! [`crate::kernels::scan`]; see `docs/linear-recurrences.md` for the forms and which cells use
//! them.

use crate::fused::{flat, shaped};
use crate::kernels::scan::{scan, scan_backward};
use crate::{concat, where_, VarExt};
use eddy_tape::{Error, Float, Op, Result, Var};
use ndarray::ArrayD;

pub use crate::kernels::scan::ScanForm;

/// The scan over a whole sequence: from `a`, `b` `[T, B, H]` and the first state `[B, H]`, every
/// state `[T, B, H]`, in time order (or from the last step backwards when `reverse`):
///
/// ```text
/// Linear:  hₜ = aₜ ⊙ hₜ₋₁ + bₜ
/// Log:     sₜ = logaddexp(αₜ + sₜ₋₁, βₜ)     (α = log a, β = log b, s = log h; a, b, h > 0)
/// ```
///
/// Inputs `[a, b, first]` (`[α, β, s₀]` in log space); the output is every `hₜ` (every `sₜ`).
///
/// Gradient: the reverse scan `Gₜ = gₜ + cₜ₊₁ ⊙ Gₜ₊₁` with `c = a` (linear) or
/// `c = w = exp(α + sₜ₋₁ − sₜ)` (log space), then `daₜ = Gₜ ⊙ hₜ₋₁`, `dbₜ = Gₜ`,
/// `dh₀ = a₁ ⊙ G₁` (linear) or `dαₜ = Gₜ ⊙ wₜ`, `dβₜ = Gₜ ⊙ exp(βₜ − sₜ)`, `ds₀ = w₁ ⊙ G₁`.
/// The recorded rule (under `create_graph`) writes that reverse scan as this same op and the
/// rest with differentiable ops, so gradients of any order exist; otherwise one raw pass
/// ([`scan_backward`]) computes the same values.
///
/// # Errors
/// [`Error::Shape`] unless `a` and `b` are the same `[T, B, H]` with `T ≥ 1` and `first` is
/// `[B, H]`.
#[derive(Debug, Clone, Copy)]
pub struct Scan {
    /// The linear form `hₜ = aₜ ⊙ hₜ₋₁ + bₜ`, or the log-space form of a positive recurrence.
    pub form: ScanForm,
    /// Run from the last time step to the first (a bidirectional layer's reverse direction).
    pub reverse: bool,
}

impl Scan {
    fn op_name(&self) -> &'static str {
        match self.form {
            ScanForm::Linear => "linear_scan",
            ScanForm::Log => "log_scan",
        }
    }
}

impl<F: Float> Op<F> for Scan {
    fn name(&self) -> &str {
        self.op_name()
    }

    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let name = self.op_name();
        crate::arity(name, inputs, 3)?;
        let (a, b, first) = (inputs[0], inputs[1], inputs[2]);
        let ok = a.len() == 3 && a[0] >= 1 && a == b && first == &a[1..];
        if !ok {
            return Err(Error::shape(
                name,
                inputs,
                "expected a and b [T, B, H] (the same, T ≥ 1) and the first state [B, H]",
            ));
        }
        Ok(a.to_vec())
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let (a, b, first) = (flat(inputs[0]), flat(inputs[1]), flat(inputs[2]));
        let mut out = vec![F::zero(); a.len()];
        scan(self.form, &a, &b, &first, &mut out, self.reverse);
        Ok(shaped(out, inputs[0].shape()))
    }

    fn backward(&self, inputs: &[Var<F>], output: &Var<F>, grad: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let tape = grad.tape();
        if tape.is_recording() {
            return self.recorded_backward(inputs, output, grad);
        }
        let (a, b, first) = (inputs[0].value(), inputs[1].value(), inputs[2].value());
        let (da, db, dfirst) = scan_backward(
            self.form,
            &flat(a),
            &flat(b),
            &flat(first),
            &flat(output.value()),
            &flat(grad.value()),
            self.reverse,
        );
        let wrap = |k: usize, v: Vec<F>| {
            inputs[k]
                .requires_grad()
                .then(|| tape.constant(shaped(v, inputs[k].shape())))
        };
        Ok(vec![wrap(0, da), wrap(1, db), wrap(2, dfirst)])
    }
}

impl Scan {
    /// The backward rule with differentiable ops: the reverse scan is this op again.
    fn recorded_backward<F: Float>(
        &self,
        inputs: &[Var<F>],
        output: &Var<F>,
        grad: &Var<F>,
    ) -> Result<Vec<Option<Var<F>>>> {
        let (a, b, first) = (&inputs[0], &inputs[1], &inputs[2]);
        let tape = grad.tape();
        let steps = a.shape()[0];
        let zeros = tape.constant(ArrayD::zeros(first.shape()));
        // The state each step read, `[T, B, H]`: `first` at the first step.
        let first_row = first.unsqueeze(0)?;
        let prev = match (steps, self.reverse) {
            (1, _) => first_row,
            (_, false) => concat(&[&first_row, &output.narrow(0, 0, steps - 1)?], 0)?,
            (_, true) => concat(&[&output.narrow(0, 1, steps - 1)?, &first_row], 0)?,
        };
        let coefficient = match self.form {
            ScanForm::Linear => a.clone(),
            ScanForm::Log => ((a + &prev)? - output)?.exp()?,
        };
        // Step t's coefficient in the reverse scan: the next step's (none after the last: 0).
        let zero_row = zeros.unsqueeze(0)?;
        let shifted = match (steps, self.reverse) {
            (1, _) => zero_row,
            (_, false) => concat(&[&coefficient.narrow(0, 1, steps - 1)?, &zero_row], 0)?,
            (_, true) => concat(&[&zero_row, &coefficient.narrow(0, 0, steps - 1)?], 0)?,
        };
        let back = Scan {
            form: ScanForm::Linear,
            reverse: !self.reverse,
        };
        let total = tape.apply(back, &[&shifted, grad, &zeros])?;
        let t0 = if self.reverse { steps - 1 } else { 0 };
        let need = |k: usize| inputs[k].requires_grad();
        let dfirst = match need(2) {
            true => Some((coefficient.select(0, t0)? * total.select(0, t0)?)?),
            false => None,
        };
        let (da, db) = match self.form {
            ScanForm::Linear => {
                let da = need(0).then(|| &total * &prev).transpose()?;
                (da, need(1).then(|| total.clone()))
            }
            ScanForm::Log => {
                let da = need(0).then(|| &total * &coefficient).transpose()?;
                let db = match need(1) {
                    true => Some((&total * &(b - output)?.exp()?)?),
                    false => None,
                };
                (da, db)
            }
        };
        Ok(vec![da, db, dfirst])
    }
}

/// The `[T, B, 1]` mask of the steps inside each sequence (`t < lengths[b]`).
///
/// # Errors
/// [`Error::Shape`] for a number of lengths other than `B`; [`Error::Invalid`] for a length of
/// 0 or beyond `T`, or a `[T, B]` mask that cannot be allocated.
pub fn length_mask(op: &str, lengths: &[usize], steps: usize, batch: usize) -> Result<ArrayD<bool>> {
    if lengths.len() != batch {
        return Err(Error::shape(
            op,
            &[&[lengths.len()], &[batch]],
            format!(
                "need one length per sequence: got {} lengths for a batch of {batch}",
                lengths.len()
            ),
        ));
    }
    if let Some((b, &bad)) = lengths.iter().enumerate().find(|(_, &l)| l == 0 || l > steps) {
        return Err(Error::invalid(
            op,
            format!("length {bad} of sequence {b} is outside 1..={steps} (the sequence length)"),
        ));
    }
    if !crate::fits::<bool>(&[steps, batch]) {
        return Err(Error::shape(
            op,
            &[&[steps, batch]],
            "a length mask of [T, B] has more elements than memory can hold",
        ));
    }
    Ok(ArrayD::from_shape_fn(vec![steps, batch, 1], |ix| {
        ix[0] < lengths[ix[1]]
    }))
}

/// Every state of `hₜ = aₜ ⊙ hₜ₋₁ + bₜ` (`a`, `b` `[T, B, H]`, `h0` `[B, H]`), `[T, B, H]`, in
/// time order or from the last step backwards (`reverse`). With `lengths`, sequence `b` runs
/// only its first `lengths[b]` steps: past them its state stays as it is (the reverse direction
/// starts at its last valid step), as the recurrent layer does for ragged batches.
///
/// ```
/// use eddy_ops::{linear_scan, prelude::*};
/// use ndarray::{ArrayD, IxDyn};
///
/// let tape = Tape::<f64>::new();
/// let a = tape.input(ArrayD::from_elem(IxDyn(&[3, 1, 1]), 0.5));
/// let b = tape.input(ArrayD::from_elem(IxDyn(&[3, 1, 1]), 1.0));
/// let h0 = tape.input(ArrayD::zeros(IxDyn(&[1, 1])));
/// let h = linear_scan(&a, &b, &h0, false, None)?;
/// assert_eq!(h.value().iter().copied().collect::<Vec<_>>(), [1.0, 1.5, 1.75]);
/// # Ok::<(), Error>(())
/// ```
///
/// # Errors
/// The shape errors of [`Scan`]; those of [`length_mask`].
pub fn linear_scan<F: Float>(
    a: &Var<F>,
    b: &Var<F>,
    h0: &Var<F>,
    reverse: bool,
    lengths: Option<&[usize]>,
) -> Result<Var<F>> {
    masked_scan(ScanForm::Linear, a, b, h0, reverse, lengths)
}

/// The log-space scan `sₜ = logaddexp(log aₜ + sₜ₋₁, log bₜ)` (`s = log h`) for a positive
/// recurrence, from `log_a`, `log_b` `[T, B, H]` and `log_h0` `[B, H]`: every `log hₜ`. Stable
/// where `a` and `b` underflow in linear space. `lengths` as for [`linear_scan`].
///
/// # Errors
/// As [`linear_scan`].
pub fn log_scan<F: Float>(
    log_a: &Var<F>,
    log_b: &Var<F>,
    log_h0: &Var<F>,
    reverse: bool,
    lengths: Option<&[usize]>,
) -> Result<Var<F>> {
    masked_scan(ScanForm::Log, log_a, log_b, log_h0, reverse, lengths)
}

fn masked_scan<F: Float>(
    form: ScanForm,
    a: &Var<F>,
    b: &Var<F>,
    first: &Var<F>,
    reverse: bool,
    lengths: Option<&[usize]>,
) -> Result<Var<F>> {
    let op = Scan { form, reverse };
    let tape = a.tape();
    let Some(lengths) = lengths else {
        return tape.apply(op, &[a, b, first]);
    };
    // Check the shapes first so that a shape error names the scan.
    <Scan as Op<F>>::shape(&op, &[a.shape(), b.shape(), first.shape()])?;
    let (steps, batch) = (a.shape()[0], a.shape()[1]);
    let mask = length_mask(op.op_name(), lengths, steps, batch)?;
    // Past a sequence's end the step is the identity: a = 1, b = 0 (α = 0, β = −∞).
    let (keep_a, keep_b) = match form {
        ScanForm::Linear => (F::one(), F::zero()),
        ScanForm::Log => (F::zero(), F::neg_infinity()),
    };
    let a = where_(&mask, a, &tape.constant(ArrayD::from_elem(a.shape(), keep_a)))?;
    let b = where_(&mask, b, &tape.constant(ArrayD::from_elem(b.shape(), keep_b)))?;
    tape.apply(op, &[&a, &b, first])
}
