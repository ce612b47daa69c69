//! The [`Cell`] trait: what a researcher implements to make a new recurrent cell.

use crate::Module;
use eddy_tape::{Error, Float, Param, Result, Tape, Var};
use ndarray::ArrayD;

/// A cell's state as a list of `[batch, size]` parts; the first part is the output `h`.
///
/// Implemented for `Var` (one part: Elman, GRU), `(Var, Var)` (two parts: LSTM's `(h, c)`) and
/// `Vec<Var>` (any number).
pub trait RecurrentState<F: Float>: Clone + Sized {
    /// The parts, in order.
    fn parts(&self) -> Vec<Var<F>>;
    /// Rebuilds a state from its parts.
    ///
    /// # Errors
    /// [`Error::Invalid`] for the wrong number of parts.
    fn from_parts(parts: Vec<Var<F>>) -> Result<Self>;
}

fn wrong_parts(expected: usize, got: usize) -> Error {
    Error::invalid("state", format!("expected {expected} state parts, got {got}"))
}

impl<F: Float> RecurrentState<F> for Var<F> {
    fn parts(&self) -> Vec<Var<F>> {
        vec![self.clone()]
    }
    fn from_parts(parts: Vec<Var<F>>) -> Result<Self> {
        let n = parts.len();
        let [h]: [Var<F>; 1] = parts.try_into().map_err(|_| wrong_parts(1, n))?;
        Ok(h)
    }
}

impl<F: Float> RecurrentState<F> for (Var<F>, Var<F>) {
    fn parts(&self) -> Vec<Var<F>> {
        vec![self.0.clone(), self.1.clone()]
    }
    fn from_parts(parts: Vec<Var<F>>) -> Result<Self> {
        let n = parts.len();
        let [h, c]: [Var<F>; 2] = parts.try_into().map_err(|_| wrong_parts(2, n))?;
        Ok((h, c))
    }
}

impl<F: Float> RecurrentState<F> for Vec<Var<F>> {
    fn parts(&self) -> Vec<Var<F>> {
        self.clone()
    }
    fn from_parts(parts: Vec<Var<F>>) -> Result<Self> {
        Ok(parts)
    }
}

/// A recurrent cell: one time step, written with tape ops. The generic
/// [`Recurrent`](crate::Recurrent) layer turns any cell into a full layer (stacking,
/// bidirectional, ragged lengths, initial and final states, dropout, truncated BPTT), and
/// backprop-through-time falls out of the tape: a cell writes no backward code.
///
/// Required: the state type, the sizes of its parts, the input size (both from the parameters'
/// shapes with `#[derive(Module)]` and `#[cell(…)]`), and [`Cell::step`].
/// Optional: [`Cell::project`], a per-time-step map of the input that the layer applies to all
/// time steps at once (one GEMM for the whole sequence instead of one per step), and
/// [`Cell::unroll`], the whole sequence as one op of the cell's own.
///
/// # Example
/// An IndRNN cell, `h' = relu(W x + b + u ⊙ h)`:
/// ```
/// use eddy_nn::{init, Cell, Module, RecurrentConfig};
/// use eddy_ops::prelude::*;
///
/// #[derive(Clone)]
/// struct IndRnn { w: Param<f64>, b: Param<f64>, u: Param<f64> }
///
/// impl Module<f64> for IndRnn {
///     fn params(&self) -> Vec<(String, Param<f64>)> {
///         vec![("w".into(), self.w.clone()), ("b".into(), self.b.clone()), ("u".into(), self.u.clone())]
///     }
/// }
///
/// impl Cell<f64> for IndRnn {
///     type State = Var<f64>;
///     fn input_size(&self) -> usize { self.w.shape()[1] }
///     fn state_sizes(&self) -> Vec<usize> { vec![self.u.shape()[0]] }
///     // W x + b for every time step at once.
///     fn project(&self, x: &Var<f64>) -> Result<Var<f64>> {
///         let t = x.tape();
///         x.linear(&t.param(&self.w), Some(&t.param(&self.b)))
///     }
///     fn step(&self, xw: &Var<f64>, h: &Var<f64>) -> Result<Var<f64>> {
///         (xw + (h * &xw.tape().param(&self.u))?)?.relu()
///     }
/// }
///
/// let mut rng = Rng::seed(0);
/// let layer = RecurrentConfig::new(3, 4).num_layers(2).bidirectional(true).build(|input, h, rng| IndRnn {
///     w: Param::new("w", init::pytorch_default(&[h, input], h, rng)),
///     b: Param::new("b", init::pytorch_default(&[h], h, rng)),
///     u: Param::new("u", init::uniform(&[h], 1.0, rng)),
/// }, &mut rng);
/// let tape = Tape::new();
/// let x = tape.input(ndarray::ArrayD::zeros(vec![5, 2, 3])); // [T, B, I]
/// let out = layer.forward(&x)?;
/// assert_eq!(out.output.shape(), &[5, 2, 8]);
/// assert_eq!(out.h_n().shape(), &[4, 2, 4]);
/// # Ok::<(), Error>(())
/// ```
pub trait Cell<F: Float>: Module<F> {
    /// The state carried between steps: `Var`, `(Var, Var)` or `Vec<Var>`.
    type State: RecurrentState<F>;

