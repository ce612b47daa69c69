//! Loss functions: each takes `Var`s and returns a scalar `Var`, with PyTorch's semantics.
//!
//! | loss | per element | PyTorch |
//! |---|---|---|
//! | [`mse`] | `(x − y)²` | `F.mse_loss` |
//! | [`l1`] | `|x − y|` | `F.l1_loss` |
//! | [`huber`] | `½d²` if `|d| < δ`, else `δ(|d| − ½δ)`, `d = x − y` | `F.huber_loss` |
//! | [`cross_entropy`] | `−Σ_c p_c · log_softmax(x)_c` (indices: `p` one-hot) | `F.cross_entropy` |
//! | [`nll`] | `−x_{target}` | `F.nll_loss` |
//! | [`binary_cross_entropy_with_logits`] | `max(x,0) − x·y + log(1 + e^−|x|)` | `F.binary_cross_entropy_with_logits` |
//!
//! Every loss reduces its per-element losses with a [`Reduction`] (the mean by default, as in
//! PyTorch) and takes an optional `mask` of 0/1 that broadcasts (NumPy rules) to the per-element
//! loss: masked-out elements (padded time steps) contribute nothing, and with
//! [`Reduction::Mean`] the mean is over the unmasked elements only, as in Keras. If every
//! element is masked out, the mean is 0.
//!
//! The per-element loss of `cross_entropy` and `nll` has the input's shape without the class
//! axis, which is axis 1 as in PyTorch (`[N, C]` → `[N]`, `[N, C, T]` → `[N, T]`; an
//! unbatched `[C]` → `[]`). A batch-first sequence `[N, T, C]` is `transpose(1, 2)`'d first.

use eddy_ops::VarExt;
use eddy_tape::{broadcast_shapes, Error, Float, Result, Var};
use ndarray::{ArrayD, IxDyn};

/// How per-element losses become one scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean over the (unmasked) elements. PyTorch's default.
    #[default]
    Mean,
    /// The sum over the (unmasked) elements.
    Sum,
}

/// The targets of [`cross_entropy`]: class indices or class probabilities.
///
/// Converts from `&[usize]`, `&[usize; N]`, `&Vec<usize>` and `&Var<F>`.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a, F: Float> {
    /// One class index per per-element loss, in row-major order of the input without its
    /// class axis (`[N]` for `[N, C]` logits, `N·T` for `[N, C, T]`).
    Classes(&'a [usize]),
    /// Probabilities of the input's own shape (each lane along the class axis sums to 1).
    Probs(&'a Var<F>),
}

impl<'a, F: Float> From<&'a [usize]> for Targets<'a, F> {
    fn from(c: &'a [usize]) -> Self {
        Targets::Classes(c)
    }
}

impl<'a, F: Float, const N: usize> From<&'a [usize; N]> for Targets<'a, F> {
    fn from(c: &'a [usize; N]) -> Self {
        Targets::Classes(c)
    }
}

impl<'a, F: Float> From<&'a Vec<usize>> for Targets<'a, F> {
    fn from(c: &'a Vec<usize>) -> Self {
        Targets::Classes(c)
    }
}

impl<'a, F: Float> From<&'a Var<F>> for Targets<'a, F> {
    fn from(p: &'a Var<F>) -> Self {
        Targets::Probs(p)
    }
}

/// Mean squared error, `(x − y)²` per element.
///
/// Shapes: `input` and `target` have one shape; `mask` broadcasts to it.
/// Gradient: `dx = 2(x − y)/n` for the mean over `n` elements.
///
/// # Errors
/// [`Error::Shape`] if the shapes differ or the mask does not broadcast; [`Error::Invalid`] for a
/// mask entry other than 0 or 1.
///
/// # Example
/// ```
/// use eddy_nn::loss::{mse, Reduction};
/// use eddy_tape::Tape;
/// use ndarray::arr1;
///
/// let tape = Tape::<f64>::new();
/// let x = tape.input(arr1(&[1.0, 2.0]).into_dyn());
/// let y = tape.constant(arr1(&[0.0, 0.0]).into_dyn());
/// assert_eq!(mse(&x, &y, Reduction::Mean, None)?.item()?, 2.5);
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub fn mse<F: Float>(
    input: &Var<F>,
    target: &Var<F>,
    reduction: Reduction,
    mask: Option<&ArrayD<F>>,
) -> Result<Var<F>> {
    same_shape("mse", input, target)?;
    let d = (input - target)?;
    reduce("mse", &(&d * &d)?, reduction, mask)
}

