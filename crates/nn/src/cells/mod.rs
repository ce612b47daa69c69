//! The built-in cells. They use only the public API a user's cell has, so every test of a
//! built-in also tests the custom-cell path.

mod gru;
mod lstm;
mod rnn;

pub use gru::GruCell;
pub use lstm::LstmCell;
pub use rnn::{Nonlinearity, RnnCell};

use crate::init;
use eddy_tape::{Float, Param, Rng};

/// A PyTorch-initialised parameter `U(-1/√hidden, 1/√hidden)`.
pub(crate) fn param<F: Float>(name: &str, shape: &[usize], hidden: usize, rng: &mut Rng) -> Param<F> {
    Param::new(name, init::pytorch_default(shape, hidden, rng))
}

/// The `(name, param)` list of a cell with PyTorch's order: weight_ih, weight_hh, bias_ih, bias_hh.
pub(crate) fn named<F: Float>(
    weight_ih: &Param<F>,
    weight_hh: &Param<F>,
    biases: &Option<(Param<F>, Param<F>)>,
) -> Vec<(String, Param<F>)> {
    let mut out = vec![
        ("weight_ih".to_string(), weight_ih.clone()),
        ("weight_hh".to_string(), weight_hh.clone()),
    ];
    if let Some((bi, bh)) = biases {
        out.push(("bias_ih".into(), bi.clone()));
        out.push(("bias_hh".into(), bh.clone()));
    }
    out
}
