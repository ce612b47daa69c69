//! The [`Tape`]: a Wengert list of the ops run in one step, in creation order.

use crate::deferred::Term;
use crate::keyed::KeyedMap;
use crate::op::Single;
use crate::{Error, Float, MultiOp, Op, Param, ParamId, Result, Var};
use ndarray::ArrayD;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

/// How a tape records: whether it records at all, and whether it checks for NaN and infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapeOptions {
    /// Record ops so gradients can be taken. Off: ops only compute values (inference).
    pub record: bool,
    /// Check every forward value and every gradient for NaN or infinity and return
    /// [`Error::NonFinite`] naming the first op that produced one.
    pub detect_anomaly: bool,
}

impl Default for TapeOptions {
    fn default() -> Self {
        TapeOptions {
            record: true,
            detect_anomaly: false,
        }
    }
}

/// A define-by-run tape: every op applied to its [`Var`]s is appended as a node.
///
/// Creation order is a topological order, so the reverse pass is a plain reverse loop. Make a
/// fresh tape for each step; [`Param`]s outlive it. A `Tape` is a cheap handle (cloning shares
/// the same tape) and lives on one thread.
///
/// ```
/// use eddy_tape::{Tape, Error};
/// use ndarray::arr1;
///
/// let tape = Tape::<f64>::new();
/// let x = tape.input(arr1(&[1.0, 2.0]).into_dyn());
/// let y = (&x * &x)?.sum_all()?; // y = Σ x²
/// let grads = y.backward()?;
/// assert_eq!(grads.var(&x).unwrap().as_slice().unwrap(), &[2.0, 4.0]);
/// # Ok::<(), Error>(())
/// ```
pub struct Tape<F: Float = f32> {
    pub(crate) inner: Rc<Inner<F>>,
}

pub(crate) struct Inner<F: Float> {
    pub(crate) nodes: RefCell<Vec<Node<F>>>,
    /// How many value slots the nodes hold: a leaf has one, an op one per output.
    pub(crate) slots: Cell<usize>,
    /// Whether ops are recorded right now: the option, switched off during a first-order reverse pass.
    pub(crate) recording: Cell<bool>,
    pub(crate) options: TapeOptions,
    /// Bound parameters: their slot and value. Not `Var`s, which would hold the tape itself
    /// (a reference cycle that would leak every tape).
    params: RefCell<KeyedMap<ParamId, Bound<F>>>,
    /// Values derived from bound parameters, made once per tape ([`Tape::memo`]).
    memo: RefCell<KeyedMap<MemoKey, Rc<dyn Any>>>,
    /// The weights of this tape by the address of their value ([`Tape::weight_of`]): bound
    /// parameters and values derived from them alone. Holding the `Arc` keeps the address from
    /// being reused while the tape lives.
    weights: RefCell<KeyedMap<usize, Weight<F>>>,
    /// The gradient terms handed to the running reverse pass ([`Tape::defer_outer`]): `Some`
    /// while a pass that takes them runs, each with the slot it sums into.
    pub(crate) deferred: RefCell<Option<Vec<SlotTerm<F>>>>,
}

