//! [`VarExt`]: the catalogue as methods on [`Var`] (`x.matmul(&w)?.tanh()`), plus the ops that
//! take several inputs as free functions ([`concat`], [`stack`], [`where_`]).

use crate::activation::{logaddexp, logsumexp, LogSoftmax, Softmax};
use crate::axis::resolve;
use crate::elementwise::{
    Abs, Elementwise, Exp, Expm1, Log, LogSigmoid, Powi, Relu, Sigmoid, Softplus, Sqrt, Tanh, Unary,
};
use crate::reduce::{Max, Maximum, Sum};
use crate::shape::{Concat, IndexSelect, Narrow, Permute, Reshape, Split, Stack, Where};
use eddy_tape::{Error, Float, Result, Rng, Var};
use ndarray::ArrayD;

/// The differentiable op catalogue as methods on [`Var`]. Axes may be negative (from the end).
/// Every method returns `Result<Var>`; errors name the op and the shapes.
pub trait VarExt<F: Float>: Sized {
    /// Applies an [`Elementwise`] function.
    fn map(&self, f: impl Elementwise<F>) -> Result<Var<F>>;
    /// `eˣ`.
    fn exp(&self) -> Result<Var<F>>;
    /// `ln x`.
    fn log(&self) -> Result<Var<F>>;
    /// `√x`.
    fn sqrt(&self) -> Result<Var<F>>;
    /// `xⁿ`.
    fn powi(&self, n: i32) -> Result<Var<F>>;
    /// `tanh x`.
    fn tanh(&self) -> Result<Var<F>>;
    /// The logistic sigmoid (stable).
    fn sigmoid(&self) -> Result<Var<F>>;
    /// `max(x, 0)`.
    fn relu(&self) -> Result<Var<F>>;
    /// `ln(1 + eˣ)` (stable).
    fn softplus(&self) -> Result<Var<F>>;
    /// `|x|`.
    fn abs(&self) -> Result<Var<F>>;
    /// `ln σ(x)` (stable).
    fn log_sigmoid(&self) -> Result<Var<F>>;
    /// `eˣ − 1` (exact near 0).
    fn expm1(&self) -> Result<Var<F>>;
    /// The larger of `self` and `other` elementwise, broadcasting; see [`Maximum`].
    fn maximum(&self, other: &Var<F>) -> Result<Var<F>>;
    /// `ln(eˣ + eʸ)` elementwise, broadcasting (stable); see [`logaddexp`].
    fn logaddexp(&self, other: &Var<F>) -> Result<Var<F>>;

    /// Matrix product; see [`MatMul`](crate::MatMul) for the shapes (2-D or batched 3-D). By a weight of the
    /// tape (a bound parameter or a value derived from parameters alone, such as its
    /// transpose), the weight is packed once per tape: see [`crate::packed`].
    fn matmul(&self, other: &Var<F>) -> Result<Var<F>>;
    /// `self · otherᵀ` without a transposed copy (`x · wᵀ`, a linear layer's product).
    fn matmul_t(&self, other: &Var<F>) -> Result<Var<F>>;
    /// Any rank `[..., in]` times `wᵀ` (`w` is `[out, in]`) plus an optional bias `[out]`: `[..., out]`.
    fn linear(&self, w: &Var<F>, b: Option<&Var<F>>) -> Result<Var<F>>;

    /// Reshape to `shape` (same element count, row-major).
    fn reshape(&self, shape: &[usize]) -> Result<Var<F>>;
    /// Reorders axes: output axis `i` is input axis `axes[i]`.
    fn permute(&self, axes: &[usize]) -> Result<Var<F>>;
    /// Swaps two axes.
    fn transpose(&self, a: isize, b: isize) -> Result<Var<F>>;
    /// Inserts an axis of size 1 at `axis`.
    fn unsqueeze(&self, axis: isize) -> Result<Var<F>>;
    /// The slice `start .. start + len` along `axis`.
    fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Var<F>>;
    /// Entry `index` along `axis`, removing the axis.
    fn select(&self, axis: isize, index: usize) -> Result<Var<F>>;
    /// Splits along `axis` into pieces of the given sizes (which must add up to the axis).
    fn split(&self, sizes: &[usize], axis: isize) -> Result<Vec<Var<F>>>;
    /// Splits along `axis` into its entries, removing the axis (`[T, B, H]` → `T × [B, H]`).
    fn unstack(&self, axis: isize) -> Result<Vec<Var<F>>>;
    /// Splits along `axis` into `n` equal pieces.
    fn chunk(&self, n: usize, axis: isize) -> Result<Vec<Var<F>>>;
    /// Entries `indices` along `axis` (embedding lookup along axis 0).
    fn index_select(&self, axis: isize, indices: &[usize]) -> Result<Var<F>>;