/// Mean absolute error, `|x − y|` per element.
///
/// Shapes: `input` and `target` have one shape; `mask` broadcasts to it.
/// Gradient: `dx = sign(x − y)/n` for the mean over `n` elements (0 where `x = y`, as PyTorch).
///
/// # Errors
/// As [`mse`].
pub fn l1<F: Float>(
    input: &Var<F>,
    target: &Var<F>,
    reduction: Reduction,
    mask: Option<&ArrayD<F>>,
) -> Result<Var<F>> {
    same_shape("l1", input, target)?;
    reduce("l1", &(input - target)?.abs()?, reduction, mask)
}

/// Huber loss with threshold `delta`: `½d²` where `|d| < δ`, else `δ(|d| − ½δ)`, `d = x − y`.
///
/// Shapes: `input` and `target` have one shape; `mask` broadcasts to it.
/// Gradient: `dx = clamp(d, −δ, δ)/n` for the mean over `n` elements.
///
/// # Errors
/// As [`mse`]; [`Error::Invalid`] if `delta` is not positive and finite.
pub fn huber<F: Float>(
    input: &Var<F>,
    target: &Var<F>,
    delta: f64,
    reduction: Reduction,
    mask: Option<&ArrayD<F>>,
) -> Result<Var<F>> {
    if !(delta > 0.0 && delta.is_finite()) {
        return Err(Error::invalid(
            "huber",
            format!("delta must be positive and finite, got {delta}"),
        ));
    }
    same_shape("huber", input, target)?;
    let delta = F::of(delta);
    let d = (input - target)?;
    let a = d.abs()?;
    let small = a.value().mapv(|v| v < delta);
    let quadratic = (&d * &d)?.scale(F::of(0.5))?;
    let linear = a.affine(delta, -F::of(0.5) * delta * delta, "huber")?;
    let per_element = eddy_ops::where_(&small, &quadratic, &linear)?;
    reduce("huber", &per_element, reduction, mask)
}

/// Cross-entropy of `logits` against class indices or probabilities, through a stable
/// `log_softmax` along the class axis (axis 1; axis 0 for an unbatched `[C]` input).
///
/// Shapes: `logits` is `[N, C]`, `[N, C, d…]` or `[C]`. Class-index targets are one per
/// per-element loss (`N·d…` of them, row-major); probability targets have the logits' shape.
/// `mask` broadcasts to the per-element loss `[N, d…]`.
/// Gradient: `dx = (softmax(x) − p)/n` for the mean over `n` elements.
///
/// # Errors
/// [`Error::Shape`] for logits of rank 0, a wrong number of class indices, probabilities of
/// another shape, or a mask that does not broadcast; [`Error::Invalid`] for a class index out of
/// range or a mask entry other than 0 or 1.
///
/// # Example
/// ```
/// use eddy_nn::loss::{cross_entropy, Reduction};
/// use eddy_tape::Tape;
/// use ndarray::arr2;
///
/// let tape = Tape::<f64>::new();
/// let logits = tape.input(arr2(&[[1.0, 2.0, 3.0]]).into_dyn());
/// let loss = cross_entropy(&logits, &[2], Reduction::Mean, None)?;
/// assert!((loss.item()? - 0.40760596444437).abs() < 1e-12);
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub fn cross_entropy<'a, F: Float>(
    logits: &Var<F>,
    targets: impl Into<Targets<'a, F>>,
    reduction: Reduction,
    mask: Option<&ArrayD<F>>,
) -> Result<Var<F>> {
    let axis = class_axis("cross_entropy", logits)?;
    let logp = logits.log_softmax(axis as isize)?;
    let weights = match targets.into() {
        Targets::Classes(classes) => {
            logits
                .tape()
                .constant(one_hot("cross_entropy", logits.shape(), axis, classes)?)
        }
        Targets::Probs(p) => {
            same_shape("cross_entropy", logits, p)?;
            p.clone()
        }
    };
    let per_element = (&logp * &weights)?.sum(axis as isize, false)?.neg()?;
    reduce("cross_entropy", &per_element, reduction, mask)
}

/// Negative log-likelihood of class indices given log-probabilities: `−logp[target]`.
///
/// Shapes: `log_probs` is `[N, C]`, `[N, C, d…]` or `[C]`; `classes` holds one index per
/// per-element loss (`N·d…`, row-major); `mask` broadcasts to `[N, d…]`.
/// Gradient: `−1/n` at each target entry for the mean over `n` elements, 0 elsewhere.
///
/// # Errors
/// As [`cross_entropy`] with class indices.
pub fn nll<F: Float>(
    log_probs: &Var<F>,
    classes: &[usize],
    reduction: Reduction,
    mask: Option<&ArrayD<F>>,
) -> Result<Var<F>> {
    let axis = class_axis("nll", log_probs)?;
    let weights = log_probs
        .tape()
        .constant(one_hot("nll", log_probs.shape(), axis, classes)?);
    let per_element = (log_probs * &weights)?.sum(axis as isize, false)?.neg()?;
    reduce("nll", &per_element, reduction, mask)
}

