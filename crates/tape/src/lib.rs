//! # eddy-tape: the engine
//!
//! A define-by-run, reverse-mode autodiff tape. It knows no particular math beyond the
//! arithmetic the reverse pass itself needs; the op catalogue is `eddy-ops`.
//!
//! - [`Tape`]: a Wengert list of the ops of one step; creation order is the reverse pass's order.
//! - [`Var`]: a value on a tape. [`Param`]: a named parameter that outlives tapes.
//! - [`Op`]: the contract of a differentiable op (name, shape rule, forward, backward).
//! - [`Var::backward`] → [`Grads`]; [`Tape::grad`] for gradients of gradients; [`Tape::jvp`].
//! - [`gradcheck`] / [`gradgradcheck`]: central differences in `f64`.
//!
//! See `docs/autodiff.md` for a walk through.
#![warn(missing_docs)]

mod arith;
mod backward;
mod deferred;
mod error;
mod float;
mod gradcheck;
mod keyed;
mod op;
mod param;
mod rng;
mod rows;
pub mod split;
#[cfg(feature = "proptest")]
pub mod strategies;
mod tape;
mod var;

pub use arith::{broadcast_shapes, checked_len, sum_to_shape};
pub use backward::{GradOptions, Grads};
pub use deferred::OuterProduct;
pub use error::{Error, Result, ResultExt};
pub use float::Float;
pub use gradcheck::{gradcheck, gradgradcheck, GradcheckOptions};
pub use op::{MultiOp, Op, Saves};
pub use param::{Param, ParamId};
pub use rng::Rng;
pub use rows::{join_along, join_rows};
pub use tape::{Tape, TapeOptions};
pub use var::Var;
