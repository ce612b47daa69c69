//! Loss functions: each takes `Var`s and returns a scalar `Var`, with PyTorch's semantics.
//!
//! | loss | per element | PyTorch |
//! |---|---|---|
//! | [`mse`] | `(x − y)²` | `F.mse_loss` |
//! | [`l1`] | `|x − y|` | `F.l1_loss` |
//! | [`huber`] | `½d²` if `|d| < δ`, else `δ(|d| − ½δ)`, `d = x − y` | `F.huber_loss` |
//! | [`smooth_l1`] | `½d²/β` if `|d| < β`, else `|d| − ½β` | `F.smooth_l1_loss` |
//! | [`cross_entropy`] | `−Σ_c p_c · log_softmax(x)_c` (indices: `p` one-hot) | `F.cross_entropy` |
//! | [`cross_entropy_with`] | the same with class weights, `ignore_index`, label smoothing | `F.cross_entropy(weight=, ignore_index=, label_smoothing=)` |
//! | [`nll`] | `−x_{target}` | `F.nll_loss` |
//! | [`binary_cross_entropy_with_logits`] | `max(x,0) − x·y + log(1 + e^−|x|)` | `F.binary_cross_entropy_with_logits` |
//! | [`binary_cross_entropy_with_logits_with`] | the same with `pos_weight` and `weight` | `F.binary_cross_entropy_with_logits(weight=, pos_weight=)` |
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

/// Smooth L1 loss with threshold `beta`: `½d²/β` where `|d| < β`, else `|d| − ½β`, `d = x − y`
/// (PyTorch's `SmoothL1Loss`, default `beta = 1`; it is [`huber`] divided by `β`, and [`l1`]
/// for `β = 0`).
///
/// Shapes: `input` and `target` have one shape; `mask` broadcasts to it.
/// Gradient: `dx = clamp(d/β, −1, 1)/n` for the mean over `n` elements.
///
/// # Errors
/// As [`mse`]; [`Error::Invalid`] if `beta` is negative or not finite.
pub fn smooth_l1<F: Float>(
    input: &Var<F>,
    target: &Var<F>,
    beta: f64,
    reduction: Reduction,
    mask: Option<&ArrayD<F>>,
) -> Result<Var<F>> {
    if !(beta >= 0.0 && beta.is_finite()) {
        return Err(Error::invalid(
            "smooth_l1",
            format!("beta must be finite and >= 0, got {beta}"),
        ));
    }
    if beta == 0.0 {
        return l1(input, target, reduction, mask);
    }
    huber(input, target, beta, reduction, mask)?.scale(F::of(1.0 / beta))
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

/// The options of [`cross_entropy_with`], PyTorch's `nn.CrossEntropyLoss` arguments; `Default`
/// is PyTorch's (no weights, no ignored index, no smoothing, the mean).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CrossEntropyOptions<'a> {
    /// A weight per class, `C` of them (PyTorch's `weight`). Default none (all 1).
    pub weight: Option<&'a [f64]>,
    /// A class index whose targets contribute nothing, to the sum or to the mean's count
    /// (PyTorch's `ignore_index`, there `-100`, i.e. none). Class indices only. Default none.
    pub ignore_index: Option<usize>,
    /// ε in `[0, 1]`: the target becomes `(1 − ε)·target + ε/C` (PyTorch's
    /// `label_smoothing`). Default 0.
    pub label_smoothing: f64,
    /// How the per-element losses are reduced. Default [`Reduction::Mean`].
    pub reduction: Reduction,
}