    /// The input feature size. Default: from [`Module::cell_sizes`] (what
    /// `#[derive(Module)]` writes from `#[cell(input = axis)]`), else 0.
    fn input_size(&self) -> usize {
        self.cell_sizes().map_or(0, |s| s.input)
    }

    /// The feature size of each state part; the first is the output size. Default: from
    /// [`Module::cell_sizes`] (`#[cell(state = axis)]`), else none, which the recurrent layer
    /// refuses with an error naming the cell.
    fn state_sizes(&self) -> Vec<usize> {
        self.cell_sizes().map(|s| s.states).unwrap_or_default()
    }

    /// A per-time-step map of the input, applied by the layer to the whole sequence
    /// (`[T, B, input]` → `[T, B, p]`) before the steps. Default: the identity.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        Ok(x.clone())
    }

    /// One time step: the projected input `x` (`[B, p]`) and the state → the next state.
    fn step(&self, x: &Var<F>, state: &Self::State) -> Result<Self::State>;

    /// Optional: the whole projected sequence in one op instead of the layer's loop of
    /// [`Cell::step`] (a fused kernel over time, such as [`eddy_ops::LstmSequence`]). `xp` is
    /// `[T, B, p]` from [`Cell::project`]; the result is every step's output (`[T, B, out]`,
    /// indexed by time in both directions) and the final state. Default: `None`, the loop.
    ///
    /// The layer calls it only when no step needs a mask (no per-sequence lengths, no recurrent
    /// dropout). It must give the values and gradients of the loop of `step`: test it so.
    fn unroll(
        &self,
        xp: &Var<F>,
        state: &Self::State,
        reverse: bool,
    ) -> Option<Result<(Var<F>, Self::State)>> {
        let _ = (xp, state, reverse);
        None
    }

    /// Optional, for a cell **linear in its state** — one state part `h` and a step
    /// `h' = a ⊙ h + b` whose `a` and `b` depend on the input alone (minGRU, minLSTM, RG-LRU):
    /// the coefficients of every step from the projected sequence `xp` (`[T, B, p]` from
    /// [`Cell::project`]), each `[T, B, H]`, or their logarithms for a positive recurrence run
    /// in log space. The layer then runs the whole sequence as one scan
    /// ([`eddy_ops::linear_scan`] or [`eddy_ops::log_scan`]), ragged lengths included, instead
    /// of `T` calls of [`Cell::step`]; it still calls `step` under recurrent dropout.
    ///
    /// It must describe the same function as `step`: test it so (the layer against
    /// [`PerStep`] of the cell). Default: `None`, not linear.
    fn linear_recurrence(&self, xp: &Var<F>) -> Option<Result<LinearRecurrence<F>>> {
        let _ = xp;
        None
    }

    /// The output size (the first state part's size; 0 for a cell without state parts, which
    /// the recurrent layer refuses with an error).
    fn output_size(&self) -> usize {
        self.state_sizes().first().copied().unwrap_or(0)
    }

    /// The zero state for a batch.
    fn zero_state(&self, tape: &Tape<F>, batch: usize) -> Result<Self::State> {
        let parts = self
            .state_sizes()
            .iter()
            .map(|&n| tape.constant(ArrayD::zeros(vec![batch, n])))
            .collect();
        Self::State::from_parts(parts)
    }
}

