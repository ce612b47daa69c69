//! The arithmetic the engine itself needs: `+ - * /` with NumPy broadcasting, negation,
//! scalar scale and shift, and the two broadcasting ops `sum_to` / `broadcast_to` that carry
//! gradients back to an input's shape. The reverse pass accumulates gradients with them, and
//! the operators on [`Var`] live here because Rust puts operator impls beside the type.
//! Every other op is in `eddy-ops`.

use crate::{Error, Float, Op, Result, Saves, Var};
use ndarray::{ArrayD, Axis, IxDyn};
use std::ops::{Add, Div, Mul, Neg, Sub};

/// The broadcast of two shapes under NumPy rules, or `None` if they are incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Sums `x` down to `shape` (the inverse of broadcasting `shape` up to `x`'s shape).
///
/// # Errors
/// [`Error::Shape`] (op `sum_to`) if `shape` does not broadcast to `x`'s shape, for instance
/// if it has more dimensions.
pub fn sum_to_shape<F: Float>(x: &ArrayD<F>, shape: &[usize]) -> Result<ArrayD<F>> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    if broadcast_shapes(x.shape(), shape).as_deref() != Some(x.shape()) {
        return Err(Error::shape(
            "sum_to",
            &[x.shape(), shape],
            "the target must broadcast to the input's shape",
        ));
    }
    if x.is_empty() {
        // Summing an empty array's zero-length axis first could make a huge intermediate
        // (`[0, 2^40]` → `[2^40]`); the sum of nothing is zeros of the target's shape.
        return Ok(ArrayD::zeros(IxDyn(shape)));
    }
    let lead = x.ndim() - shape.len();
    let mut out = x.clone();
    for _ in 0..lead {
        out = out.sum_axis(Axis(0));
    }
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && out.shape()[i] != 1 {
            out = out.sum_axis(Axis(i)).insert_axis(Axis(i));
        }
    }
    Ok(out)
}

/// The number of elements of `shape` if an array of that shape of `elem_bytes`-byte elements
/// can exist, `None` if not: the product of its non-zero dimensions must be at most
/// `isize::MAX` (ndarray's rule, even for an empty array), and an array with elements must
/// take at most `isize::MAX` bytes (the allocator's limit).
pub fn checked_len(shape: &[usize], elem_bytes: usize) -> Option<usize> {
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)?;
    if shape.contains(&0) {
        return Some(0);
    }
    let bytes = nonzero.checked_mul(elem_bytes.max(1))?;
    (bytes <= isize::MAX as usize).then_some(nonzero)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

/// Elementwise `a ∘ b` with broadcasting, for ∘ in `+ - * /`.
///
/// Gradient: each input's gradient is summed back to its shape: `d(a+b) = (g, g)`,
/// `d(a-b) = (g, -g)`, `d(a·b) = (g·b, g·a)`, `d(a/b) = (g/b, -g·y/b)` with `y = a/b`.
struct Binary(BinaryKind);

impl Binary {
    fn name(&self) -> &'static str {
        match self.0 {
            BinaryKind::Add => "add",
            BinaryKind::Sub => "sub",
            BinaryKind::Mul => "mul",
            BinaryKind::Div => "div",
        }
    }
}

