//! Shape ops: reshape, permute, narrow (and its adjoint pad), concat, index_select (and its
//! adjoint index_add), and where. Each moves or copies elements; none does arithmetic, so each
//! backward rule is the adjoint movement.

use eddy_tape::{Error, Float, MultiOp, Op, Result, Saves, Var};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice, Zip};

/// A row-major copy of `v`, for reshape. Slices, joins and stacks all return row-major arrays
/// too ([`piece_along`], [`eddy_tape::join_along`]; ndarray's own `concatenate` along an inner
/// axis would not), so the ops downstream, and the gradients that flow back through them, take
/// their contiguous-slice paths.
fn row_major<F: Float>(v: ArrayViewD<'_, F>) -> ArrayD<F> {
    if v.is_standard_layout() {
        return v.to_owned();
    }
    let mut out = ArrayD::zeros(v.raw_dim());
    out.assign(&v);
    out
}

/// The piece `start .. start + len` of `x` along `axis`, row-major, as an array of `shape`
/// (`x`'s with `len` at `axis`, or without the axis when squeezed): for each index of the axes
/// before `axis`, one contiguous run of `x`'s memory, copied without zeroing first. What
/// narrow, split and unstack return.
fn piece_along<F: Float>(x: &ArrayD<F>, axis: usize, start: usize, len: usize, shape: &[usize]) -> ArrayD<F> {
    let x = x.as_standard_layout();
    let all = x.as_slice().expect("a standard-layout array is one slice");
    let after: usize = x.shape()[axis + 1..].iter().product();
    let (stride, run) = (x.shape()[axis] * after, len * after);
    let outer: usize = x.shape()[..axis].iter().product();
    let mut out = Vec::with_capacity(outer * run);
    if run > 0 {
        for o in 0..outer {
            let from = o * stride + start * after;
            out.extend_from_slice(&all[from..from + run]);
        }
    }
    ArrayD::from_shape_vec(IxDyn(shape), out).expect("the piece holds the shape's elements")
}

/// Reshape to a shape with the same number of elements (row-major order).
///
/// Gradient: `dx = reshape(g, x.shape)`.
pub struct Reshape(pub Vec<usize>);