/// Cross-entropy with PyTorch's options: class weights, an ignored class index and label
/// smoothing (see [`CrossEntropyOptions`]).
///
/// With class indices `y` and weights `w`, the loss of element `n` is
/// `(1 − ε)·w_{y_n}·(−logp_{n,y_n}) + (ε/C)·Σ_c w_c·(−logp_{n,c})`, zero where `y_n` is the
/// ignored index, and [`Reduction::Mean`] divides the sum by `Σ w_{y_n}` over the elements that
/// are neither ignored nor masked out, as PyTorch's weighted mean does (0 if there are none,
/// where PyTorch gives NaN). With probability targets `p`, the loss of element `n` is
/// `−Σ_c w_c·p'_{n,c}·logp_{n,c}` for the smoothed `p' = (1 − ε)p + ε/C`, and the mean is over
/// the elements.
///
/// Shapes and gradient as [`cross_entropy`], which this is with the default options.
///
/// # Errors
/// As [`cross_entropy`]; [`Error::Invalid`] for a weight count other than `C`, a negative or
/// non-finite weight, `label_smoothing` outside `[0, 1]`, or an `ignore_index` with probability
/// targets.
///
/// # Example
/// ```
/// use eddy_nn::loss::{cross_entropy_with, CrossEntropyOptions};
/// use eddy_tape::Tape;
/// use ndarray::arr2;
///
/// let tape = Tape::<f64>::new();
/// let logits = tape.input(arr2(&[[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]]).into_dyn());
/// // The second row's class (0) is ignored: the loss is the first row's.
/// let options = CrossEntropyOptions { ignore_index: Some(0), ..CrossEntropyOptions::default() };
/// let loss = cross_entropy_with(&logits, &[2, 0], &options, None)?;
/// assert!((loss.item()? - 0.40760596444437).abs() < 1e-12);
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub fn cross_entropy_with<'a, F: Float>(
    logits: &Var<F>,
    targets: impl Into<Targets<'a, F>>,
    options: &CrossEntropyOptions,
    mask: Option<&ArrayD<F>>,
) -> Result<Var<F>> {
    let op = "cross_entropy";
    let axis = class_axis(op, logits)?;
    let shape = logits.shape().to_vec();
    let n_classes = shape[axis];
    let eps = options.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::invalid(
            op,
            format!("label_smoothing must be in [0, 1], got {eps}"),
        ));
    }
    let weight: Vec<f64> = match options.weight {
        None => vec![1.0; n_classes],
        Some(w) if w.len() != n_classes => {
            return Err(Error::shape(
                op,
                &[&shape, &[w.len()]],
                format!("expected {n_classes} class weights, one per class along axis {axis}"),
            ))
        }
        Some(w) => {
            if let Some(v) = w.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                return Err(Error::invalid(
                    op,
                    format!("class weights must be finite and >= 0, got {v}"),
                ));
            }
            w.to_vec()
        }
    };
    let logp = logits.log_softmax(axis as isize)?;
    // A weight along the class axis, broadcasting against the logits.
    let mut class_shape = vec![1; shape.len()];
    class_shape[axis] = n_classes;
    let class_w = ArrayD::from_shape_vec(IxDyn(&class_shape), weight.iter().map(|&v| F::of(v)).collect())
        .expect("C weights");
    let tape = logits.tape();
    let (coef, count_weight, keep): (Var<F>, ArrayD<f64>, ArrayD<bool>) = match targets.into() {
        Targets::Probs(p) => {
            same_shape(op, logits, p)?;
            if options.ignore_index.is_some() {
                return Err(Error::invalid(
                    op,
                    "ignore_index applies to class indices, not to probability targets",
                ));
            }
            let smoothed = p.scale(F::of(1.0 - eps))?.shift(F::of(eps / n_classes as f64))?;
            let coef = (&smoothed * &tape.constant(class_w))?;
            let per_element: Vec<usize> = shape
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != axis)
                .map(|(_, &d)| d)
                .collect();
            let ones = ArrayD::from_elem(IxDyn(&per_element), 1.0);
            (coef, ones.clone(), ones.mapv(|_| true))
        }
        Targets::Classes(classes) => {
            let ignore = options.ignore_index;
            let mut rest = shape.clone();
            rest.remove(axis);
            let n: usize = rest.iter().product();
            if classes.len() != n {
                return Err(Error::shape(
                    op,
                    &[&shape, &[classes.len()]],
                    format!("expected {n} class indices, one per element of {rest:?}"),
                ));
            }
            // Out-of-range indices are an error unless they are the ignored one.
            if let Some((i, &c)) = classes
                .iter()
                .enumerate()
                .find(|&(_, &c)| c >= n_classes && Some(c) != ignore)
            {
                return Err(Error::invalid(
                    op,
                    format!("class index {c} at position {i} is out of range for {n_classes} classes"),
                ));
            }
            let keep =
                ArrayD::from_shape_vec(IxDyn(&rest), classes.iter().map(|&c| Some(c) != ignore).collect())
                    .expect("one per element");
            let count_weight = keep
                .iter()
                .zip(classes)
                .map(|(&k, &c)| if k { weight[c] } else { 0.0 })
                .collect();
            let count_weight = ArrayD::from_shape_vec(IxDyn(&rest), count_weight).expect("one per element");
            // (1 − ε)·w_y·[c = y] + (ε/C)·w_c along each lane; zero on ignored lanes.
            let smooth = eps / n_classes as f64;
            let mut coef = ArrayD::<F>::zeros(IxDyn(&shape));
            for (mut lane, &y) in coef.lanes_mut(ndarray::Axis(axis)).into_iter().zip(classes) {
                if Some(y) == ignore {
                    continue;
                }
                for (v, &w) in lane.iter_mut().zip(&weight) {
                    *v = F::of(smooth * w);
                }
                lane[y] = F::of((1.0 - eps) * weight[y] + smooth * weight[y]);
            }
            (tape.constant(coef), count_weight, keep)
        }
    };
    let per_element = (&logp * &coef)?.sum(axis as isize, false)?.neg()?;
    reduce_counted(op, &per_element, options.reduction, mask, &keep, &count_weight)
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