impl<F: Float> Op<F> for Binary {
    fn name(&self) -> &str {
        Binary::name(self)
    }

    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        broadcast_shapes(inputs[0], inputs[1]).ok_or_else(|| Error::Broadcast {
            op: Binary::name(self).into(),
            lhs: inputs[0].to_vec(),
            rhs: inputs[1].to_vec(),
        })
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let (a, b) = (inputs[0], inputs[1]);
        if a.shape() == b.shape() {
            // Same shape: one fused loop per kind (monomorphised, so it vectorises), no
            // broadcasting machinery.
            return Ok(match self.0 {
                BinaryKind::Add => map2(a, b, |x, y| x + y),
                BinaryKind::Sub => map2(a, b, |x, y| x - y),
                BinaryKind::Mul => map2(a, b, |x, y| x * y),
                BinaryKind::Div => map2(a, b, |x, y| x / y),
            });
        }
        Ok(match self.0 {
            BinaryKind::Add => a + b,
            BinaryKind::Sub => a - b,
            BinaryKind::Mul => a * b,
            BinaryKind::Div => a / b,
        })
    }

    fn backward(&self, inputs: &[Var<F>], output: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let (ga, gb) = match self.0 {
            BinaryKind::Add => (g.clone(), g.clone()),
            BinaryKind::Sub => (g.clone(), g.neg()?),
            BinaryKind::Mul => (g.mul(b)?, g.mul(a)?),
            BinaryKind::Div => (g.div(b)?, g.mul(output)?.div(b)?.neg()?),
        };
        Ok(vec![
            a.requires_grad().then(|| ga.sum_to(a.shape())).transpose()?,
            b.requires_grad().then(|| gb.sum_to(b.shape())).transpose()?,
        ])
    }
    fn saves(&self) -> Saves {
        // add and sub pass `g` on (shapes only); mul reads the inputs; div reads `b` and `a / b`.
        match self.0 {
            BinaryKind::Add | BinaryKind::Sub => Saves::SHAPES,
            BinaryKind::Mul => Saves::INPUTS,
            BinaryKind::Div => Saves::ALL,
        }
    }
}

/// `f(a, b)` elementwise for arrays of one shape: a plain loop over the elements when both are
/// laid out in row-major order (split across the rayon pool when large, [`crate::split`]), else
/// ndarray's `Zip`.
pub(crate) fn map2<F: Float>(a: &ArrayD<F>, b: &ArrayD<F>, f: impl Fn(F, F) -> F + Sync) -> ArrayD<F> {
    match (a.as_slice(), b.as_slice()) {
        (Some(x), Some(y)) => {
            let v = crate::split::map2(x, y, crate::split::SPLIT_MIN, f);
            ArrayD::from_shape_vec(a.raw_dim(), v).expect("the length is the shape's product")
        }
        _ => ndarray::Zip::from(a).and(b).map_collect(|&x, &y| f(x, y)),
    }
}

/// `x · s + t` for scalars `s`, `t`: negation, scaling and shifting in one op.
///
/// Gradient: `dx = g · s`.
struct Affine<F> {
    scale: F,
    shift: F,
    name: &'static str,
}

impl<F: Float> Op<F> for Affine<F> {
    fn name(&self) -> &str {
        self.name
    }

    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(inputs[0].to_vec())
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let (s, t) = (self.scale, self.shift);
        let x = inputs[0];
        Ok(match x.as_slice() {
            Some(xs) => {
                let v = crate::split::map(xs, crate::split::SPLIT_MIN, |x| x * s + t);
                ArrayD::from_shape_vec(x.raw_dim(), v).expect("the length is the shape's product")
            }
            None => x.mapv(|x| x * s + t),
        })
    }

    fn backward(&self, _: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        Ok(vec![Some(g.scale(self.scale)?)])
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// Sums `x` down to a shape it was broadcast from.
///
/// Gradient: `dx = broadcast_to(g, x.shape)`.
struct SumTo(Vec<usize>);

impl<F: Float> Op<F> for SumTo {
    fn name(&self) -> &str {
        "sum_to"
    }

    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        match broadcast_shapes(inputs[0], &self.0) {
            Some(s) if s == inputs[0] => Ok(self.0.clone()),
            _ => Err(Error::shape(
                "sum_to",
                &[inputs[0], &self.0],
                "the target must broadcast to the input's shape",
            )),
        }
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        sum_to_shape(inputs[0], &self.0)
    }

    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        Ok(vec![Some(g.broadcast_to(inputs[0].shape())?)])
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

/// Broadcasts `x` to a larger shape (NumPy rules), materialising the copies.
///
/// Gradient: `dx = sum_to(g, x.shape)`.
struct BroadcastTo(Vec<usize>);

impl<F: Float> Op<F> for BroadcastTo {
    fn name(&self) -> &str {
        "broadcast_to"
    }

    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        match broadcast_shapes(inputs[0], &self.0) {
            Some(s) if s == self.0 => Ok(self.0.clone()),
            _ => Err(Error::shape(
                "broadcast_to",
                &[inputs[0], &self.0],
                "the input cannot be broadcast to the target",
            )),
        }
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
        let x = inputs[0];
        if let (1, Some(&v)) = (x.len(), x.iter().next()) {
            // A scalar (a mean's gradient, a bias of one): one fill, not an indexed walk of
            // the output (`to_owned` of a broadcast view steps a dynamic index per element).
            return Ok(ArrayD::from_elem(IxDyn(&self.0), v));
        }
        let view = x
            .broadcast(IxDyn(&self.0))
            .expect("the shape rule checked the broadcast");
        Ok(view.to_owned())
    }

    fn backward(&self, inputs: &[Var<F>], _: &Var<F>, g: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
        Ok(vec![Some(g.sum_to(inputs[0].shape())?)])
    }
    fn saves(&self) -> Saves {
        Saves::SHAPES
    }
}

