//! The gated (convex) linear recurrence of minGRU as one differentiable op over a sequence:
//! `hₜ = (1 − σ(kₜ)) ⊙ hₜ₋₁ + σ(kₜ) ⊙ cₜ`, read from the input projection `[k | c]`. The loops
//! are in [`crate::kernels::gated_scan`]; see `docs/linear-recurrences.md`.

use crate::fused::{flat, shaped};
use crate::kernels::fresh::written_by;
use crate::kernels::gated_scan::{gated_scan as scan_kernel, gated_scan_backward, GatedDims};
use crate::{concat, Scan, ScanForm, VarExt};
use eddy_tape::{Error, Float, Op, Result, Var};
use ndarray::ArrayD;

/// The gated scan over a whole sequence: from the projection `kc` `[T, B, 2H]`, whose last axis
/// holds the gate logits `k` (first half) and the candidate `c` (second half), and the first
/// state `[B, H]`, every state `[T, B, H]` of
///
/// ```text
/// zₜ = σ(kₜ),   hₜ = (1 − zₜ) ⊙ hₜ₋₁ + zₜ ⊙ cₜ
/// ```
///
/// in time order (or from the last step backwards when `reverse`). It is the linear scan
/// ([`Scan`]) with `a = 1 − z`, `b = z ⊙ c` ([`gated_coefficients`]), computed without storing
/// `z`, `a` or `b`. Inputs `[kc, first]`.
///
/// Gradient: the reverse scan `Gₜ = gₜ + (1 − zₜ₊₁) ⊙ Gₜ₊₁`, then
/// `dkₜ = Gₜ ⊙ zₜ(1 − zₜ) ⊙ (cₜ − hₜ₋₁)`, `dcₜ = Gₜ ⊙ zₜ`, `dh₀ = (1 − z₁) ⊙ G₁`: one raw
/// reverse loop, or under `create_graph` the linear scan's recorded rule on `a`, `b` and the
/// chain rule through them with differentiable ops, so gradients of any order exist.
///
/// # Errors
/// [`Error::Shape`] unless `kc` is `[T, B, 2H]` with `T ≥ 1` and `first` is `[B, H]`.
#[derive(Debug, Clone, Copy)]
pub struct GatedScan {
    /// Run from the last time step to the first (a bidirectional layer's reverse direction).
    pub reverse: bool,
}

fn dims(kc: &[usize]) -> GatedDims {
    GatedDims {
        steps: kc[0],
        batch: kc[1],
        hidden: kc[2] / 2,
    }
}

impl<F: Float> Op<F> for GatedScan {
    fn name(&self) -> &str {
        "gated_scan"
    }

    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("gated_scan", inputs, 2)?;
        let (kc, first) = (inputs[0], inputs[1]);
        let ok = kc.len() == 3 && kc[0] >= 1 && kc[2].is_multiple_of(2) && first == [kc[1], kc[2] / 2];
        if !ok {
            return Err(Error::shape(
                "gated_scan",
                inputs,
                "expected the projection [T, B, 2H] (T ≥ 1; gate logits, then candidates) and the first state [B, H]",
            ));
        }
        Ok(vec![kc[0], kc[1], kc[2] / 2])
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let (kc, first) = (flat(inputs[0]), flat(inputs[1]));
        let dims = dims(inputs[0].shape());
        // SAFETY: the scan writes every state (each step, every lane of `B·H`) and reads a step's
        // states only after writing them (as the next step's previous state).
        let out = unsafe {
            written_by(first.len() * dims.steps, |out| {
                scan_kernel(&kc, &first, out, dims, self.reverse)
            })
        };
        Ok(shaped(out, &[dims.steps, dims.batch, dims.hidden]))
    }

    fn backward(&self, inputs: &[Var<F>], output: &Var<F>, grad: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let tape = grad.tape();
        if tape.is_recording() {
            return self.recorded_backward(inputs, output, grad);
        }
        let (kc, first) = (&inputs[0], &inputs[1]);
        let (dkc, dfirst) = gated_scan_backward(
            &flat(kc.value()),
            &flat(first.value()),
            &flat(output.value()),
            &flat(grad.value()),
            dims(kc.shape()),
            self.reverse,
        );
        let wrap = |k: usize, v: Vec<F>| {
            inputs[k]
                .requires_grad()
                .then(|| tape.constant(shaped(v, inputs[k].shape())))
        };
        Ok(vec![wrap(0, dkc), wrap(1, dfirst)])
    }
}