    /// Sum along `axis`.
    fn sum(&self, axis: isize, keepdim: bool) -> Result<Var<F>>;
    /// Mean along `axis`.
    fn mean(&self, axis: isize, keepdim: bool) -> Result<Var<F>>;
    /// Mean of all elements, as a scalar.
    fn mean_all(&self) -> Result<Var<F>>;
    /// Max along `axis` (gradient to the first maximum).
    fn max(&self, axis: isize, keepdim: bool) -> Result<Var<F>>;
    /// `log Σ eˣ` along `axis` (stable).
    fn logsumexp(&self, axis: isize, keepdim: bool) -> Result<Var<F>>;
    /// Softmax along `axis` (stable).
    fn softmax(&self, axis: isize) -> Result<Var<F>>;
    /// Log-softmax along `axis` (stable).
    fn log_softmax(&self, axis: isize) -> Result<Var<F>>;

    /// Inverted dropout with probability `p`; the identity when not `training`.
    fn dropout(&self, p: f64, training: bool, rng: &mut Rng) -> Result<Var<F>>;
}

impl<F: Float> VarExt<F> for Var<F> {
    fn map(&self, f: impl Elementwise<F>) -> Result<Var<F>> {
        self.tape().apply(Unary(f), &[self])
    }
    fn exp(&self) -> Result<Var<F>> {
        self.map(Exp)
    }
    fn log(&self) -> Result<Var<F>> {
        self.map(Log)
    }
    fn sqrt(&self) -> Result<Var<F>> {
        self.map(Sqrt)
    }
    fn powi(&self, n: i32) -> Result<Var<F>> {
        self.map(Powi(n))
    }
    fn tanh(&self) -> Result<Var<F>> {
        self.map(Tanh)
    }
    fn sigmoid(&self) -> Result<Var<F>> {
        self.map(Sigmoid)
    }
    fn relu(&self) -> Result<Var<F>> {
        self.map(Relu)
    }
    fn softplus(&self) -> Result<Var<F>> {
        self.map(Softplus)
    }
    fn abs(&self) -> Result<Var<F>> {
        self.map(Abs)
    }
    fn log_sigmoid(&self) -> Result<Var<F>> {
        self.map(LogSigmoid)
    }
    fn expm1(&self) -> Result<Var<F>> {
        self.map(Expm1)
    }
    fn maximum(&self, other: &Var<F>) -> Result<Var<F>> {
        self.tape().apply(Maximum, &[self, other])
    }
    fn logaddexp(&self, other: &Var<F>) -> Result<Var<F>> {
        logaddexp(self, other)
    }

