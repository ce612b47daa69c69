//! A user's gate math as one tape op: [`pointwise`] runs a [`Pointwise`] over whole arrays in one
//! fused loop, and its backward is the same math over [`Dual`] numbers — no backward code.
//!
//! A cell written from primitive ops (`chunk`, `sigmoid`, `tanh`, `*`, `+`) records a dozen ops a
//! step, each a pass over memory and an op's bookkeeping; the built-in cells fuse that math by
//! hand. [`pointwise`] gives a user's cell the same: the math is written once, generic over
//! [`Real`], and eddy compiles it for the cell (per kernel level) and differentiates it
//! (forward-mode, one tangent per input, element by element). Gradients of gradients work too:
//! when the reverse pass is recorded (`create_graph`), the derivative is built from the tape's
//! own differentiable ops by evaluating the same `eval` over tape values.

use crate::fused::{flat, shaped};
use crate::kernels::fresh::{written_all, written_by, written_each};
use crate::kernels::gates::column_sums;
use crate::kernels::pointwise::{forward, memo_count, vjp, Source, Target};
pub use crate::kernels::pointwise::{Dual, Pointwise, Real};
use crate::VarExt;
use eddy_tape::{Error, Float, MultiOp, Result, Var};
use ndarray::{ArrayD, IxDyn};
use std::cell::RefCell;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// `p` over the elements of `inputs`, as one op with `O` outputs.
///
/// Each input is a `Var` and the number of parts it is split into along its last axis (the
/// gates `[B, 4H]` as `(&gates, 4)` are `i, f, g, o`, without `chunk` copies); the parts, in
/// order, are `p`'s `I` inputs. All parts have the same width `n`. Inputs with the most axes
/// (`[..., k·n]`) share their leading axes, which the outputs take (`[..., n]`); a 1-D input
/// `[k·n]` is broadcast over the rows (a per-unit parameter), and its gradient summed over them.
///
/// # Example
/// An LSTM step's math in one op, its gradient checked in `f64`:
/// ```
/// use eddy_ops::pointwise::{pointwise, Pointwise, Real};
/// use eddy_tape::{gradcheck, Error, GradcheckOptions, Tape, Var};
/// use ndarray::{ArrayD, IxDyn};
///
/// struct LstmGates;
/// impl Pointwise<5, 2> for LstmGates {
///     #[inline]
///     fn eval<R: Real>(&self, [i, f, g, o, c]: [R; 5]) -> [R; 2] {
///         let c = f.sigmoid() * c + i.sigmoid() * g.tanh();
///         [o.sigmoid() * c.tanh(), c]
///     }
/// }
///
/// let gates = ArrayD::from_shape_fn(IxDyn(&[2, 12]), |ix| (ix[0] as f64 - 0.3 * ix[1] as f64).sin());
/// let c = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |ix| 0.5 - 0.2 * (ix[0] + ix[1]) as f64);
/// gradcheck(
///     |_: &Tape<f64>, x: &[Var<f64>]| {
///         let [h, c] = pointwise(LstmGates, &[(&x[0], 4), (&x[1], 1)])?;
///         (&h + &c)?.sum_all()
///     },
///     &[gates, c],
///     &GradcheckOptions::default(),
/// )?;
/// # Ok::<(), Error>(())
/// ```
///
/// # Errors
/// [`Error::Shape`] if the parts do not add up to `I`, an input's last axis does not split in
/// its parts, the parts' widths differ, or the inputs' leading axes disagree;
/// [`Error::Arity`] with no inputs.
pub fn pointwise<F, P, const I: usize, const O: usize>(
    p: P,
    inputs: &[(&Var<F>, usize)],
) -> Result<[Var<F>; O]>
where
    F: Float + Real,
    P: Pointwise<I, O>,
{
    let Some((first, _)) = inputs.first() else {
        return Err(Error::Arity {
            op: "pointwise".into(),
            expected: 1,
            got: 0,
        });
    };
    let vars: Vec<&Var<F>> = inputs.iter().map(|(v, _)| *v).collect();
    let tape = first.tape();
    let op = PointwiseOp::<P, I, O> {
        p,
        parts: inputs.iter().map(|(_, k)| *k).collect(),
        save: tape.is_recording() && vars.iter().any(|v| v.requires_grad()),
    };
    let mut outs = tape.apply_multi(op, &vars)?;
    outs.truncate(O); // the saved values stay with the op
    Ok(outs
        .try_into()
        .unwrap_or_else(|_| unreachable!("the op gives O outputs")))
}

