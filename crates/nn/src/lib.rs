//! # eddy-nn: modules, cells and the recurrent layer
//!
//! - [`Module`]: parameters under dotted names, train/eval mode; `#[derive(Module)]` writes it.
//! - [`Cell`]: the one trait a new recurrent cell implements; [`cells`] holds the built-ins.
//! - [`Recurrent`]: one generic layer over any cell; [`Lstm`], [`Gru`], [`Rnn`].
//! - [`Linear`], [`Embedding`], [`Dropout`], [`LayerNorm`]; [`init`]ializers.
//! - [`sequential`]: a Keras-style `Sequential` model with [`fit`], [`data`] preparation and
//!   [`checkpoint`] files, [`csv`] datasets; [`Model::fit_distributed`] trains on many
//!   processes through a [`GradientSync`] (over MPI in the crate `eddy-dist`).
#![warn(missing_docs)]

mod cell;
pub mod cells;
pub mod checkpoint;
pub mod clip;
pub mod csv;
pub mod data;
mod distributed;
pub mod fit;
pub mod init;
pub mod io;
mod layers;
mod linear_scan;
pub mod loss;
mod module;
pub mod optim;
pub mod parallel;
pub mod parity;
pub mod ragged;
mod recurrent;
pub mod schedule;
mod segments;
pub mod sequential;
pub mod stream;
pub mod sync;
pub mod tbptt;

pub use cell::{Cell, LinearRecurrence, PerStep, RecurrentState};
pub use cells::{
    GruCell, LayerNormLstmCell, LstmCell, MinGruCell, MinLstmCell, MlstmCell, Nonlinearity, PeepholeLstmCell,
    RgLruCell, RnnCell, SlstmCell,
};
pub use eddy_derive::Module;
pub use fit::{FitOptions, History};
pub use layers::{Dropout, Embedding, LayerNorm, Linear};
pub use module::{prefixed, CellSizes, Module};

/// What `#[derive(Module)]`'s output names, by a path that works from `eddy_nn` and from the
/// facade (`eddy::nn`). Not for other use.
#[doc(hidden)]
pub mod __derive {
    pub use eddy_tape::Param;
}
pub use recurrent::{carried, Gru, Lstm, Recurrent, RecurrentConfig, RecurrentOutput, Rnn};
pub use segments::Checkpoint;
pub use sequential::{Model, Sequential};
pub use sync::{GradientSync, SingleProcess};

/// The walk-through `docs/custom-cells.md`, compiled so that its code blocks run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/custom-cells.md")]
pub struct CustomCellsDoc;

/// The page on the cells beyond PyTorch's (`docs/cells.md`); its code blocks run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/cells.md")]
pub struct CellsDoc;

/// The page on linear recurrences and the scan (`docs/linear-recurrences.md`); its code blocks
/// run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/linear-recurrences.md")]
pub struct LinearRecurrencesDoc;

/// The guide's page on porting PyTorch models; its code blocks run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/porting-pytorch.md")]
pub struct PortingPytorchDoc;

/// The guide's page on training and checkpoints; its code blocks run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/training.md")]
pub struct TrainingDoc;