    fn matmul(&self, other: &Var<F>) -> Result<Var<F>> {
        crate::matmul::matmul_t(self, other, false, false)
    }
    fn matmul_t(&self, other: &Var<F>) -> Result<Var<F>> {
        crate::matmul::matmul_t(self, other, false, true)
    }
    fn linear(&self, w: &Var<F>, b: Option<&Var<F>>) -> Result<Var<F>> {
        crate::linear_add(self, w, b, None)
    }
    fn reshape(&self, shape: &[usize]) -> Result<Var<F>> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        self.tape().apply(Reshape(shape.to_vec()), &[self])
    }
    fn permute(&self, axes: &[usize]) -> Result<Var<F>> {
        self.tape().apply(Permute(axes.to_vec()), &[self])
    }
    fn transpose(&self, a: isize, b: isize) -> Result<Var<F>> {
        let (a, b) = (
            resolve("transpose", a, self.shape())?,
            resolve("transpose", b, self.shape())?,
        );
        let mut axes: Vec<usize> = (0..self.ndim()).collect();
        axes.swap(a, b);
        self.permute(&axes)
    }
    fn unsqueeze(&self, axis: isize) -> Result<Var<F>> {
        let mut shape = self.shape().to_vec();
        let n = shape.len() as isize + 1;
        let a = if axis < 0 { axis + n } else { axis };
        if !(0..n).contains(&a) {
            return Err(Error::Axis {
                op: "unsqueeze".into(),
                axis,
                shape,
            });
        }
        shape.insert(a as usize, 1);
        self.reshape(&shape)
    }
    fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Var<F>> {
        let axis = resolve("narrow", axis, self.shape())?;
        if start == 0 && len == self.shape()[axis] {
            return Ok(self.clone());
        }
        self.tape().apply(Narrow { axis, start, len }, &[self])
    }
    fn select(&self, axis: isize, index: usize) -> Result<Var<F>> {
        let a = resolve("select", axis, self.shape())?;
        let mut shape = self.shape().to_vec();
        shape.remove(a);
        self.narrow(axis, index, 1)?.reshape(&shape)
    }
    fn split(&self, sizes: &[usize], axis: isize) -> Result<Vec<Var<F>>> {
        let axis = resolve("split", axis, self.shape())?;
        let split = Split {
            axis,
            sizes: sizes.to_vec(),
            squeeze: false,
        };
        self.tape().apply_multi(split, &[self])
    }
    fn unstack(&self, axis: isize) -> Result<Vec<Var<F>>> {
        let axis = resolve("unstack", axis, self.shape())?;
        pieces_fit::<F>("unstack", self.shape(), self.shape()[axis])?;
        let split = Split {
            axis,
            sizes: vec![1; self.shape()[axis]],
            squeeze: true,
        };
        self.tape().apply_multi(split, &[self])
    }
    fn chunk(&self, n: usize, axis: isize) -> Result<Vec<Var<F>>> {
        let a = resolve("chunk", axis, self.shape())?;
        let d = self.shape()[a];
        // At most `d` pieces (one empty piece for an empty axis): a piece count beyond the
        // axis's size would only make empty views, and a huge one a huge list of them.
        if n == 0 || n > d.max(1) || !d.is_multiple_of(n) {
            return Err(Error::shape(
                "chunk",
                &[self.shape()],
                format!("axis {a} of size {d} does not split into {n} equal pieces"),
            ));
        }
        pieces_fit::<F>("chunk", self.shape(), n)?;
        self.split(&vec![d / n; n], axis)
    }
    fn index_select(&self, axis: isize, indices: &[usize]) -> Result<Var<F>> {
        let axis = resolve("index_select", axis, self.shape())?;
        self.tape().apply(
            IndexSelect {
                axis,
                indices: indices.to_vec(),
            },
            &[self],
        )
    }

    fn sum(&self, axis: isize, keepdim: bool) -> Result<Var<F>> {
        let axis = resolve("sum", axis, self.shape())?;
        self.tape().apply(Sum { axis, keepdim }, &[self])
    }
    fn mean(&self, axis: isize, keepdim: bool) -> Result<Var<F>> {
        let a = resolve("mean", axis, self.shape())?;
        let n = self.shape()[a];
        self.sum(axis, keepdim)?.scale(F::one() / F::of(n as f64))
    }
    fn mean_all(&self) -> Result<Var<F>> {
        let n = self.value().len().max(1);
        self.sum_all()?.scale(F::one() / F::of(n as f64))
    }
    fn max(&self, axis: isize, keepdim: bool) -> Result<Var<F>> {
        let axis = resolve("max", axis, self.shape())?;
        self.tape().apply(Max { axis, keepdim }, &[self])
    }
    fn logsumexp(&self, axis: isize, keepdim: bool) -> Result<Var<F>> {
        let axis = resolve("logsumexp", axis, self.shape())?;
        logsumexp(self, axis, keepdim)
    }
    fn softmax(&self, axis: isize) -> Result<Var<F>> {
        let axis = resolve("softmax", axis, self.shape())?;
        self.tape().apply(Softmax(axis), &[self])
    }
    fn log_softmax(&self, axis: isize) -> Result<Var<F>> {
        let axis = resolve("log_softmax", axis, self.shape())?;
        self.tape().apply(LogSoftmax(axis), &[self])
    }

    fn dropout(&self, p: f64, training: bool, rng: &mut Rng) -> Result<Var<F>> {
        crate::random::dropout(self, p, training, rng)
    }
}

/// Whether `n` pieces of `shape` can be made (an empty axis of size 2⁴⁰ splits into 2⁴⁰ empty
/// pieces, a list no machine holds): a probe of the list's memory, freed at once, so that
/// `unstack` and `chunk` return an error where the allocator would abort.
fn pieces_fit<F: Float>(op: &str, shape: &[usize], n: usize) -> Result<()> {
    let mut probe: Vec<Var<F>> = Vec::new();
    probe
        .try_reserve_exact(n)
        .map_err(|_| Error::shape(op, &[shape], format!("{n} pieces are more than memory can hold")))
}

/// Joins `xs` along an existing `axis`.
///
/// # Errors
/// [`Error::Shape`] if the other dimensions differ; [`Error::Invalid`] for no inputs.
pub fn concat<F: Float>(xs: &[&Var<F>], axis: isize) -> Result<Var<F>> {
    let first = xs
        .first()
        .ok_or_else(|| Error::invalid("concat", "needs at least one input"))?;
    let axis = resolve("concat", axis, first.shape())?;
    if xs.len() == 1 {
        return Ok((*first).clone());
    }
    first.tape().apply(Concat(axis), xs)
}

/// Stacks same-shape `xs` along a new `axis`.
///
/// # Errors
/// [`Error::Shape`] if the shapes differ; [`Error::Invalid`] for no inputs.
pub fn stack<F: Float>(xs: &[&Var<F>], axis: isize) -> Result<Var<F>> {
    let first = xs
        .first()
        .ok_or_else(|| Error::invalid("stack", "needs at least one input"))?;
    let n = first.ndim() as isize + 1;
    let a = if axis < 0 { axis + n } else { axis };
    if !(0..n).contains(&a) {
        return Err(Error::Axis {
            op: "stack".into(),
            axis,
            shape: first.shape().to_vec(),
        });
    }
    first.tape().apply(Stack(a as usize), xs)
}

/// `mask ? a : b` elementwise, broadcasting all three.
pub fn where_<F: Float>(mask: &ArrayD<bool>, a: &Var<F>, b: &Var<F>) -> Result<Var<F>> {
    a.tape().apply(Where(mask.clone()), &[a, b])
}