/// The op behind [`pointwise`]: `p`, and the number of parts of each input.
///
/// Its outputs are the `O` values and, last, the function values the forward saves for the
/// backward (`[..., count·n]`, `count` = [`memo_count`] of `p`, or empty when nothing will need a
/// gradient); no gradient flows into that one.
pub struct PointwiseOp<P, const I: usize, const O: usize> {
    /// The math.
    pub p: P,
    /// How many parts each input is split into along its last axis (they add up to `I`).
    pub parts: Vec<usize>,
    /// Whether the forward saves the function values for a backward.
    pub save: bool,
}

/// The geometry the shape rule finds: `rows` rows of `n` per part, and the output shape.
struct Layout {
    rows: usize,
    n: usize,
    out: Vec<usize>,
    /// Per input: whether it is 1-D and broadcast over the rows.
    broadcast: Vec<bool>,
}

impl<P, const I: usize, const O: usize> PointwiseOp<P, I, O> {
    fn layout(&self, inputs: &[&[usize]]) -> Result<Layout> {
        let fail = |why: &str| Err(Error::shape("pointwise", inputs, why));
        if inputs.len() != self.parts.len() {
            return Err(Error::Arity {
                op: "pointwise".into(),
                expected: self.parts.len(),
                got: inputs.len(),
            });
        }
        let total = self.parts.iter().try_fold(0usize, |a, &k| a.checked_add(k));
        if self.parts.contains(&0) || total != Some(I) {
            return fail(&format!(
                "the inputs' parts {:?} must each be ≥ 1 and add up to the {I} inputs of the math",
                self.parts
            ));
        }
        if inputs.iter().any(|s| s.is_empty()) {
            return fail("every input needs an axis to split");
        }
        let mut n = None;
        for (s, &k) in inputs.iter().zip(&self.parts) {
            let last = s[s.len() - 1];
            if last % k != 0 || n.is_some_and(|n| n != last / k) {
                return fail("each input's last axis must split into its parts, all of one width");
            }
            n = Some(last / k);
        }
        let n = n.expect("an input");
        let full = inputs.iter().map(|s| s.len()).max().expect("an input");
        let lead = &inputs.iter().find(|s| s.len() == full).expect("an input")[..full - 1];
        for s in inputs {
            if s.len() != 1 && s.len() != full || s.len() == full && &s[..full - 1] != lead {
                return fail("the inputs must share their leading axes (or be 1-D, broadcast over them)");
            }
        }
        let mut out = lead.to_vec();
        out.push(n);
        let Some(rows) = lead.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
            return fail("the outputs' size overflows");
        };
        if rows
            .checked_mul(I.max(O))
            .and_then(|r| r.checked_mul(n))
            .is_none()
        {
            return fail("the outputs' size overflows");
        }
        Ok(Layout {
            rows,
            n,
            out,
            broadcast: inputs.iter().map(|s| full > 1 && s.len() == 1).collect(),
        })
    }

    /// Input `i` of the math: (the input it is a part of, its part).
    fn owners(&self) -> [(usize, usize); I] {
        let mut owners = [(0, 0); I];
        let mut i = 0;
        for (v, &k) in self.parts.iter().enumerate() {
            for q in 0..k {
                owners[i] = (v, q);
                i += 1;
            }
        }
        owners
    }
}

