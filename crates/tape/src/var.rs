//! [`Var`]: a value on a tape.

use crate::{Error, Float, Result, Tape};
use ndarray::ArrayD;
use std::fmt;
use std::sync::Arc;

/// A value on a [`Tape`]: its array, and its slot on the tape if it needs a gradient.
///
/// A cheap, lifetime-free handle (cloning shares the array), so cell states can be stored in
/// structs and returned from functions freely. Differentiable ops are methods (from
/// `eddy_ops::VarExt`) and the operators `+ - * /`, which return `Result<Var>`.
pub struct Var<F: Float = f32> {
    tape: Tape<F>,
    slot: Option<usize>,
    value: Arc<ArrayD<F>>,
}

impl<F: Float> Clone for Var<F> {
    fn clone(&self) -> Self {
        Var {
            tape: self.tape.clone(),
            slot: self.slot,
            value: Arc::clone(&self.value),
        }
    }
}

impl<F: Float> fmt::Debug for Var<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Var")
            .field("slot", &self.slot)
            .field("value", &self.value)
            .finish()
    }
}

impl<F: Float> Var<F> {
    pub(crate) fn new(tape: Tape<F>, slot: Option<usize>, value: Arc<ArrayD<F>>) -> Var<F> {
        Var { tape, slot, value }
    }

    pub(crate) fn into_value(self) -> Arc<ArrayD<F>> {
        self.value
    }

    /// The value.
    pub fn value(&self) -> &ArrayD<F> {
        &self.value
    }

    /// The value, shared.
    pub fn value_arc(&self) -> &Arc<ArrayD<F>> {
        &self.value
    }

    /// The shape of the value.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.value.ndim()
    }

    /// The tape this value lives on.
    pub fn tape(&self) -> &Tape<F> {
        &self.tape
    }

    /// The value's slot on the tape (an id unique within the tape), if it needs a gradient.
    pub fn slot(&self) -> Option<usize> {
        self.slot
    }

    /// Whether a gradient flows to this value (it was recorded on the tape).
    pub fn requires_grad(&self) -> bool {
        self.slot.is_some()
    }

    /// The same value, cut from the graph: no gradient flows through it.
    pub fn detach(&self) -> Var<F> {
        Var::new(self.tape.clone(), None, Arc::clone(&self.value))
    }

    /// The single element of a one-element value.
    ///
    /// # Errors
    /// [`Error::NotScalar`] if the value has more than one element.
    pub fn item(&self) -> Result<F> {
        if self.value.len() != 1 {
            return Err(Error::NotScalar {
                op: "item".into(),
                shape: self.shape().to_vec(),
            });
        }
        Ok(*self.value.iter().next().expect("one element"))
    }
}
