//! The [`Op`] trait: the contract of every differentiable operation.

use crate::{Float, Result, Var};
use ndarray::ArrayD;

/// A differentiable operation: a name, a shape rule, a forward kernel and a backward rule.
///
/// Every op in eddy's catalogue implements this trait, and so can yours: built-in ops have no
/// privileges that user code lacks. Apply an op with [`Tape::apply`](crate::Tape::apply).
///
/// - [`shape`](Op::shape) is the one place shape errors arise: it sees only the input shapes.
/// - [`forward`](Op::forward) computes the output from the input values; it is called only after
///   the shape rule has accepted the shapes, and must return an array of the promised shape.
/// - [`backward`](Op::backward) maps the gradient of the output to gradients of the inputs. It is
///   written with differentiable ops on [`Var`]s, so the reverse pass can itself be recorded
///   (`create_graph`) and differentiated again. Return `None` for an input that needs no
///   gradient (see [`Var::requires_grad`]). The tape checks that every returned gradient has its
///   input's shape.
///
/// # Example
/// A cube op, proven with gradcheck:
/// ```
/// use eddy_tape::{gradcheck, Error, Float, GradcheckOptions, Op, Result, Tape, Var};
/// use ndarray::{ArrayD, IxDyn};
///
/// struct Cube;
///
/// impl<F: Float> Op<F> for Cube {
///     fn name(&self) -> &str {
///         "cube"
///     }
///     fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
///         Ok(inputs[0].to_vec())
///     }
///     fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>> {
///         Ok(inputs[0].mapv(|x| x * x * x))
///     }
///     // d(x³) = 3x² dx, written with differentiable ops so it can be differentiated again.
///     fn backward(&self, inputs: &[Var<F>], _out: &Var<F>, grad: &Var<F>) -> Result<Vec<Option<Var<F>>>> {
///         let x = &inputs[0];
///         let dx = ((x * x)?.scale(F::of(3.0))? * grad)?;
///         Ok(vec![Some(dx)])
///     }
/// }
///
/// let x = ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.5, -1.0, 2.0]).unwrap();
/// gradcheck(|tape: &Tape<f64>, xs: &[Var<f64>]| tape.apply(Cube, &[&xs[0]]), &[x], &GradcheckOptions::default())?;
/// # Ok::<(), Error>(())
/// ```
pub trait Op<F: Float>: 'static {
    /// The op's name, used in error messages (`"matmul"`).
    fn name(&self) -> &str;

    /// The output shape for the given input shapes, or the error that explains why they don't fit.
    fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>>;

    /// The output value. The input shapes have passed [`Op::shape`].
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<ArrayD<F>>;

    /// The gradients of the inputs given the gradient `grad` of the output, one entry per input.
    fn backward(&self, inputs: &[Var<F>], output: &Var<F>, grad: &Var<F>) -> Result<Vec<Option<Var<F>>>>;

    /// Which values [`backward`](Op::backward) reads beyond their shapes: the tape keeps only
    /// those for the reverse pass, so a value no rule reads (a cell's gate sum, which `add`'s
    /// and `split`'s rules need only the shape of) is freed as soon as the program drops it,
    /// and its memory serves the next step. The default keeps everything. A rule that reads a
    /// value it did not declare gets the right shape filled with NaN.
    fn saves(&self) -> Saves {
        Saves::ALL
    }
}

/// Which of an op's values its backward rule reads ([`Op::saves`], [`MultiOp::saves`]); the
/// shapes are always there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saves {
    /// The input values.
    pub inputs: bool,
    /// The output values.
    pub outputs: bool,
}

impl Saves {
    /// Inputs and outputs (the default).
    pub const ALL: Saves = Saves {
        inputs: true,
        outputs: true,
    };
    /// The inputs only (`mul`, `matmul`).
    pub const INPUTS: Saves = Saves {
        inputs: true,
        outputs: false,
    };
    /// The outputs only (`sigmoid`, `tanh`, `exp`: the derivative from `y`).
    pub const OUTPUTS: Saves = Saves {
        inputs: false,
        outputs: true,
    };
    /// Shapes only (`add`, `split`, `concat`, `reshape`).
    pub const SHAPES: Saves = Saves {
        inputs: false,
        outputs: false,
    };
}

/// A differentiable operation with several outputs (`split`, a fused LSTM step giving `(h, c)`).
///
/// The same contract as [`Op`], one level up: a shape per output, a value per output, and a
/// backward rule that receives a gradient per output (`None` where no gradient reached that
/// output; treat it as zeros). Apply it with [`Tape::apply_multi`](crate::Tape::apply_multi).
pub trait MultiOp<F: Float>: 'static {
    /// The op's name, used in error messages.
    fn name(&self) -> &str;

    /// The output shapes for the given input shapes.
    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>>;

    /// The output values. The input shapes have passed [`MultiOp::shapes`].
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>>;

    /// The gradients of the inputs given the gradients of the outputs.
    fn backward(
        &self,
        inputs: &[Var<F>],
        outputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>>;

    /// Which values the backward rule reads beyond their shapes (see [`Op::saves`]).
    fn saves(&self) -> Saves {
        Saves::ALL
    }
}

/// A single-output [`Op`] seen as a [`MultiOp`]: how the tape stores every op.
pub(crate) struct Single<O>(pub O);

impl<F: Float, O: Op<F>> MultiOp<F> for Single<O> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
        Ok(vec![self.0.shape(inputs)?])
    }
    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        Ok(vec![self.0.forward(inputs)?])
    }
    fn backward(
        &self,
        inputs: &[Var<F>],
        outputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        match &grads[0] {
            Some(g) => self.0.backward(inputs, &outputs[0], g),
            None => Ok(vec![None; inputs.len()]),
        }
    }
    fn saves(&self) -> Saves {
        self.0.saves()
    }
}