impl<F, P, const I: usize, const O: usize> MultiOp<F> for PointwiseOp<P, I, O>
where
    F: Float + Real,
    P: Pointwise<I, O>,
{
    fn name(&self) -> &str {
        "pointwise"
    }

    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
        let l = self.layout(inputs)?;
        let mut shapes = vec![l.out.clone(); O];
        let mut saved = l.out;
        let count = if self.save { memo_count(&self.p) } else { 0 };
        let wide = l.n.checked_mul(count);
        match (saved.last_mut(), wide) {
            (Some(last), Some(wide)) if l.rows.checked_mul(wide).is_some() => *last = wide,
            _ => {
                return Err(Error::shape(
                    "pointwise",
                    inputs,
                    "the saved values' size overflows",
                ))
            }
        }
        shapes.push(saved);
        Ok(shapes)
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|x| x.shape()).collect();
        let l = self.layout(&shapes)?;
        let data: Vec<_> = inputs.iter().map(|x| flat(x)).collect();
        let x = self.sources(&data, &l);
        let count = if self.save { memo_count(&self.p) } else { 0 };
        let mut outs = Vec::with_capacity(O + 1);
        // SAFETY: `forward` writes every element of each output and of the saved values
        // (`count` a row, each once), reading none first.
        let saved = unsafe {
            written_by(l.rows * count * l.n, |saved| {
                let save = self.save.then_some(saved);
                let bufs = written_all([l.rows * l.n; O], |y| forward(&self.p, l.rows, l.n, x, y, save));
                outs.extend(bufs.into_iter().map(|b| shaped(b, &l.out)));
            })
        };
        let mut shape = l.out.clone();
        *shape.last_mut().expect("an axis") = count * l.n;
        outs.push(shaped(saved, &shape));
        Ok(outs)
    }

    fn backward(
        &self,
        inputs: &[Var<F>],
        outputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let grads = &grads[..O];
        let tape = inputs[0].tape();
        let shapes: Vec<&[usize]> = inputs.iter().map(|x| x.shape()).collect();
        let l = self.layout(&shapes)?;
        if tape.is_recording() {
            return self.recorded_backward(inputs, grads, &l);
        }
        let data: Vec<_> = inputs.iter().map(|x| flat(x.value())).collect();
        let x = self.sources(&data, &l);
        let zeros = vec![F::zero(); l.n];
        let gdata: Vec<_> = grads
            .iter()
            .map(|g| g.as_ref().map(|g| flat(g.value())))
            .collect();
        let g: [Source<F>; O] = std::array::from_fn(|o| match &gdata[o] {
            Some(d) => Source { data: d, stride: l.n },
            None => Source {
                data: &zeros,
                stride: 0,
            },
        });
        // One buffer per input, `rows` rows of its parts (a broadcast input's per-row terms,
        // summed over the rows below).
        let lens: Vec<usize> = self.parts.iter().map(|&k| l.rows * k * l.n).collect();
        let count = memo_count(&self.p);
        let saved = flat(outputs[O].value());
        let saved = match saved.len() == l.rows * count * l.n {
            true => saved,
            // A forward that saved nothing (no input needed a gradient then): save them now.
            false => std::borrow::Cow::Owned({
                let mut s = vec![F::zero(); l.rows * count * l.n];
                let mut y: Vec<Vec<F>> = (0..O).map(|_| vec![F::zero(); l.rows * l.n]).collect();
                let y = y.iter_mut().map(|y| y.as_mut_slice()).collect::<Vec<_>>();
                let y: [&mut [F]; O] = y.try_into().unwrap_or_else(|_| unreachable!("O outputs"));
                forward(&self.p, l.rows, l.n, x, y, Some(&mut s));
                s
            }),
        };
        // SAFETY: `vjp` writes every element of every part of every row, reading none first.
        let bufs = unsafe {
            written_each(&lens, |mut bufs| {
                let mut targets = Vec::with_capacity(I);
                for (b, &k) in bufs.iter_mut().zip(&self.parts) {
                    targets.extend(Target::parts(b, l.rows, k, l.n));
                }
                let targets: [Target<F>; I] = targets.try_into().unwrap_or_else(|_| unreachable!("I parts"));
                vjp(&self.p, l.rows, l.n, x, g, &saved, targets);
            })
        };
        let mut out = Vec::with_capacity(inputs.len());
        for ((b, x), &broadcast) in bufs.into_iter().zip(inputs).zip(&l.broadcast) {
            if !x.requires_grad() {
                out.push(None);
                continue;
            }
            let v = if broadcast {
                column_sums(&b, x.shape()[0])
            } else {
                b
            };
            out.push(Some(tape.constant(shaped(v, x.shape()))));
        }
        Ok(out)
    }
}

impl<P, const I: usize, const O: usize> PointwiseOp<P, I, O> {
    /// The math's inputs as sources over the inputs' values.
    fn sources<'a, F: Float>(&self, data: &'a [std::borrow::Cow<'a, [F]>], l: &Layout) -> [Source<'a, F>; I] {
        let owners = self.owners();
        std::array::from_fn(|i| {
            let (v, q) = owners[i];
            let k = self.parts[v];
            Source {
                data: &data[v][(q * l.n).min(data[v].len())..],
                stride: if l.broadcast[v] { 0 } else { k * l.n },
            }
        })
    }