/// Binary cross-entropy of probabilities `sigmoid(x)` against targets `y` in [0, 1], from the
/// logits `x`, stable for any `x`: `max(x, 0) − x·y + log(1 + e^−|x|)` per element.
///
/// Shapes: `logits` and `target` have one shape; `mask` broadcasts to it.
/// Gradient: `dx = (sigmoid(x) − y)/n` for the mean over `n` elements.
///
/// # Errors
/// As [`mse`].
pub fn binary_cross_entropy_with_logits<F: Float>(
    logits: &Var<F>,
    target: &Var<F>,
    reduction: Reduction,
    mask: Option<&ArrayD<F>>,
) -> Result<Var<F>> {
    let op = "binary_cross_entropy_with_logits";
    same_shape(op, logits, target)?;
    // softplus(x) is max(x, 0) + log(1 + e^−|x|), stable, with the smooth derivative sigmoid(x).
    let per_element = (logits.softplus()? - (logits * target)?)?;
    reduce(op, &per_element, reduction, mask)
}

fn same_shape<F: Float>(op: &str, a: &Var<F>, b: &Var<F>) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            op,
            &[a.shape(), b.shape()],
            "input and target must have one shape",
        ));
    }
    Ok(())
}

/// The class axis: 1, or 0 for an unbatched `[C]` input.
fn class_axis<F: Float>(op: &str, x: &Var<F>) -> Result<usize> {
    match x.ndim() {
        0 => Err(Error::shape(
            op,
            &[x.shape()],
            "input needs a class axis ([C], [N, C] or [N, C, d...])",
        )),
        1 => Ok(0),
        _ => Ok(1),
    }
}

/// A constant of `shape` that is 1 at each target class along `axis` and 0 elsewhere.
fn one_hot<F: Float>(op: &str, shape: &[usize], axis: usize, classes: &[usize]) -> Result<ArrayD<F>> {
    let n_classes = shape[axis];
    let mut rest = shape.to_vec();
    rest.remove(axis);
    let n: usize = rest.iter().product();
    if classes.len() != n {
        return Err(Error::shape(
            op,
            &[shape, &[classes.len()]],
            format!("expected {n} class indices, one per element of {rest:?}"),
        ));
    }
    if let Some((i, &c)) = classes.iter().enumerate().find(|(_, &c)| c >= n_classes) {
        return Err(Error::invalid(
            op,
            format!("class index {c} at position {i} is out of range for {n_classes} classes"),
        ));
    }
    let mut out = ArrayD::<F>::zeros(IxDyn(shape));
    for (flat, &c) in classes.iter().enumerate() {
        // The row-major index of `flat` in `rest`, with the class inserted at `axis`.
        let mut idx = vec![0; shape.len()];
        let mut r = flat;
        for (k, &d) in rest.iter().enumerate().rev() {
            let a = if k >= axis { k + 1 } else { k };
            idx[a] = r % d;
            r /= d;
        }
        idx[axis] = c;
        out[IxDyn(&idx)] = F::one();
    }
    Ok(out)
}

/// Reduces per-element losses to a scalar, over the elements a 0/1 mask keeps.
fn reduce<F: Float>(
    op: &str,
    loss: &Var<F>,
    reduction: Reduction,
    mask: Option<&ArrayD<F>>,
) -> Result<Var<F>> {
    let Some(mask) = mask else {
        return match reduction {
            Reduction::Mean => loss.mean_all(),
            Reduction::Sum => loss.sum_all(),
        };
    };
    if broadcast_shapes(mask.shape(), loss.shape()).as_deref() != Some(loss.shape()) {
        return Err(Error::shape(
            op,
            &[loss.shape(), mask.shape()],
            "the mask must broadcast to the per-element loss",
        ));
    }
    if let Some(v) = mask.iter().find(|&&v| v != F::zero() && v != F::one()) {
        return Err(Error::invalid(
            op,
            format!("mask entries must be 0 or 1, found {v}"),
        ));
    }
    // A select rather than a product: garbage at a padded step (an infinity, a NaN) stays out of
    // the value, and an overflowing but finite one out of the gradient too.
    let keep = mask.mapv(|v| v == F::one());
    let zero = loss.tape().scalar(F::zero());
    let total = eddy_ops::where_(&keep, loss, &zero)?.sum_all()?;
    match reduction {
        Reduction::Sum => Ok(total),
        Reduction::Mean => {
            // Each mask entry is repeated len(loss)/len(mask) times by the broadcast.
            let repeats = if mask.is_empty() {
                0.0
            } else {
                (loss.value().len() / mask.len()) as f64
            };
            let count = mask.iter().map(|v| v.as_f64()).sum::<f64>() * repeats;
            total.scale(if count > 0.0 {
                F::of(1.0 / count)
            } else {
                F::zero()
            })
        }
    }
}