/// What a [`Tape::memo`] value is filed under: the parameter and a name.
type MemoKey = (ParamId, &'static str);

/// A weight filed by its value's address: the parameter it comes from and the value itself.
type Weight<F> = (ParamId, Arc<ArrayD<F>>);

/// A deferred gradient term and the slot it sums into.
pub(crate) type SlotTerm<F> = (usize, Term<F>);

/// A bound parameter: its slot on the tape and its shared value.
type Bound<F> = (Option<usize>, Arc<ArrayD<F>>);

/// An input saved for the reverse pass: its slot (if it needs a gradient) and its value.
pub(crate) struct Saved<F: Float> {
    pub(crate) slot: Option<usize>,
    pub(crate) value: Kept<F>,
}

/// A value a node keeps for its backward rule: the array, or only its shape where the rule
/// does not read it ([`Op::saves`](crate::Op::saves)), so that the array is freed as soon as
/// nothing else holds it.
pub(crate) enum Kept<F: Float> {
    Value(Arc<ArrayD<F>>),
    Shape(ndarray::IxDyn),
}

impl<F: Float> Kept<F> {
    /// `value` itself if `keep`, else its shape.
    pub(crate) fn new(value: &Arc<ArrayD<F>>, keep: bool) -> Kept<F> {
        match keep {
            true => Kept::Value(Arc::clone(value)),
            false => Kept::Shape(value.raw_dim()),
        }
    }

    pub(crate) fn shape(&self) -> &[usize] {
        match self {
            Kept::Value(v) => v.shape(),
            Kept::Shape(s) => ndarray::Dimension::slice(s),
        }
    }

    /// A second handle on the same value (or shape).
    pub(crate) fn clone_ref(&self) -> Kept<F> {
        match self {
            Kept::Value(v) => Kept::Value(Arc::clone(v)),
            Kept::Shape(s) => Kept::Shape(s.clone()),
        }
    }
}

/// A node and the first of its value slots (its outputs are consecutive slots).
pub(crate) struct Node<F: Float> {
    pub(crate) first_slot: usize,
    pub(crate) kind: NodeKind<F>,
}

pub(crate) enum NodeKind<F: Float> {
    /// A leaf whose gradient the user wants (`tape.input`).
    Input,
    /// A bound parameter.
    Param(ParamId),
    /// The result of an op, with what its backward rule needs.
    Op {
        op: Rc<dyn MultiOp<F>>,
        inputs: Vec<Saved<F>>,
        outputs: Vec<Kept<F>>,
    },
    /// An op whose saved values a reverse pass has freed.
    Freed { name: String, outputs: usize },
}

impl<F: Float> NodeKind<F> {
    /// How many value slots the node holds.
    pub(crate) fn slots(&self) -> usize {
        match self {
            NodeKind::Input | NodeKind::Param(_) => 1,
            NodeKind::Op { outputs, .. } => outputs.len(),
            NodeKind::Freed { outputs, .. } => *outputs,
        }
    }
}

impl<F: Float> Clone for Tape<F> {
    fn clone(&self) -> Self {
        Tape {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<F: Float> Default for Tape<F> {
    fn default() -> Self {
        Tape::new()
    }
}

impl<F: Float> fmt::Debug for Tape<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tape({} nodes, {:?})", self.len(), self.inner.options)
    }
}

impl<F: Float> Tape<F> {
    /// A tape that records, without anomaly detection.
    pub fn new() -> Tape<F> {
        Tape::with_options(TapeOptions::default())
    }

    /// A tape that records nothing: ops only compute values (inference without a graph).
    pub fn no_grad() -> Tape<F> {
        Tape::with_options(TapeOptions {
            record: false,
            detect_anomaly: false,
        })
    }

    /// A tape that checks every value and gradient for NaN and infinity.
    pub fn with_anomaly_detection() -> Tape<F> {
        Tape::with_options(TapeOptions {
            record: true,
            detect_anomaly: true,
        })
    }

    /// A tape with the given options.
    pub fn with_options(options: TapeOptions) -> Tape<F> {
        Tape {
            inner: Rc::new(Inner {
                nodes: RefCell::new(Vec::new()),
                slots: Cell::new(0),
                recording: Cell::new(options.record),
                options,
                params: RefCell::new(KeyedMap::default()),
                memo: RefCell::new(KeyedMap::default()),
                weights: RefCell::new(KeyedMap::default()),
                deferred: RefCell::new(None),
            }),
        }
    }

    /// The options the tape was made with.
    pub fn options(&self) -> TapeOptions {
        self.inner.options
    }

    /// Whether ops applied now are recorded.
    pub fn is_recording(&self) -> bool {
        self.inner.recording.get()
    }

    /// The number of nodes recorded so far.
    pub fn len(&self) -> usize {
        self.inner.nodes.borrow().len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether two handles refer to the same tape.
    pub fn same(&self, other: &Tape<F>) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn addr(&self) -> usize {
        Rc::as_ptr(&self.inner) as *const u8 as usize
    }

    /// A leaf whose gradient you want (unless the tape does not record).
    pub fn input(&self, value: ArrayD<F>) -> Var<F> {
        self.input_shared(Arc::new(value))
    }

    /// Like [`Tape::input`], for an array already behind an `Arc` (no copy).
    pub fn input_shared(&self, value: Arc<ArrayD<F>>) -> Var<F> {
        let node = self.push_if_recording(1, || NodeKind::Input);
        Var::new(self.clone(), node, value)
    }

    /// A leaf whose gradient you do not want.
    pub fn constant(&self, value: ArrayD<F>) -> Var<F> {
        self.constant_shared(Arc::new(value))
    }

    /// Like [`Tape::constant`], for an array already behind an `Arc` (no copy): a data set's
    /// batch used by step after step, each on a fresh tape.
    ///
    /// ```
    /// use eddy_tape::Tape;
    /// use std::sync::Arc;
    ///
    /// let batch = Arc::new(ndarray::ArrayD::<f32>::ones(vec![4, 3]));
    /// let x = Tape::new().constant_shared(Arc::clone(&batch));
    /// assert!(Arc::ptr_eq(x.value_arc(), &batch));
    /// ```
    pub fn constant_shared(&self, value: Arc<ArrayD<F>>) -> Var<F> {
        Var::new(self.clone(), None, value)
    }

    /// A scalar constant.
    pub fn scalar(&self, value: F) -> Var<F> {
        self.constant(ArrayD::from_elem(Vec::new(), value))
    }

    /// Binds a parameter to this tape, sharing its array (no copy). Binding the same parameter
    /// again returns the same `Var`, so its gradient is collected in one place.
    pub fn param(&self, param: &Param<F>) -> Var<F> {
        if let Some((slot, value)) = self.inner.params.borrow().get(&param.id()) {
            return Var::new(self.clone(), *slot, Arc::clone(value));
        }
        let node = self.push_if_recording(1, || NodeKind::Param(param.id()));
        let var = Var::new(self.clone(), node, param.value());
        self.inner
            .params
            .borrow_mut()
            .insert(param.id(), (node, Arc::clone(var.value_arc())));
        self.inner.weights.borrow_mut().insert(
            value_key(var.value_arc()),
            (param.id(), Arc::clone(var.value_arc())),
        );
        var
    }

    /// The weight whose value `var` holds, on a recording or a no-grad tape: a bound parameter
    /// (its id), or a value this tape derived from weights alone (an id of its own). What
    /// "derived" means: the result of an op whose inputs are all weights (`w.transpose(0, 1)`,
    /// `w.chunk(4, 0)`, `w / ‖w‖`), or, while the tape records a forward pass, an op on weights
    /// and values without a gradient (constants) whose result has a weight's shape
    /// (`w * mask`). A derived weight is kept until the tape is dropped. Products by a weight
    /// prepare it once per tape through [`Tape::memo`] under this id: compute a derived weight
    /// once, outside the per-step code, to get that.
    pub fn weight_of(&self, var: &Var<F>) -> Option<ParamId> {
        if !var.tape().same(self) {
            return None;
        }
        self.inner
            .weights
            .borrow()
            .get(&value_key(var.value_arc()))
            .map(|(id, _)| *id)
    }

    /// Registers the outputs of an op on `inputs` as derived weights when they are (see
    /// [`Tape::weight_of`]).
    fn note_derived_weights(&self, inputs: &[&Var<F>], outs: &[Arc<ArrayD<F>>]) {
        let weights = self.inner.weights.borrow();
        let is_weight = |v: &Var<F>| weights.contains_key(&value_key(v.value_arc()));
        if weights.is_empty() || !inputs.iter().any(|v| is_weight(v)) {
            return;
        }
        let all = inputs.iter().all(|v| is_weight(v));
        let with_constants = self.is_recording()
            && inputs.iter().all(|v| is_weight(v) || v.slot().is_none())
            && outs
                .iter()
                .all(|o| inputs.iter().any(|v| is_weight(v) && v.shape() == o.shape()));
        drop(weights);
        if all || with_constants {
            let mut weights = self.inner.weights.borrow_mut();
            for o in outs {
                weights
                    .entry(value_key(o))
                    .or_insert_with(|| (ParamId::fresh(), Arc::clone(o)));
            }
        }
    }

    /// The parameter that `var` is on this tape, if it is a bound parameter (of a recording tape).
    pub fn param_of(&self, var: &Var<F>) -> Option<ParamId> {
        let slot = var.slot()?;
        if !var.tape().same(self) {
            return None;
        }
        let params = self.inner.params.borrow();
        params
            .iter()
            .find(|(_, (s, _))| *s == Some(slot))
            .map(|(id, _)| *id)
    }

    /// A value derived from the bound parameter `param` (a weight laid out for a kernel, say),
    /// made by `make` the first time it is asked for under `name` on this tape and shared
    /// afterwards: an op applied at every time step prepares its weight once per sequence.
    /// A parameter's value on a tape never changes, so neither does what is derived from it.
    /// `T` must not hold a `Var` or the tape itself: the tape would keep itself alive.
    pub fn memo<T: Any>(&self, param: ParamId, name: &'static str, make: impl FnOnce() -> T) -> Rc<T> {
        if let Some(v) = self.inner.memo.borrow().get(&(param, name)) {
            if let Ok(v) = Rc::clone(v).downcast::<T>() {
                return v;
            }
        }
        let v = Rc::new(make());
        self.inner
            .memo
            .borrow_mut()
            .insert((param, name), Rc::clone(&v) as Rc<dyn Any>);
        v
    }

    /// Records a node with `outputs` value slots if the tape is recording; returns its first slot.
    fn push_if_recording(&self, outputs: usize, kind: impl FnOnce() -> NodeKind<F>) -> Option<usize> {
        if !self.is_recording() {
            return None;
        }
        let first_slot = self.inner.slots.get();
        self.inner.slots.set(first_slot + outputs);
        self.inner.nodes.borrow_mut().push(Node {
            first_slot,
            kind: kind(),
        });
        Some(first_slot)
    }

    /// Applies `op` to `inputs`: checks the shapes with its shape rule, runs its forward kernel,
    /// and records a node if the tape is recording and any input needs a gradient.
    ///
    /// # Errors
    /// The op's shape error; [`Error::TapeMismatch`] if an input belongs to another tape;
    /// [`Error::NonFinite`] under anomaly detection.
    pub fn apply(&self, op: impl Op<F>, inputs: &[&Var<F>]) -> Result<Var<F>> {
        // The path of every op at every time step, so it allocates only the output (its
        // shape, data and `Arc`) unless a node is recorded: the inputs' shapes and values are
        // gathered on the stack, and the op is boxed only into a node. `apply_rc` is the same
        // checks for any number of outputs.
        self.check_tape(op.name(), inputs)?;
        let out = gathered(inputs, |shapes, values| {
            let expected = op.shape(shapes)?;
            let expected = std::slice::from_ref(&expected);
            check_allocatable::<F>(op.name(), shapes, expected)?;
            let out = match empty_outputs(expected) {
                Some(mut zeros) => zeros.pop().expect("one output"),
                None => op.forward(values)?,
            };
            check_forward_shapes(op.name(), expected, std::slice::from_ref(&out))?;
            Ok(out)
        })?;
        let out = Arc::new(out);
        self.check_finite(op.name(), std::slice::from_ref(&out))?;
        self.note_derived_weights(inputs, std::slice::from_ref(&out));
        let slot = self.record(inputs, || Rc::new(Single(op)), std::slice::from_ref(&out));
        Ok(Var::new(self.clone(), slot, out))
    }

    /// Applies a [`MultiOp`], returning one `Var` per output. See [`Tape::apply`].
    pub fn apply_multi(&self, op: impl MultiOp<F>, inputs: &[&Var<F>]) -> Result<Vec<Var<F>>> {
        self.apply_rc(Rc::new(op), inputs)
    }

    fn apply_rc(&self, op: Rc<dyn MultiOp<F>>, inputs: &[&Var<F>]) -> Result<Vec<Var<F>>> {
        self.check_tape(op.name(), inputs)?;
        let outs = gathered(inputs, |shapes, values| {
            let expected = op.shapes(shapes)?;
            check_allocatable::<F>(op.name(), shapes, &expected)?;
            let outs = match empty_outputs(&expected) {
                Some(zeros) => zeros,
                None => op.forward(values)?,
            };
            check_forward_shapes(op.name(), &expected, &outs)?;
            Ok(outs)
        })?;
        let outs: Vec<Arc<ArrayD<F>>> = outs.into_iter().map(Arc::new).collect();
        self.check_finite(op.name(), &outs)?;
        self.note_derived_weights(inputs, &outs);
        let first = self.record(inputs, || op, &outs);
        Ok(outs
            .into_iter()
            .enumerate()
            .map(|(k, v)| Var::new(self.clone(), first.map(|f| f + k), v))
            .collect())
    }

    /// [`Error::TapeMismatch`] if an input of `op` belongs to another tape.
    fn check_tape(&self, op: &str, inputs: &[&Var<F>]) -> Result<()> {
        if inputs.iter().any(|v| !v.tape().same(self)) {
            return Err(Error::TapeMismatch { op: op.to_string() });
        }
        Ok(())
    }

    /// [`Error::NonFinite`] for the first output with a NaN or an infinity, under anomaly
    /// detection.
    fn check_finite(&self, op: &str, outs: &[Arc<ArrayD<F>>]) -> Result<()> {
        if self.inner.options.detect_anomaly {
            if let Some(bad) = outs.iter().find(|o| !o.iter().all(|x| x.is_finite())) {
                return Err(Error::NonFinite {
                    op: op.to_string(),
                    phase: "forward",
                    shape: bad.shape().to_vec(),
                });
            }
        }
        Ok(())
    }

    /// Records a node for the op `make_op` with the output `values` if the tape is recording
    /// and any input needs a gradient, keeping what the op's backward rule reads
    /// ([`Op::saves`](crate::Op::saves)); returns its first slot.
    fn record(
        &self,
        inputs: &[&Var<F>],
        make_op: impl FnOnce() -> Rc<dyn MultiOp<F>>,
        values: &[Arc<ArrayD<F>>],
    ) -> Option<usize> {
        if !inputs.iter().any(|v| v.requires_grad()) {
            return None;
        }
        self.push_if_recording(values.len(), || {
            let op = make_op();
            let saves = op.saves();
            NodeKind::Op {
                inputs: inputs
                    .iter()
                    .map(|v| Saved {
                        slot: v.slot(),
                        value: Kept::new(v.value_arc(), saves.inputs),
                    })
                    .collect(),
                outputs: values.iter().map(|v| Kept::new(v, saves.outputs)).collect(),
                op,
            }
        })
    }
}

/// Runs `f` on the shapes and values of `inputs`, gathered on the stack when there are at most
/// four of them (every op but a concatenation of many).
fn gathered<F: Float, R>(inputs: &[&Var<F>], f: impl FnOnce(&[&[usize]], &[&ArrayD<F>]) -> R) -> R {
    const N: usize = 4;
    let n = inputs.len();
    if (1..=N).contains(&n) {
        // The unused places repeat the last input; only the first `n` are passed on.
        let shapes: [&[usize]; N] = std::array::from_fn(|i| inputs[i.min(n - 1)].shape());
        let values: [&ArrayD<F>; N] = std::array::from_fn(|i| inputs[i.min(n - 1)].value());
        return f(&shapes[..n], &values[..n]);
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|v| v.shape()).collect();
    let values: Vec<&ArrayD<F>> = inputs.iter().map(|v| v.value()).collect();
    f(&shapes, &values)
}

/// No op may ask for more memory than can be had: ndarray and the allocator would panic or
/// abort, so it is a shape error here, before the forward allocates.
fn check_allocatable<F: Float>(op: &str, shapes: &[&[usize]], expected: &[Vec<usize>]) -> Result<()> {
    match expected.iter().find(|e| !can_allocate::<F>(e)) {
        Some(e) => Err(Error::shape(
            op,
            shapes,
            format!("the result would have shape {e:?}, more elements than memory can hold"),
        )),
        None => Ok(()),
    }
}

/// The outputs when none has an element: known without the kernel, which could loop over a
/// huge empty axis (2⁴⁰ time steps of a batch of 0) for as long as it takes.
fn empty_outputs<F: Float>(expected: &[Vec<usize>]) -> Option<Vec<ArrayD<F>>> {
    let empty = !expected.is_empty() && expected.iter().all(|e| e.contains(&0));
    empty.then(|| {
        expected
            .iter()
            .map(|e| ArrayD::zeros(ndarray::IxDyn(e)))
            .collect()
    })
}

/// [`Error::ForwardShape`] unless the forward kernel's outputs have the shapes the op's shape
/// rule gave.
fn check_forward_shapes<F: Float>(op: &str, expected: &[Vec<usize>], outs: &[ArrayD<F>]) -> Result<()> {
    let ok =
        outs.len() == expected.len() && outs.iter().zip(expected).all(|(o, e)| o.shape() == e.as_slice());
    if ok {
        return Ok(());
    }
    Err(Error::ForwardShape {
        op: op.to_string(),
        expected: expected.first().cloned().unwrap_or_default(),
        got: outs
            .iter()
            .find(|o| !expected.iter().any(|e| o.shape() == e.as_slice()))
            .map_or(Vec::new(), |o| o.shape().to_vec()),
    })
}

/// What [`Tape::weight_of`] files a value under: its address.
fn value_key<F: Float>(value: &Arc<ArrayD<F>>) -> usize {
    Arc::as_ptr(value) as *const u8 as usize
}

/// Whether an array of `shape` can exist: its size fits in `isize` bytes ([`crate::checked_len`])
/// and, above 1 GiB, the allocator grants it (a probe freed at once, so a result too large for
/// the machine is an error instead of an abort inside the forward).
fn can_allocate<F: Float>(shape: &[usize]) -> bool {
    let Some(len) = crate::checked_len(shape, std::mem::size_of::<F>()) else {
        return false;
    };
    if len.saturating_mul(std::mem::size_of::<F>()) <= 1 << 30 {
        return true;
    }
    Vec::<F>::new().try_reserve_exact(len).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_of_names_only_bound_parameters_and_memo_makes_once() {
        let p = Param::new("w", ArrayD::<f64>::zeros(vec![2, 2]));
        let tape = Tape::new();
        let w = tape.param(&p);
        assert_eq!(tape.param_of(&w), Some(p.id()));
        assert_eq!(tape.param_of(&tape.input(ArrayD::zeros(vec![2]))), None);
        assert_eq!(tape.param_of(&tape.constant(ArrayD::zeros(vec![2]))), None);
        assert_eq!(Tape::new().param_of(&w), None, "another tape's parameter");
        assert_eq!(Tape::<f64>::no_grad().param_of(&Tape::no_grad().param(&p)), None);
        let made = Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            7usize
        };
        let (a, b) = (tape.memo(p.id(), "seven", make), tape.memo(p.id(), "seven", make));
        assert!(Rc::ptr_eq(&a, &b));
        assert_eq!((*a, made.get()), (7, 1));
        assert_eq!(*Tape::<f64>::new().memo(p.id(), "seven", make), 7, "per tape");
        assert_eq!(made.get(), 2);
    }

    #[test]
    fn weight_of_follows_a_parameter_and_what_is_derived_from_it_alone() {
        let p = Param::new("w", ArrayD::<f64>::ones(vec![2, 2]));
        for tape in [Tape::new(), Tape::no_grad()] {
            let w = tape.param(&p);
            assert_eq!(
                tape.weight_of(&w),
                Some(p.id()),
                "on a recording or a no-grad tape"
            );
            let x = tape.input(ArrayD::ones(vec![2, 2]));
            assert_eq!(tape.weight_of(&x), None);
            let twice = (&w + &w).unwrap();
            let derived = tape.weight_of(&twice).expect("from weights alone");
            assert_ne!(derived, p.id());
            assert_eq!(tape.weight_of(&twice.detach()), Some(derived), "the same value");
            assert_eq!(tape.weight_of(&(&w * &x).unwrap()), None, "an activation");
            let mask = tape.constant(ArrayD::zeros(vec![2, 2]));
            let masked = tape.weight_of(&(&w * &mask).unwrap());
            assert_eq!(
                masked.is_some(),
                tape.is_recording(),
                "a constant while recording"
            );
            let row = tape.constant(ArrayD::zeros(vec![1, 2]));
            let small = tape.weight_of(&(&row * &w.sum_all().unwrap()).unwrap());
            assert_eq!(small, None, "not a weight's shape");
            assert_eq!(Tape::new().weight_of(&w), None, "another tape");
        }
    }

    /// A test op with one output per entry of `outs`: the shape rule promises `outs`, the
    /// forward returns arrays of `got` (or panics if `got` is `None`: it must not run).
    struct Probe {
        outs: Vec<Vec<usize>>,
        got: Option<Vec<usize>>,
        value: f64,
    }

    impl MultiOp<f64> for Probe {
        fn name(&self) -> &str {
            "probe"
        }
        fn shapes(&self, _: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
            Ok(self.outs.clone())
        }
        fn forward(&self, _: &[&ArrayD<f64>]) -> Result<Vec<ArrayD<f64>>> {
            let got = self.got.as_ref().expect("the forward must not run");
            Ok(self
                .outs
                .iter()
                .map(|_| ArrayD::from_elem(got.clone(), self.value))
                .collect())
        }
        fn backward(
            &self,
            _: &[Var<f64>],
            _: &[Var<f64>],
            _: &[Option<Var<f64>>],
        ) -> Result<Vec<Option<Var<f64>>>> {
            Ok(vec![None])
        }
    }

    impl Op<f64> for Probe {
        fn name(&self) -> &str {
            "probe"
        }
        fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
            Ok(MultiOp::shapes(self, inputs)?.remove(0))
        }
        fn forward(&self, inputs: &[&ArrayD<f64>]) -> Result<ArrayD<f64>> {
            Ok(MultiOp::forward(self, inputs)?.remove(0))
        }
        fn backward(&self, _: &[Var<f64>], _: &Var<f64>, _: &Var<f64>) -> Result<Vec<Option<Var<f64>>>> {
            Ok(vec![None])
        }
    }

    /// Applies `probe` both ways: as a single-output `Op` and as a `MultiOp`.
    fn both(tape: &Tape<f64>, probe: impl Fn() -> Probe, x: &Var<f64>) -> [Result<Vec<Var<f64>>>; 2] {
        [
            tape.apply(probe(), &[x]).map(|v| vec![v]),
            tape.apply_multi(probe(), &[x]),
        ]
    }

    /// The checks around an op's forward are the same through `apply` (one output, the path of
    /// every elementwise op) and `apply_multi`: the forward's shapes against the shape rule, a
    /// result too large to allocate, outputs with no elements, non-finite values under anomaly
    /// detection, another tape's input, and a node recorded only when an input needs a gradient.
    #[test]
    fn one_output_and_many_outputs_are_checked_alike() {
        let tape = Tape::<f64>::new();
        let x = tape.input(ArrayD::zeros(vec![2]));
        let c = tape.constant(ArrayD::zeros(vec![2]));
        let probe = |outs: &[usize], got: Option<&[usize]>, value: f64| {
            let (outs, got) = (vec![outs.to_vec()], got.map(<[usize]>::to_vec));
            move || Probe {
                outs: outs.clone(),
                got: got.clone(),
                value,
            }
        };
        for r in both(&tape, probe(&[3], Some(&[4]), 1.0), &x) {
            let e = r.expect_err("a forward of the wrong shape");
            assert_eq!(
                e,
                Error::ForwardShape {
                    op: "probe".into(),
                    expected: vec![3],
                    got: vec![4],
                }
            );
        }
        for r in both(&tape, probe(&[1 << 62, 4], None, 1.0), &x) {
            let e = r.expect_err("too large to allocate");
            assert!(
                e.to_string().contains("more elements than memory can hold"),
                "{e}"
            );
        }
        for r in both(&tape, probe(&[1 << 40, 0], None, 1.0), &x) {
            let out = r.expect("known without the forward");
            assert_eq!(out[0].shape(), [1 << 40, 0]);
        }
        let watched = Tape::<f64>::with_options(TapeOptions {
            record: true,
            detect_anomaly: true,
        });
        let y = watched.input(ArrayD::zeros(vec![2]));
        for r in both(&watched, probe(&[2], Some(&[2]), f64::NAN), &y) {
            let e = r.expect_err("a NaN under anomaly detection");
            assert!(matches!(e, Error::NonFinite { phase: "forward", .. }), "{e}");
        }
        for r in both(&tape, probe(&[2], Some(&[2]), 1.0), &y) {
            assert_eq!(r.err(), Some(Error::TapeMismatch { op: "probe".into() }));
        }
        let before = tape.len();
        for r in both(&tape, probe(&[2], Some(&[2]), 1.0), &c) {
            let out = r.expect("runs");
            assert!(!out[0].requires_grad());
        }
        assert_eq!(tape.len(), before, "no node for constants");
        for r in both(&tape, probe(&[2], Some(&[2]), 1.0), &x) {
            let out = r.expect("runs");
            assert!(out[0].requires_grad());
            assert_eq!(out[0].value(), &ArrayD::from_elem(vec![2], 1.0));
        }
        assert_eq!(tape.len(), before + 2, "a node each");
    }

    #[test]
    fn a_tape_that_bound_a_param_is_freed_with_its_values() {
        let p = Param::new("w", ArrayD::<f32>::zeros(vec![3]));
        let weak = {
            let tape = Tape::new();
            let w = tape.param(&p);
            let y = (&w * &w).unwrap();
            let _ = y.sum_all().unwrap().backward().unwrap();
            Rc::downgrade(&tape.inner)
        };
        assert!(weak.upgrade().is_none(), "the tape leaked");
        assert_eq!(
            Arc::strong_count(&p.value()),
            2,
            "only the param (and this probe) hold its value"
        );
    }
}