    /// The backward with the tape's own differentiable ops (`create_graph`): `eval` over dual
    /// numbers whose values are tape values, so the Jacobian is recorded and can be
    /// differentiated again. Constants fold, so a structurally zero derivative costs nothing.
    fn recorded_backward<F>(
        &self,
        inputs: &[Var<F>],
        grads: &[Option<Var<F>>],
        l: &Layout,
    ) -> Result<Vec<Option<Var<F>>>>
    where
        F: Float + Real,
        P: Pointwise<I, O>,
    {
        let nodes = Nodes::default();
        let owners = self.owners();
        let mut part = Vec::with_capacity(I);
        for &(v, q) in &owners {
            let k = self.parts[v];
            let x = &inputs[v];
            part.push(if k == 1 {
                x.clone()
            } else {
                x.narrow(-1, q * l.n, l.n)?
            });
        }
        let xs: [Dual<Sym<F>, I>; I] =
            std::array::from_fn(|i| Dual::variable(nodes.node(Ok(part[i].clone())), i));
        let ys = self.p.eval(xs);
        let gs: Vec<Option<Sym<F>>> = grads
            .iter()
            .map(|g| g.clone().map(|g| nodes.node(Ok(g))))
            .collect();
        let mut dparts = Vec::with_capacity(I);
        for (i, x) in part.iter().enumerate() {
            let mut acc = Sym::Const(F::zero());
            for (y, g) in ys.iter().zip(&gs) {
                if let Some(g) = g {
                    acc = acc + *g * y.d[i];
                }
            }
            let d = match acc {
                Sym::Const(c) => x.tape().constant(ArrayD::from_elem(IxDyn(x.shape()), c)),
                Sym::Node(_, k) => nodes.var(k),
            };
            dparts.push(fit(d, x.shape())?);
        }
        if let Some(e) = nodes.error.into_inner() {
            return Err(e);
        }
        let mut out = Vec::with_capacity(inputs.len());
        let mut dparts = dparts.into_iter();
        for (x, &k) in inputs.iter().zip(&self.parts) {
            let ds: Vec<Var<F>> = dparts.by_ref().take(k).collect();
            if !x.requires_grad() {
                out.push(None);
            } else if k == 1 {
                out.push(ds.into_iter().next());
            } else {
                out.push(Some(crate::concat(&ds.iter().collect::<Vec<_>>(), -1)?));
            }
        }
        Ok(out)
    }
}

/// `d` summed or broadcast to `shape` (a part's gradient against the part's shape).
fn fit<F: Float>(d: Var<F>, shape: &[usize]) -> Result<Var<F>> {
    if d.shape() == shape {
        Ok(d)
    } else if d.shape().iter().product::<usize>() > shape.iter().product() {
        d.sum_to(shape)
    } else {
        d.broadcast_to(shape)
    }
}

/// The tape values a recorded backward builds, and the first error among their ops.
struct Nodes<F: Float> {
    vars: RefCell<Vec<Var<F>>>,
    error: RefCell<Option<Error>>,
}

impl<F: Float> Default for Nodes<F> {
    fn default() -> Self {
        Nodes {
            vars: RefCell::new(Vec::new()),
            error: RefCell::new(None),
        }
    }
}

impl<F: Float> Nodes<F> {
    /// `v` as a number, or (keeping the first error) a NaN constant.
    fn node(&self, v: Result<Var<F>>) -> Sym<'_, F> {
        match v {
            Ok(v) => {
                let mut vars = self.vars.borrow_mut();
                vars.push(v);
                Sym::Node(self, vars.len() - 1)
            }
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                Sym::Const(F::nan())
            }
        }
    }
    fn var(&self, k: usize) -> Var<F> {
        self.vars.borrow()[k].clone()
    }
}

/// A number of the recorded backward: a constant (folded at once) or a tape value.
#[derive(Clone, Copy)]
enum Sym<'a, F: Float> {
    Const(F),
    Node(&'a Nodes<F>, usize),
}