impl<F: Float> Op<F> for Reshape {
    fn name(&self) -> &str {
        "reshape"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("reshape", inputs, 1)?;
        // Checked products: a huge target must not wrap around to the input's count.
        let count = |s: &[usize]| s.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if count(inputs[0]) != count(&self.0) || count(&self.0).is_none() {
            return Err(Error::shape(
                "reshape",
                &[inputs[0], &self.0],
                "element counts differ",
            ));
        }
        Ok(self.0.clone())
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let x = row_major(inputs[0].view());
        Ok(x.into_shape_with_order(IxDyn(&self.0))
            .expect("the shape rule checked the count"))
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        Ok(vec![Some(
            g.tape().apply(Reshape(inputs[0].shape().to_vec()), &[g])?,
        )])
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// Reorders the axes: output axis `i` is input axis `axes[i]`.
///
/// Gradient: `dx = permute(g, inverse(axes))`.
pub struct Permute(pub Vec<usize>);

impl<F: Float> Op<F> for Permute {
    fn name(&self) -> &str {
        "permute"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("permute", inputs, 1)?;
        let x = inputs[0];
        let mut seen = vec![false; x.len()];
        let ok = self.0.len() == x.len()
            && self
                .0
                .iter()
                .all(|&a| a < x.len() && !std::mem::replace(&mut seen[a], true));
        if !ok {
            return Err(Error::shape(
                "permute",
                &[x],
                format!("{:?} is not a permutation of the axes", self.0),
            ));
        }
        Ok(self.0.iter().map(|&a| x[a]).collect())
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        Ok(inputs[0]
            .view()
            .permuted_axes(IxDyn(&self.0))
            .as_standard_layout()
            .into_owned())
    }
    fn backward(&self, _: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let mut inverse = vec![0; self.0.len()];
        for (i, &a) in self.0.iter().enumerate() {
            inverse[a] = i;
        }
        Ok(vec![Some(g.tape().apply(Permute(inverse), &[g])?)])
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// The slice `start .. start + len` along `axis`.
///
/// Gradient: `dx = pad(g)`: `g` placed at the same slice of zeros.
pub struct Narrow {
    /// The axis sliced.
    pub axis: usize,
    /// The first index kept.
    pub start: usize,
    /// How many indices are kept.
    pub len: usize,
}

impl<F: Float> Op<F> for Narrow {
    fn name(&self) -> &str {
        "narrow"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("narrow", inputs, 1)?;
        let x = inputs[0];
        if self.axis >= x.len() {
            return Err(Error::Axis {
                op: "narrow".into(),
                axis: self.axis as isize,
                shape: x.to_vec(),
            });
        }
        // Checked: a start near usize::MAX must not wrap around into range.
        if self
            .start
            .checked_add(self.len)
            .is_none_or(|end| end > x[self.axis])
        {
            return Err(Error::shape(
                "narrow",
                &[x],
                format!(
                    "slice {}..{} is out of range for axis {} of size {}",
                    self.start,
                    self.start.saturating_add(self.len),
                    self.axis,
                    x[self.axis]
                ),
            ));
        }
        let mut out = x.to_vec();
        out[self.axis] = self.len;
        Ok(out)
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let x = inputs[0];
        let mut shape = x.shape().to_vec();
        shape[self.axis] = self.len;
        Ok(piece_along(x, self.axis, self.start, self.len, &shape))
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let pad = Pad {
            axis: self.axis,
            start: self.start,
            total: inputs[0].shape()[self.axis],
        };
        Ok(vec![Some(g.tape().apply(pad, &[g])?)])
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// Places `x` at `start ..` along `axis` in zeros of size `total` there (the adjoint of narrow).
///
/// Gradient: `dx = narrow(g, axis, start, len)`.
pub struct Pad {
    /// The axis padded.
    pub axis: usize,
    /// Where `x` starts along the axis.
    pub start: usize,
    /// The axis' size after padding.
    pub total: usize,
}

impl<F: Float> Op<F> for Pad {
    fn name(&self) -> &str {
        "pad"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("pad", inputs, 1)?;
        let x = inputs[0];
        let fits = |d: usize| self.start.checked_add(d).is_some_and(|end| end <= self.total);
        if self.axis >= x.len() || !fits(x[self.axis]) {
            return Err(Error::shape(
                "pad",
                &[x],
                format!("cannot place at {} in {}", self.start, self.total),
            ));
        }
        let mut out = x.to_vec();
        out[self.axis] = self.total;
        Ok(out)
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let x = inputs[0];
        let mut shape = x.shape().to_vec();
        shape[self.axis] = self.total;
        let mut out = ArrayD::zeros(IxDyn(&shape));
        let s = Slice::from(self.start..self.start + x.shape()[self.axis]);
        out.slice_axis_mut(Axis(self.axis), s).assign(x);
        Ok(out)
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let narrow = Narrow {
            axis: self.axis,
            start: self.start,
            len: inputs[0].shape()[self.axis],
        };
        Ok(vec![Some(g.tape().apply(narrow, &[g])?)])
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// Joins inputs along an existing axis; all other dimensions must agree.
///
/// Gradient: each input gets its slice of `g` (narrow).
pub struct Concat(pub usize);

impl<F: Float> Op<F> for Concat {
    fn name(&self) -> &str {
        "concat"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let axis = self.0;
        let Some(first) = inputs.first() else {
            return Err(Error::invalid("concat", "needs at least one input"));
        };
        if axis >= first.len() {
            return Err(Error::Axis {
                op: "concat".into(),
                axis: axis as isize,
                shape: first.to_vec(),
            });
        }
        let mut out = first.to_vec();
        out[axis] = 0;
        for s in inputs {
            let agree = s.len() == first.len()
                && s.iter()
                    .zip(*first)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !agree {
                return Err(Error::shape(
                    "concat",
                    inputs,
                    format!("all dimensions but axis {axis} must agree"),
                ));
            }
            out[axis] = out[axis].checked_add(s[axis]).ok_or_else(|| {
                Error::shape(
                    "concat",
                    inputs,
                    format!("the sizes along axis {axis} add up to more than usize holds"),
                )
            })?;
        }
        Ok(out)
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|x| x.shape()).collect();
        let shape = <Self as Op<F>>::shape(self, &shapes)?;
        let views: Vec<_> = inputs.iter().map(|x| x.view()).collect();
        Ok(eddy_tape::join_along(&views, self.0, &shape))
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let mut start = 0;
        let mut out = Vec::with_capacity(inputs.len());
        for x in inputs {
            let len = x.shape()[self.0];
            out.push(if x.requires_grad() {
                Some(g.tape().apply(
                    Narrow {
                        axis: self.0,
                        start,
                        len,
                    },
                    &[g],
                )?)
            } else {
                None
            });
            start += len;
        }
        Ok(out)
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// Picks entries `indices` along `axis` (an embedding lookup along axis 0).
///
/// Gradient: `dx = index_add(zeros, indices, g)`: each picked entry's gradient is added back
/// where it came from, summed over repeats.
pub struct IndexSelect {
    /// The axis indexed.
    pub axis: usize,
    /// The entries picked, in output order (repeats allowed).
    pub indices: Vec<usize>,
}

impl<F: Float> Op<F> for IndexSelect {
    fn name(&self) -> &str {
        "index_select"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("index_select", inputs, 1)?;
        let x = inputs[0];
        if self.axis >= x.len() {
            return Err(Error::Axis {
                op: "index_select".into(),
                axis: self.axis as isize,
                shape: x.to_vec(),
            });
        }
        if let Some(&bad) = self.indices.iter().find(|&&i| i >= x[self.axis]) {
            return Err(Error::invalid(
                "index_select",
                format!(
                    "index {bad} is out of range for axis {} of shape {x:?}",
                    self.axis
                ),
            ));
        }
        let mut out = x.to_vec();
        out[self.axis] = self.indices.len();
        Ok(out)
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        Ok(inputs[0].select(Axis(self.axis), &self.indices))
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let add = IndexAdd {
            axis: self.axis,
            indices: self.indices.clone(),
            size: inputs[0].shape()[self.axis],
        };
        Ok(vec![Some(g.tape().apply(add, &[g])?)])
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// Adds slice `k` of `x` along `axis` into entry `indices[k]` of zeros of size `size` there
/// (the adjoint of index_select).
///
/// Gradient: `dx = index_select(g, indices)`.
pub struct IndexAdd {
    /// The axis indexed.
    pub axis: usize,
    /// Where slice `k` of `x` is added.
    pub indices: Vec<usize>,
    /// The axis' size in the output.
    pub size: usize,
}

impl<F: Float> Op<F> for IndexAdd {
    fn name(&self) -> &str {
        "index_add"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("index_add", inputs, 1)?;
        let x = inputs[0];
        if self.axis >= x.len()
            || x[self.axis] != self.indices.len()
            || self.indices.iter().any(|&i| i >= self.size)
        {
            return Err(Error::shape("index_add", &[x], "indices do not fit the input"));
        }
        let mut out = x.to_vec();
        out[self.axis] = self.size;
        Ok(out)
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let x = inputs[0];
        let mut shape = x.shape().to_vec();
        shape[self.axis] = self.size;
        let mut out = ArrayD::zeros(IxDyn(&shape));
        for (k, &i) in self.indices.iter().enumerate() {
            let mut dst = out.index_axis_mut(Axis(self.axis), i);
            dst += &x.index_axis(Axis(self.axis), k);
        }
        Ok(out)
    }
    fn backward(&self, _: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let select = IndexSelect {
            axis: self.axis,
            indices: self.indices.clone(),
        };
        Ok(vec![Some(g.tape().apply(select, &[g])?)])
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// `mask ? a : b` elementwise, with `mask`, `a` and `b` broadcast together.
///
/// Gradient: `da = sum_to(mask ? g : 0)`, `db = sum_to(mask ? 0 : g)`.
pub struct Where(pub ArrayD<bool>);

impl<F: Float> Op<F> for Where {
    fn name(&self) -> &str {
        "where"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        crate::arity("where", inputs, 2)?;
        let err = || {
            Error::shape(
                "where",
                &[self.0.shape(), inputs[0], inputs[1]],
                "mask and values cannot be broadcast together",
            )
        };
        let ab = eddy_tape::broadcast_shapes(inputs[0], inputs[1]).ok_or_else(err)?;
        eddy_tape::broadcast_shapes(self.0.shape(), &ab).ok_or_else(err)
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let shape = <Self as Op<F>>::shape(self, &[inputs[0].shape(), inputs[1].shape()])?;
        let sh = IxDyn(&shape);
        let (m, a, b) = (
            self.0.broadcast(sh.clone()).expect("checked"),
            inputs[0].broadcast(sh.clone()).expect("checked"),
            inputs[1].broadcast(sh).expect("checked"),
        );
        Ok(Zip::from(&m)
            .and(&a)
            .and(&b)
            .map_collect(|&m, &a, &b| if m { a } else { b }))
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let zeros = g.tape().constant(ArrayD::zeros(g.shape()));
        let (a, b) = (&inputs[0], &inputs[1]);
        let da = if a.requires_grad() {
            Some(
                g.tape()
                    .apply(Where(self.0.clone()), &[g, &zeros])?
                    .sum_to(a.shape())?,
            )
        } else {
            None
        };
        let db = if b.requires_grad() {
            Some(
                g.tape()
                    .apply(Where(self.0.clone()), &[&zeros, g])?
                    .sum_to(b.shape())?,
            )
        } else {
            None
        };
        Ok(vec![da, db])
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// Splits along `axis` into pieces of the given sizes, one output each; with `squeeze` every
/// size is 1 and the axis is removed (unstack: `[T, B, H]` → `T × [B, H]`).
///
/// Gradient: the output gradients joined again (concat, or stack when squeezed), zeros where an
/// output received none.
pub struct Split {
    /// The axis split.
    pub axis: usize,
    /// The sizes of the pieces (they add up to the axis' size).
    pub sizes: Vec<usize>,
    /// Remove the axis from every piece (each size is 1): unstack.
    pub squeeze: bool,
}

impl Split {
    fn out_shapes(&self, x: &[usize]) -> Vec<Vec<usize>> {
        self.sizes
            .iter()
            .map(|&n| {
                let mut s = x.to_vec();
                if self.squeeze {
                    s.remove(self.axis);
                } else {
                    s[self.axis] = n;
                }
                s
            })
            .collect()
    }
}

impl<F: Float> MultiOp<F> for Split {
    fn name(&self) -> &str {
        if self.squeeze {
            "unstack"
        } else {
            "split"
        }
    }
    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
        let name = <Self as MultiOp<F>>::name(self);
        crate::arity(name, inputs, 1)?;
        let x = inputs[0];
        if self.axis >= x.len() {
            return Err(Error::Axis {
                op: name.into(),
                axis: self.axis as isize,
                shape: x.to_vec(),
            });
        }
        let total = self.sizes.iter().try_fold(0usize, |n, &d| n.checked_add(d));
        if total != Some(x[self.axis]) || (self.squeeze && self.sizes.iter().any(|&n| n != 1)) {
            return Err(Error::shape(
                name,
                &[x],
                format!(
                    "sizes {:?} do not split axis {} of size {}",
                    self.sizes, self.axis, x[self.axis]
                ),
            ));
        }
        Ok(self.out_shapes(x))
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        let x = inputs[0];
        let mut start = 0;
        Ok(self
            .sizes
            .iter()
            .zip(self.out_shapes(x.shape()))
            .map(|(&n, shape)| {
                let piece = piece_along(x, self.axis, start, n, &shape);
                start += n;
                piece
            })
            .collect())
    }
    fn backward(
        &self,
        inputs: &[Var<F>],
        outputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let tape = inputs[0].tape();
        let filled: Vec<Var<F>> = grads
            .iter()
            .zip(outputs)
            .map(|(g, o)| {
                g.clone()
                    .unwrap_or_else(|| tape.constant(ArrayD::zeros(o.shape())))
            })
            .collect();
        let refs: Vec<&Var<F>> = filled.iter().collect();
        let joined = if self.squeeze {
            tape.apply(Stack(self.axis), &refs)?
        } else {
            tape.apply(Concat(self.axis), &refs)?
        };
        Ok(vec![Some(joined)])
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// Stacks same-shape inputs along a new `axis`.
///
/// Gradient: `g` unstacked along `axis`, one piece per input.
pub struct Stack(pub usize);

impl<F: Float> Op<F> for Stack {
    fn name(&self) -> &str {
        "stack"
    }
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let Some(first) = inputs.first() else {
            return Err(Error::invalid("stack", "needs at least one input"));
        };
        if inputs.iter().any(|s| s != first) {
            return Err(Error::shape("stack", inputs, "all inputs must have one shape"));
        }
        if self.0 > first.len() {
            return Err(Error::Axis {
                op: "stack".into(),
                axis: self.0 as isize,
                shape: first.to_vec(),
            });
        }
        let mut out = first.to_vec();
        out.insert(self.0, inputs.len());
        Ok(out)
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|x| x.shape()).collect();
        let shape = <Self as Op<F>>::shape(self, &shapes)?;
        let views: Vec<_> = inputs.iter().map(|x| x.view()).collect();
        Ok(eddy_tape::join_along(&views, self.0, &shape))
    }
    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let split = Split {
            axis: self.0,
            sizes: vec![1; inputs.len()],
            squeeze: true,
        };
        let pieces = g.tape().apply_multi(split, &[g])?;
        Ok(inputs
            .iter()
            .zip(pieces)
            .map(|(x, p)| x.requires_grad().then_some(p))
            .collect())
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

#[cfg(test)]
mod tests {
    //! Each kernel against a slow reference that moves one element at a time by its index.
    use super::*;
    use ndarray::Dimension;

    fn seq(shape: &[usize]) -> ArrayD<f64> {
        let mut k = 0.0;
        ArrayD::from_shape_simple_fn(shape, || {
            k += 1.0;
            k * 0.5 - 3.0
        })
    }

    fn run<O: Op<f64>>(op: O, xs: &[&ArrayD<f64>]) -> ArrayD<f64> {
        let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
        let out = op.forward(xs).unwrap();
        assert_eq!(out.shape(), op.shape(&shapes).unwrap().as_slice());
        out
    }

    #[test]
    fn stack_matches_a_reference_along_every_axis_and_for_views_not_in_standard_layout() {
        // The second input is a transpose: not in standard layout, so it is read by index.
        let a = seq(&[3, 3]);
        let b = seq(&[3, 3]).reversed_axes() * 2.0;
        for axis in 0..3 {
            let out = run(Stack(axis), &[&a, &b]);
            for (idx, v) in out.indexed_iter() {
                let mut i = idx.slice().to_vec();
                let which = i.remove(axis);
                let want = [&a, &b][which][&i[..]];
                assert_eq!(*v, want, "axis {axis} at {i:?}");
            }
        }
    }

    /// The row-major linear index of `idx` in `shape`, and back.
    fn linear(idx: &[usize], shape: &[usize]) -> usize {
        idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
    }
    fn unlinear(mut k: usize, shape: &[usize]) -> Vec<usize> {
        let mut idx = vec![0; shape.len()];
        for (i, &d) in shape.iter().enumerate().rev() {
            idx[i] = k % d;
            k /= d;
        }
        idx
    }

    #[test]
    fn reshape_keeps_row_major_order() {
        let x = seq(&[2, 3, 4]);
        for to in [vec![24], vec![4, 6], vec![3, 1, 8], vec![2, 12, 1]] {
            let y = run(Reshape(to.clone()), &[&x]);
            for (idx, &v) in y.indexed_iter() {
                let k = linear(idx.slice(), &to);
                assert_eq!(v, x[IxDyn(&unlinear(k, x.shape()))]);
            }
        }
        // A non-standard layout is read in logical order.
        let t = x.clone().reversed_axes();
        let y = run(Reshape(vec![24]), &[&t]);
        for (k, &v) in y.iter().enumerate() {
            assert_eq!(v, t[IxDyn(&unlinear(k, t.shape()))]);
        }
    }

    #[test]
    fn permute_moves_each_element_to_its_permuted_index() {
        let x = seq(&[2, 3, 4]);
        for axes in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
            let y = run(Permute(axes.to_vec()), &[&x]);
            for (idx, &v) in y.indexed_iter() {
                let mut src = [0; 3];
                for (i, &a) in axes.iter().enumerate() {
                    src[a] = idx[i];
                }
                assert_eq!(v, x[IxDyn(&src)]);
            }
            assert!(y.is_standard_layout());
        }
    }

    #[test]
    fn narrow_and_pad_are_adjoint_slices() {
        let x = seq(&[3, 5]);
        let y = run(
            Narrow {
                axis: 1,
                start: 1,
                len: 3,
            },
            &[&x],
        );
        for (idx, &v) in y.indexed_iter() {
            assert_eq!(v, x[[idx[0], idx[1] + 1]]);
        }
        let p = run(
            Pad {
                axis: 1,
                start: 1,
                total: 5,
            },
            &[&y],
        );
        for (idx, &v) in p.indexed_iter() {
            let inside = (1..4).contains(&idx[1]);
            assert_eq!(v, if inside { x[[idx[0], idx[1]]] } else { 0.0 });
        }
        // Empty slices.
        assert_eq!(
            run(
                Narrow {
                    axis: 0,
                    start: 3,
                    len: 0
                },
                &[&x]
            )
            .shape(),
            &[0, 5]
        );
    }

    #[test]
    fn concat_places_each_input_after_the_previous() {
        let (a, b, c) = (
            seq(&[2, 1, 3]),
            seq(&[2, 4, 3]).mapv(|v| v + 100.0),
            seq(&[2, 2, 3]),
        );
        let y = run(Concat(1), &[&a, &b, &c]);
        assert_eq!(y.shape(), &[2, 7, 3]);
        for (idx, &v) in y.indexed_iter() {
            let (i, j, k) = (idx[0], idx[1], idx[2]);
            let want = match j {
                0 => a[[i, 0, k]],
                1..=4 => b[[i, j - 1, k]],
                _ => c[[i, j - 5, k]],
            };
            assert_eq!(v, want);
        }
    }

    #[test]
    fn split_unstack_and_concat_along_every_axis_match_ndarray_slices() {
        // A transposed input is not in standard layout: it is copied in logical order first.
        let x = seq(&[4, 3, 2]).reversed_axes();
        for axis in 0..3 {
            let size = x.shape()[axis];
            let sizes = vec![1, size - 1];
            let pieces = Split {
                axis,
                sizes: sizes.clone(),
                squeeze: false,
            }
            .forward(&[&x])
            .unwrap();
            let mut start = 0;
            for (piece, n) in pieces.iter().zip(&sizes) {
                let want = x.slice_axis(Axis(axis), Slice::from(start..start + n));
                assert_eq!(piece, &want, "split along axis {axis}");
                assert!(piece.is_standard_layout());
                start += n;
            }
            let joined = run(
                Concat(axis),
                &[&pieces[0], &pieces[1].t().to_owned().reversed_axes()],
            );
            assert_eq!(joined, x, "concat along axis {axis}");
            let rows = Split {
                axis,
                sizes: vec![1; size],
                squeeze: true,
            }
            .forward(&[&x])
            .unwrap();
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(row, &x.index_axis(Axis(axis), i), "unstack along axis {axis}");
            }
        }
    }

    #[test]
    fn index_select_and_index_add_with_repeats() {
        let x = seq(&[4, 3]);
        let indices = vec![2, 0, 2, 3, 2];
        let y = run(
            IndexSelect {
                axis: 0,
                indices: indices.clone(),
            },
            &[&x],
        );
        for (idx, &v) in y.indexed_iter() {
            assert_eq!(v, x[[indices[idx[0]], idx[1]]]);
        }
        let y1 = run(
            IndexSelect {
                axis: 1,
                indices: vec![1, 1],
            },
            &[&x],
        );
        for (idx, &v) in y1.indexed_iter() {
            assert_eq!(v, x[[idx[0], 1]]);
        }
        // index_add: the naive scatter-add.
        let s = run(
            IndexAdd {
                axis: 0,
                indices: indices.clone(),
                size: 4,
            },
            &[&y],
        );
        let mut want = ArrayD::<f64>::zeros(IxDyn(&[4, 3]));
        for (k, &i) in indices.iter().enumerate() {
            for j in 0..3 {
                want[[i, j]] += y[[k, j]];
            }
        }
        assert_eq!(s, want);
        assert!(
            s.index_axis(Axis(0), 1).iter().all(|&v| v == 0.0),
            "row 1 is never picked"
        );
    }

    #[test]
    fn where_picks_elementwise_with_broadcasting() {
        let mask = ArrayD::from_shape_vec(vec![2, 1], vec![true, false]).unwrap();
        let a = seq(&[2, 3]);
        let b = seq(&[3]).mapv(|v| v * 10.0);
        let y = run(Where(mask.clone()), &[&a, &b]);
        for (idx, &v) in y.indexed_iter() {
            let want = if mask[[idx[0], 0]] {
                a[[idx[0], idx[1]]]
            } else {
                b[[idx[1]]]
            };
            assert_eq!(v, want);
        }
    }

    #[test]
    fn kernels_work_in_f32() {
        let x = ArrayD::from_shape_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let y = Permute(vec![1, 0]).forward(&[&x]).unwrap();
        assert_eq!(y.into_raw_vec_and_offset().0, vec![1.0, 3.0, 2.0, 4.0]);
        let z = Concat(0).forward(&[&x, &x]).unwrap();
        assert_eq!(z.shape(), &[4, 2]);
    }
}