/// The coefficients of a cell linear in its state, for every step: what
/// [`Cell::linear_recurrence`] returns.
#[derive(Debug, Clone)]
pub enum LinearRecurrence<F: Float> {
    /// `hₜ = aₜ ⊙ hₜ₋₁ + bₜ`, `a` and `b` `[T, B, H]`.
    Linear {
        /// The decay `aₜ`, `[T, B, H]`.
        a: Var<F>,
        /// The input term `bₜ`, `[T, B, H]`.
        b: Var<F>,
    },
    /// The same recurrence for positive `a`, `b` and `h`, given as `log a` and `log b`: run as
    /// `log hₜ = logaddexp(log aₜ + log hₜ₋₁, log bₜ)`, stable where the products underflow. The
    /// state must be positive.
    LogSpace {
        /// `log aₜ`, `[T, B, H]`.
        log_a: Var<F>,
        /// `log bₜ`, `[T, B, H]`.
        log_b: Var<F>,
    },
    /// minGRU's gated form `hₜ = (1 − σ(kₜ)) ⊙ hₜ₋₁ + σ(kₜ) ⊙ cₜ`, that is `a = 1 − σ(k)`,
    /// `b = σ(k) ⊙ c`, given as the projection `[k | c]` itself: run as one fused op
    /// ([`eddy_ops::gated_scan()`]) that never stores `σ(k)`, `a` or `b`.
    Gated {
        /// The gate logits `k` and the candidates `c`, the two halves of the last axis,
        /// `[T, B, 2H]`.
        kc: Var<F>,
    },
}

/// A cell run step by step: `PerStep(cell)` is `cell` without its whole-sequence paths
/// ([`Cell::unroll`] and [`Cell::linear_recurrence`]), so a layer over it runs the plain loop
/// of [`Cell::step`]. The reference those paths are tested against, and a way to time them.
///
/// ```
/// use eddy_nn::{MinGruCell, PerStep, RecurrentConfig};
/// use eddy_ops::prelude::*;
///
/// let config = RecurrentConfig::new(3, 4);
/// let scan = config.build(|i, h, r| MinGruCell::<f64>::new(i, h, true, r), &mut Rng::seed(1));
/// let steps = config.build(|i, h, r| PerStep(MinGruCell::<f64>::new(i, h, true, r)), &mut Rng::seed(1));
/// let tape = Tape::new();
/// let x = tape.input(ndarray::ArrayD::from_elem(vec![6, 2, 3], 0.3));
/// let (a, b) = (scan.forward(&x)?, steps.forward(&x)?);
/// assert!(a.output.value().iter().zip(b.output.value()).all(|(p, q)| (p - q).abs() < 1e-12));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PerStep<C>(pub C);

impl<F: Float, C: Cell<F>> Module<F> for PerStep<C> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        self.0.params()
    }
    fn set_training(&mut self, training: bool) {
        self.0.set_training(training)
    }
}

impl<F: Float, C: Cell<F>> Cell<F> for PerStep<C> {
    type State = C::State;
    fn input_size(&self) -> usize {
        self.0.input_size()
    }
    fn state_sizes(&self) -> Vec<usize> {
        self.0.state_sizes()
    }
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        self.0.project(x)
    }
    fn step(&self, x: &Var<F>, state: &C::State) -> Result<C::State> {
        self.0.step(x, state)
    }
    fn output_size(&self) -> usize {
        self.0.output_size()
    }
    fn zero_state(&self, tape: &Tape<F>, batch: usize) -> Result<C::State> {
        self.0.zero_state(tape, batch)
    }
}