impl<F: Float> Var<F> {
    /// `self + other`, broadcasting. Also the `+` operator.
    pub fn add(&self, other: &Var<F>) -> Result<Var<F>> {
        self.tape().apply(Binary(BinaryKind::Add), &[self, other])
    }

    /// `self - other`, broadcasting. Also the `-` operator.
    pub fn sub(&self, other: &Var<F>) -> Result<Var<F>> {
        self.tape().apply(Binary(BinaryKind::Sub), &[self, other])
    }

    /// `self · other` elementwise, broadcasting. Also the `*` operator.
    pub fn mul(&self, other: &Var<F>) -> Result<Var<F>> {
        self.tape().apply(Binary(BinaryKind::Mul), &[self, other])
    }

    /// `self / other` elementwise, broadcasting. Also the `/` operator.
    pub fn div(&self, other: &Var<F>) -> Result<Var<F>> {
        self.tape().apply(Binary(BinaryKind::Div), &[self, other])
    }

    /// `-self`.
    pub fn neg(&self) -> Result<Var<F>> {
        self.affine(-F::one(), F::zero(), "neg")
    }

    /// `self · s` for a scalar `s`.
    pub fn scale(&self, s: F) -> Result<Var<F>> {
        self.affine(s, F::zero(), "scale")
    }

    /// `self + t` for a scalar `t`.
    pub fn shift(&self, t: F) -> Result<Var<F>> {
        self.affine(F::one(), t, "shift")
    }

    /// `self · s + t` for scalars `s`, `t`.
    pub fn affine(&self, s: F, t: F, name: &'static str) -> Result<Var<F>> {
        self.tape().apply(
            Affine {
                scale: s,
                shift: t,
                name,
            },
            &[self],
        )
    }

    /// Sums down to `shape`, which must broadcast to this value's shape.
    pub fn sum_to(&self, shape: &[usize]) -> Result<Var<F>> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        self.tape().apply(SumTo(shape.to_vec()), &[self])
    }

    /// Broadcasts up to `shape` (NumPy rules).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Var<F>> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        self.tape().apply(BroadcastTo(shape.to_vec()), &[self])
    }

    /// The sum of all elements, as a scalar of shape `[]`.
    pub fn sum_all(&self) -> Result<Var<F>> {
        self.tape().apply(SumTo(Vec::new()), &[self])
    }
}

/// Operators on `Var`s return `Result<Var>`; a `Result` on the left chains (`(&a * &b + &c)?`).
macro_rules! operators {
    ($($trait:ident $method:ident $kind:ident;)*) => {$(
        impl<F: Float> $trait<&Var<F>> for &Var<F> {
            type Output = Result<Var<F>>;
            fn $method(self, rhs: &Var<F>) -> Result<Var<F>> {
                self.tape().apply(Binary(BinaryKind::$kind), &[self, rhs])
            }
        }
        impl<F: Float> $trait<Var<F>> for Var<F> {
            type Output = Result<Var<F>>;
            fn $method(self, rhs: Var<F>) -> Result<Var<F>> {
                (&self).$method(&rhs)
            }
        }
        impl<F: Float> $trait<&Var<F>> for Var<F> {
            type Output = Result<Var<F>>;
            fn $method(self, rhs: &Var<F>) -> Result<Var<F>> {
                (&self).$method(rhs)
            }
        }
        impl<F: Float> $trait<Var<F>> for &Var<F> {
            type Output = Result<Var<F>>;
            fn $method(self, rhs: Var<F>) -> Result<Var<F>> {
                self.$method(&rhs)
            }
        }
        impl<F: Float> $trait<&Var<F>> for Result<Var<F>> {
            type Output = Result<Var<F>>;
            fn $method(self, rhs: &Var<F>) -> Result<Var<F>> {
                (&self?).$method(rhs)
            }
        }
        impl<F: Float> $trait<Result<Var<F>>> for &Var<F> {
            type Output = Result<Var<F>>;
            fn $method(self, rhs: Result<Var<F>>) -> Result<Var<F>> {
                self.$method(&rhs?)
            }
        }
        impl<F: Float> $trait<F> for &Var<F> {
            type Output = Result<Var<F>>;
            fn $method(self, rhs: F) -> Result<Var<F>> {
                let rhs = self.tape().scalar(rhs);
                self.$method(&rhs)
            }
        }
        impl<F: Float> $trait<F> for Var<F> {
            type Output = Result<Var<F>>;
            fn $method(self, rhs: F) -> Result<Var<F>> {
                <&Var<F> as $trait<F>>::$method(&self, rhs)
            }
        }
    )*};
}