impl<'a, F: Float + Real> Sym<'a, F> {
    /// `f` of a tape value through the op `op`, or of a constant through `c`.
    fn map(self, c: impl FnOnce(F) -> F, op: impl FnOnce(&Var<F>) -> Result<Var<F>>) -> Self {
        match self {
            Sym::Const(a) => Sym::Const(c(a)),
            Sym::Node(nodes, k) => nodes.node(op(&nodes.var(k))),
        }
    }
    /// `a ∘ b` of two tape values (a constant made a scalar tape value).
    fn both(self, o: Self, op: impl FnOnce(&Var<F>, &Var<F>) -> Result<Var<F>>) -> Self {
        let nodes = match (self, o) {
            (Sym::Node(n, _), _) | (_, Sym::Node(n, _)) => n,
            (Sym::Const(_), Sym::Const(_)) => unreachable!("folded by the callers"),
        };
        let var = |s: Self| match s {
            Sym::Node(_, k) => nodes.var(k),
            Sym::Const(c) => nodes.var(0).tape().scalar(c),
        };
        nodes.node(op(&var(self), &var(o)))
    }
}

impl<F: Float + Real> Add for Sym<'_, F> {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        match (self, o) {
            (Sym::Const(a), Sym::Const(b)) => Sym::Const(a + b),
            (Sym::Const(c), x) | (x, Sym::Const(c)) if c == F::zero() => x,
            (Sym::Const(c), x) | (x, Sym::Const(c)) => x.map(|a| a + c, |v| v.shift(c)),
            (a, b) => a.both(b, |a, b| a.add(b)),
        }
    }
}

impl<F: Float + Real> Sub for Sym<'_, F> {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        match (self, o) {
            (Sym::Const(a), Sym::Const(b)) => Sym::Const(a - b),
            (x, Sym::Const(c)) => x + Sym::Const(-c),
            (Sym::Const(c), y) => -y + Sym::Const(c),
            (a, b) => a.both(b, |a, b| a.sub(b)),
        }
    }
}

impl<F: Float + Real> Mul for Sym<'_, F> {
    type Output = Self;
    fn mul(self, o: Self) -> Self {
        match (self, o) {
            (Sym::Const(a), Sym::Const(b)) => Sym::Const(a * b),
            (Sym::Const(c), _) | (_, Sym::Const(c)) if c == F::zero() => Sym::Const(F::zero()),
            (Sym::Const(c), x) | (x, Sym::Const(c)) if c == F::one() => x,
            (Sym::Const(c), x) | (x, Sym::Const(c)) => x.map(|a| a * c, |v| v.scale(c)),
            (a, b) => a.both(b, |a, b| a.mul(b)),
        }
    }
}

impl<F: Float + Real> Div for Sym<'_, F> {
    type Output = Self;
    fn div(self, o: Self) -> Self {
        match (self, o) {
            (Sym::Const(a), Sym::Const(b)) => Sym::Const(a / b),
            (x, Sym::Const(c)) => x * Sym::Const(F::one() / c),
            (a, b) => a.both(b, |a, b| a.div(b)),
        }
    }
}

impl<F: Float + Real> Neg for Sym<'_, F> {
    type Output = Self;
    fn neg(self) -> Self {
        self.map(|a| -a, |v| v.neg())
    }
}

impl<F: Float + Real> Real for Sym<'_, F> {
    fn of(v: f64) -> Self {
        Sym::Const(<F as Real>::of(v))
    }
    fn sigmoid(self) -> Self {
        self.map(<F as Real>::sigmoid, |v| v.sigmoid())
    }
    fn tanh(self) -> Self {
        self.map(<F as Real>::tanh, |v| VarExt::tanh(v))
    }
    fn exp(self) -> Self {
        self.map(<F as Real>::exp, |v| VarExt::exp(v))
    }
    fn ln(self) -> Self {
        self.map(<F as Real>::ln, |v| v.log())
    }
    fn log_sigmoid(self) -> Self {
        self.map(<F as Real>::log_sigmoid, |v| v.log_sigmoid())
    }
    fn sqrt(self) -> Self {
        self.map(<F as Real>::sqrt, |v| VarExt::sqrt(v))
    }
    fn relu(self) -> Self {
        self.map(<F as Real>::relu, |v| v.relu())
    }
    fn step(self) -> Self {
        self.map(<F as Real>::step, |v| {
            Ok(v.tape().constant(v.value().mapv(<F as Real>::step)))
        })
    }
}