/// The options of [`binary_cross_entropy_with_logits_with`], PyTorch's
/// `nn.BCEWithLogitsLoss` arguments; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BceWithLogitsOptions<'a, F: Float> {
    /// A weight on each element's loss, broadcasting to the logits (PyTorch's `weight`).
    /// Default none.
    pub weight: Option<&'a ArrayD<F>>,
    /// A weight on the positive term, broadcasting to the logits, usually one per class along
    /// the last axis (PyTorch's `pos_weight`; `#negatives/#positives` balances a class).
    /// Default none.
    pub pos_weight: Option<&'a ArrayD<F>>,
    /// How the per-element losses are reduced. Default [`Reduction::Mean`].
    pub reduction: Reduction,
}

/// Binary cross-entropy with logits, with PyTorch's `pos_weight` and `weight`: per element
/// `w·[(1 − y)·x + (1 + (p − 1)·y)·softplus(−x)]`, which is
/// `−w·[p·y·log σ(x) + (1 − y)·log(1 − σ(x))]`, stable for any `x`.
///
/// Shapes: `logits` and `target` have one shape; `weight` and `pos_weight` broadcast to it;
/// `mask` broadcasts to it. Gradient: `dx = w·[(1 − y) − (1 + (p − 1)y)·σ(−x)]/n` for the
/// mean over `n` elements.
///
/// # Errors
/// As [`mse`]; [`Error::Shape`] if `weight` or `pos_weight` does not broadcast to the logits.
///
/// # Example
/// ```
/// use eddy_nn::loss::{binary_cross_entropy_with_logits_with, BceWithLogitsOptions};
/// use eddy_tape::Tape;
/// use ndarray::arr1;
///
/// let tape = Tape::<f64>::new();
/// let x = tape.input(arr1(&[0.0, 0.0]).into_dyn());
/// let y = tape.constant(arr1(&[1.0, 0.0]).into_dyn());
/// let pos_weight = arr1(&[3.0, 3.0]).into_dyn();
/// let options = BceWithLogitsOptions { pos_weight: Some(&pos_weight), ..Default::default() };
/// // (3·ln 2 + ln 2) / 2
/// let loss = binary_cross_entropy_with_logits_with(&x, &y, &options, None)?;
/// assert!((loss.item()? - 2.0 * std::f64::consts::LN_2).abs() < 1e-12);
/// # Ok::<(), eddy_tape::Error>(())
/// ```
pub fn binary_cross_entropy_with_logits_with<F: Float>(
    logits: &Var<F>,
    target: &Var<F>,
    options: &BceWithLogitsOptions<F>,
    mask: Option<&ArrayD<F>>,
) -> Result<Var<F>> {
    let op = "binary_cross_entropy_with_logits";
    same_shape(op, logits, target)?;
    let fits = |name: &str, a: &ArrayD<F>| {
        if broadcast_shapes(a.shape(), logits.shape()).as_deref() == Some(logits.shape()) {
            Ok(())
        } else {
            Err(Error::shape(
                op,
                &[logits.shape(), a.shape()],
                format!("{name} must broadcast to the logits"),
            ))
        }
    };
    let tape = logits.tape();
    let mut per_element = match options.pos_weight {
        None => (logits.softplus()? - (logits * target)?)?,
        Some(pw) => {
            fits("pos_weight", pw)?;
            // (1 − y)·x + (1 + (p − 1)·y)·softplus(−x)
            let log_weight = (target * &tape.constant(pw.mapv(|p| p - F::one())))?.shift(F::one())?;
            let negative = (logits - &(logits * target)?)?;
            (negative + (&log_weight * &logits.neg()?.softplus()?)?)?
        }
    };
    if let Some(w) = options.weight {
        fits("weight", w)?;
        per_element = (&per_element * &tape.constant(w.clone()))?;
    }
    reduce(op, &per_element, options.reduction, mask)
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

/// Reduces per-element losses to a scalar over the elements that `keep` and the 0/1 `mask`
/// both keep; the mean divides by the sum of `count_weight` over them (0 if it is 0).
fn reduce_counted<F: Float>(
    op: &str,
    loss: &Var<F>,
    reduction: Reduction,
    mask: Option<&ArrayD<F>>,
    keep: &ArrayD<bool>,
    count_weight: &ArrayD<f64>,
) -> Result<Var<F>> {
    let mut keep = keep.clone();
    if let Some(mask) = mask {
        check_mask(op, loss.shape(), mask)?;
        let m = mask.broadcast(loss.shape()).expect("checked");
        keep.zip_mut_with(&m, |k, &m| *k = *k && m == F::one());
    }
    let zero = loss.tape().scalar(F::zero());
    let total = eddy_ops::where_(&keep, loss, &zero)?.sum_all()?;
    match reduction {
        Reduction::Sum => Ok(total),
        Reduction::Mean => {
            let count: f64 = keep
                .iter()
                .zip(count_weight)
                .filter(|(&k, _)| k)
                .map(|(_, &w)| w)
                .sum();
            total.scale(if count > 0.0 {
                F::of(1.0 / count)
            } else {
                F::zero()
            })
        }
    }
}

/// Checks that a mask broadcasts to the per-element loss and holds only 0s and 1s.
fn check_mask<F: Float>(op: &str, loss_shape: &[usize], mask: &ArrayD<F>) -> Result<()> {
    if broadcast_shapes(mask.shape(), loss_shape).as_deref() != Some(loss_shape) {
        return Err(Error::shape(
            op,
            &[loss_shape, mask.shape()],
            "the mask must broadcast to the per-element loss",
        ));
    }
    if let Some(v) = mask.iter().find(|&&v| v != F::zero() && v != F::one()) {
        return Err(Error::invalid(
            op,
            format!("mask entries must be 0 or 1, found {v}"),
        ));
    }
    Ok(())
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
    check_mask(op, loss.shape(), mask)?;
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