operators! {
    Add add Add;
    Sub sub Sub;
    Mul mul Mul;
    Div div Div;
}

impl<F: Float> Neg for &Var<F> {
    type Output = Result<Var<F>>;
    fn neg(self) -> Result<Var<F>> {
        Var::neg(self)
    }
}

impl<F: Float> Neg for Var<F> {
    type Output = Result<Var<F>>;
    fn neg(self) -> Result<Var<F>> {
        Var::neg(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tape;
    use ndarray::{arr1, arr2};

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast_shapes(&[3, 1], &[4]), Some(vec![3, 4]));
        assert_eq!(broadcast_shapes(&[], &[2, 3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shapes(&[2, 3], &[3, 2]), None);
    }

    #[test]
    fn broadcast_error_names_the_op_and_shapes() {
        let t = Tape::<f64>::new();
        let a = t.input(ArrayD::zeros(vec![2, 3]));
        let b = t.input(ArrayD::zeros(vec![3, 2]));
        let e = (&a + &b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "add: shapes [2, 3] and [3, 2] cannot be broadcast together"
        );
    }

    #[test]
    fn gradients_sum_back_to_each_shape() -> Result<()> {
        let t = Tape::<f64>::new();
        let a = t.input(arr2(&[[1.0, 2.0], [3.0, 4.0]]).into_dyn());
        let b = t.input(arr1(&[10.0, 20.0]).into_dyn());
        let y = (&a * &b)?.sum_all()?;
        let g = y.backward()?;
        assert_eq!(g.var(&b).unwrap(), &arr1(&[4.0, 6.0]).into_dyn());
        assert_eq!(
            g.var(&a).unwrap(),
            &arr2(&[[10.0, 20.0], [10.0, 20.0]]).into_dyn()
        );
        Ok(())
    }

    #[test]
    fn one_element_broadcasts_as_the_general_case() -> Result<()> {
        // The one-element fill and the strided copy give the same array, whatever the ranks.
        let t = Tape::<f64>::new();
        for (from, to) in [
            (vec![], vec![3, 2, 1]),
            (vec![1], vec![2, 3]),
            (vec![1, 1], vec![4, 1]),
        ] {
            let x = t.input(ArrayD::from_elem(from.clone(), 2.5));
            let y = x.broadcast_to(&to)?;
            assert_eq!(
                y.value(),
                &ArrayD::from_elem(to.clone(), 2.5),
                "{from:?} -> {to:?}"
            );
        }
        let row = t.input(arr1(&[1.0, 2.0]).into_dyn());
        let y = row.broadcast_to(&[2, 2])?;
        assert_eq!(y.value(), &arr2(&[[1.0, 2.0], [1.0, 2.0]]).into_dyn());
        Ok(())
    }

    #[test]
    fn mixing_tapes_is_an_error() {
        let (t1, t2) = (Tape::<f32>::new(), Tape::<f32>::new());
        let a = t1.input(ArrayD::zeros(vec![2]));
        let b = t2.input(ArrayD::zeros(vec![2]));
        assert!(matches!(&a + &b, Err(Error::TapeMismatch { .. })));
    }
}
