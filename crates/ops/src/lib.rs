//! # eddy-ops: the differentiable op catalogue
//!
//! One file per family, each op's shape rule, forward kernel and backward rule side by side, all
//! through the public [`Op`](eddy_tape::Op) trait that user code has too. Use them as methods
//! through [`VarExt`] (in the [`prelude`]): `x.matmul(&w)?.tanh()`. The formulas are tabled in
//! `docs/ops.md`.
#![warn(missing_docs)]

pub mod activation;
pub mod axis;
pub mod elementwise;
mod ext;
pub mod fused;
pub mod gated_scan;
pub mod kernels;
pub mod matmul;
pub mod packed;
pub mod pointwise;
pub mod random;
pub mod rank_one;
pub mod reduce;
pub mod scan;
pub mod sequence;
pub mod shape;

pub use elementwise::{sigmoid, Elementwise};
pub use ext::{concat, stack, where_, VarExt};
pub use fused::{linear_add, GruPointwise, LstmPointwise};
pub use gated_scan::{gated_coefficients, gated_scan, GatedScan};
pub use matmul::{matmul_t, MatMul};
pub use pointwise::{pointwise, Pointwise, Real};
pub use random::{dropout, dropout_mask};
pub use rank_one::{rank_one_update, RankOneUpdate};
pub use scan::{length_mask, linear_scan, log_scan, Scan, ScanForm};
pub use sequence::{
    GruSequence, LstmSequence, MlstmSequence, RnnActivation, RnnSequence, SlstmSequence, MLSTM_CHUNK,
};

/// `docs/autodiff.md`: its code blocks run as doc tests.
#[doc = include_str!("../../../docs/autodiff.md")]
#[cfg(doctest)]
pub struct AutodiffDocs;

/// `docs/ops.md`: its code blocks run as doc tests.
#[doc = include_str!("../../../docs/ops.md")]
#[cfg(doctest)]
pub struct OpsDocs;

/// `docs/design.md`: its code blocks run as doc tests.
#[doc = include_str!("../../../docs/design.md")]
#[cfg(doctest)]
pub struct DesignDocs;

/// The arity check every built-in shape rule starts with, so that applying a public op struct
/// to the wrong number of inputs (`tape.apply(MatMul { .. }, &[&x])`) is an error, not a panic.
pub(crate) fn arity(op: &str, inputs: &[&[usize]], expected: usize) -> eddy_tape::Result<()> {
    if inputs.len() == expected {
        Ok(())
    } else {
        Err(eddy_tape::Error::Arity {
            op: op.to_string(),
            expected,
            got: inputs.len(),
        })
    }
}

/// Whether an array of `shape` with elements of `T` can be made: its size fits in `isize`
/// bytes and, above 1 GiB, the allocator grants it (a probe, freed at once). The tape checks
/// every op's result so; the helpers that build arrays outside an op (masks) check with this,
/// so that a huge shape is an error rather than an abort in the allocator.
pub(crate) fn fits<T>(shape: &[usize]) -> bool {
    let size = std::mem::size_of::<T>();
    eddy_tape::checked_len(shape, size).is_some_and(|len| {
        len.saturating_mul(size) <= 1 << 30 || Vec::<T>::new().try_reserve_exact(len).is_ok()
    })
}

/// What a user of ops imports: the engine's types and the op methods.
pub mod prelude {
    pub use crate::{concat, stack, where_, VarExt};
    pub use eddy_tape::{
        gradcheck, gradgradcheck, Error, Float, GradOptions, GradcheckOptions, Grads, Op, Param, Result, Rng,
        Saves, Tape, Var,
    };
}
