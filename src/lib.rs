//! # eddy
//!
//! A reverse-mode autodiff tensor engine with a zoo of recurrent layers. This facade
//! re-exports the three crates and a [`prelude`]:
//!
//! - [`tape`]: the engine (`Tape`, `Var`, `Param`, `Grads`, the `Op` trait, `gradcheck`);
//! - [`ops`]: the differentiable op catalogue (methods through `VarExt`);
//! - [`nn`]: modules, cells, the generic recurrent layer, losses, optimizers;
//! - `dist` (with the `mpi` feature): data-parallel training over MPI.
//!
//! ```
//! use eddy::prelude::*;
//!
//! let mut rng = Rng::seed(0);
//! let lstm = RecurrentConfig::new(1, 8).num_layers(2).lstm::<f32>(&mut rng);
//! let tape = Tape::new();
//! let x = tape.input(ndarray::ArrayD::zeros(vec![10, 4, 1])); // [T, B, I]
//! let out = lstm.forward(&x)?;
//! let loss = out.output.powi(2)?.mean_all()?;
//! let grads = loss.backward()?;
//! assert_eq!(grads.params().count(), lstm.params().len());
//! # Ok::<(), Error>(())
//! ```
#![warn(missing_docs)]

/// Data-parallel training over MPI (the `mpi` feature): see `docs/distributed.md`.
#[cfg(feature = "mpi")]
pub use eddy_dist as dist;
pub use eddy_nn as nn;
pub use eddy_ops as ops;
pub use eddy_tape as tape;

/// Everything a model script needs: the engine types, the op methods, and the nn layers.
pub mod prelude {
    pub use eddy_nn::{
        Cell, Dropout, Embedding, Gru, GruCell, LayerNorm, Linear, Lstm, LstmCell, MinGruCell, MinLstmCell,
        MlstmCell, Module, Nonlinearity, Recurrent, RecurrentConfig, RecurrentOutput, RecurrentState,
        RgLruCell, Rnn, RnnCell, SlstmCell,
    };
    pub use eddy_ops::prelude::*;
}

/// The guide's getting-started page; its code blocks run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/getting-started.md")]
pub struct GettingStartedDoc;

/// The README; its code block runs as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoc;
