//! The error type of every fallible operation in eddy.

use thiserror::Error;

/// Result with eddy's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in eddy. Every message names the op and the shapes involved.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum Error {
    /// Two shapes cannot be broadcast together (NumPy rules).
    #[error("{op}: shapes {lhs:?} and {rhs:?} cannot be broadcast together")]
    Broadcast {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
        /// The left operand's shape.
        lhs: Vec<usize>,
        /// The right operand's shape.
        rhs: Vec<usize>,
    },
    /// The inner dimensions of a matrix product differ.
    #[error("{op}: inner dimensions differ: {lhs:?} · {rhs:?}")]
    MatmulInner {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
        /// The left factor's shape.
        lhs: Vec<usize>,
        /// The right factor's shape.
        rhs: Vec<usize>,
    },
    /// An axis is out of range for a shape.
    #[error("{op}: axis {axis} is out of range for shape {shape:?}")]
    Axis {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
        /// The axis asked for (negative counts from the end).
        axis: isize,
        /// The shape it does not fit.
        shape: Vec<usize>,
    },
    /// Any other shape an op cannot take.
    #[error("{op}: {reason} (shapes {shapes:?})")]
    Shape {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
        /// The shapes of the inputs involved.
        shapes: Vec<Vec<usize>>,
        /// What is wrong with them.
        reason: String,
    },
    /// An argument other than a shape is invalid (a probability outside [0, 1), an index out of range).
    #[error("{op}: {reason}")]
    Invalid {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
        /// What is wrong with the argument.
        reason: String,
    },
    /// An op was given the wrong number of inputs.
    #[error("{op}: expected {expected} inputs, got {got}")]
    Arity {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
        /// The number of inputs the op takes.
        expected: usize,
        /// The number it was given.
        got: usize,
    },
    /// `backward()` or `item()` on a value that is not a scalar.
    #[error("{op}: expected a scalar (one element), got shape {shape:?}")]
    NotScalar {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
        /// The value's shape.
        shape: Vec<usize>,
    },
    /// Vars of two different tapes were combined.
    #[error("{op}: inputs belong to different tapes")]
    TapeMismatch {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
    },
    /// A forward kernel returned a value of another shape than its shape rule promised.
    #[error("{op}: forward returned shape {got:?} but the shape rule gave {expected:?}")]
    ForwardShape {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
        /// The shape the shape rule gave.
        expected: Vec<usize>,
        /// The shape the kernel returned.
        got: Vec<usize>,
    },
    /// A backward rule returned a gradient of the wrong shape or count.
    #[error("{op}: backward rule returned {reason}")]
    BadGradient {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
        /// What was wrong with the gradients.
        reason: String,
    },
    /// With anomaly detection on, an op produced NaN or infinity.
    #[error("{op}: {phase} produced a non-finite value (NaN or infinity) in an output of shape {shape:?}")]
    NonFinite {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
        /// `"forward"` or `"backward"`.
        phase: &'static str,
        /// The shape of the output that holds the value.
        shape: Vec<usize>,
    },
    /// The reverse pass reached an op whose saved values were freed by an earlier pass.
    #[error("{op}: its saved values were freed by an earlier backward pass; pass retain_graph to run backward twice")]
    GraphFreed {
        /// The op that failed (e.g. `"matmul"`, `"lstm step 3"`).
        op: String,
    },
    /// gradcheck found analytic and numeric gradients that disagree.
    #[error(
        "gradcheck: {failures} of {total} checked elements of {input} disagree; worst at index {index:?}: \
         analytic {analytic:.10e}, numeric {numeric:.10e}"
    )]
    Gradcheck {
        /// The input or parameter checked (e.g. `"input 0"`, a parameter's name).
        input: String,
        /// The index of the worst element.
        index: Vec<usize>,
        /// The gradient the backward rules gave there.
        analytic: f64,
        /// The central-difference estimate there.
        numeric: f64,
        /// How many elements disagree.
        failures: usize,
        /// How many elements were checked.
        total: usize,
    },
    /// A model or checkpoint file could not be read or written: missing, truncated, corrupt,
    /// or holding tensors that do not fit the model.
    #[error("{path}: {reason}")]
    File {
        /// The file's path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An error with the place it arose: a layer, a parameter, a time step.
    #[error("{context}: {source}")]
    Context {
        /// Where it arose: a layer, a parameter, a time step.
        context: String,
        /// The error that arose there.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// Wraps this error with the place it arose, e.g. `"lstm step 17"`.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// The innermost error, beneath any [`Error::Context`] layers.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }

    /// A [`Error::Shape`] for `op` with the given shapes and reason.
    pub fn shape(op: &str, shapes: &[&[usize]], reason: impl Into<String>) -> Error {
        Error::Shape {
            op: op.to_string(),
            shapes: shapes.iter().map(|s| s.to_vec()).collect(),
            reason: reason.into(),
        }
    }

    /// An [`Error::File`] for `path`.
    pub fn file(path: impl AsRef<std::path::Path>, reason: impl Into<String>) -> Error {
        Error::File {
            path: path.as_ref().display().to_string(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Invalid`] for `op`.
    pub fn invalid(op: &str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            op: op.to_string(),
            reason: reason.into(),
        }
    }
}

/// Adds context to the error of a `Result`.
pub trait ResultExt<T> {
    /// Wraps an error with `context` (computed only on error).
    fn context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.context(context()))
    }
}