impl GatedScan {
    /// The backward rule with differentiable ops: the linear scan's recorded rule on
    /// `a = 1 − z`, `b = z ⊙ c`, then `dk = (db ⊙ c − da) ⊙ z(1 − z)`, `dc = db ⊙ z`.
    fn recorded_backward<F: Float>(
        &self,
        inputs: &[Var<F>],
        output: &Var<F>,
        grad: &Var<F>,
    ) -> Result<Vec<Option<Var<F>>>> {
        let (kc, first) = (&inputs[0], &inputs[1]);
        let Gate { c, z, a, b } = gate(kc)?;
        let linear = Scan {
            form: ScanForm::Linear,
            reverse: self.reverse,
        };
        let back = Op::<F>::backward(&linear, &[a.clone(), b, first.clone()], output, grad)?;
        let [da, db, dfirst]: [Option<Var<F>>; 3] = back.try_into().expect("three gradients");
        let dkc = match (kc.requires_grad(), da, db) {
            (true, Some(da), Some(db)) => {
                let dk = ((&(&db * &c)? - &da)? * (&z * &a)?)?;
                let dc = (&db * &z)?;
                Some(concat(&[&dk, &dc], -1)?)
            }
            _ => None,
        };
        Ok(vec![dkc, dfirst])
    }
}

/// The coefficients of the gated recurrence as the linear scan takes them: from `kc`
/// (`[…, 2H]`, gate logits then candidates), `a = 1 − σ(k)` and `b = σ(k) ⊙ c` (`[…, H]` each).
/// One step of minGRU is `a ⊙ h + b`; [`gated_scan`] runs a whole sequence without them.
///
/// # Errors
/// [`Error::Shape`] if the last axis of `kc` has an odd length.
pub fn gated_coefficients<F: Float>(kc: &Var<F>) -> Result<(Var<F>, Var<F>)> {
    let width = kc.shape().last().copied().unwrap_or(0);
    if !width.is_multiple_of(2) {
        return Err(Error::shape(
            "gated_coefficients",
            &[kc.shape()],
            "the last axis holds the gate logits and the candidates: its length must be even",
        ));
    }
    let Gate { a, b, .. } = gate(kc)?;
    Ok((a, b))
}

/// The pieces of the gated recurrence read from `kc` (`[…, 2H]`, gate logits `k`, then
/// candidates `c`), as differentiable values: the one place the formula is written.
struct Gate<F: Float> {
    /// The candidate `c`.
    c: Var<F>,
    /// The gate `z = σ(k)`.
    z: Var<F>,
    /// The decay `a = 1 − z`.
    a: Var<F>,
    /// The input `b = z ⊙ c`.
    b: Var<F>,
}

/// Splits `kc` into `k` and `c` and computes [`Gate`]'s `z`, `a` and `b` from them.
fn gate<F: Float>(kc: &Var<F>) -> Result<Gate<F>> {
    let [k, c]: [Var<F>; 2] = kc.chunk(2, -1)?.try_into().expect("two halves");
    let z = k.sigmoid()?;
    let a = z.affine(-F::one(), F::one(), "one_minus")?;
    let b = (&z * &c)?;
    Ok(Gate { c, z, a, b })
}

/// Every state of minGRU's recurrence `hₜ = (1 − σ(kₜ)) ⊙ hₜ₋₁ + σ(kₜ) ⊙ cₜ` from the projection
/// `kc` (`[T, B, 2H]`: `k`, then `c`) and `h0` (`[B, H]`): `[T, B, H]`, in time order or from
/// the last step backwards (`reverse`). See [`GatedScan`].
///
/// ```
/// use eddy_ops::{gated_scan, prelude::*};
/// use ndarray::{ArrayD, IxDyn};
///
/// let tape = Tape::<f64>::new();
/// // σ(0) = 0.5: each step moves halfway from the state to the candidate 1.
/// let kc = tape.input(ArrayD::from_shape_vec(IxDyn(&[3, 1, 2]), vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0])?);
/// let h0 = tape.input(ArrayD::zeros(IxDyn(&[1, 1])));
/// let h = gated_scan(&kc, &h0, false)?;
/// assert_eq!(h.value().iter().copied().collect::<Vec<_>>(), [0.5, 0.75, 0.875]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// The shape errors of [`GatedScan`].
pub fn gated_scan<F: Float>(kc: &Var<F>, h0: &Var<F>, reverse: bool) -> Result<Var<F>> {
    kc.tape().apply(GatedScan { reverse }, &[kc, h0])
}
