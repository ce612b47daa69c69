//! The built-in cells. They use only the public API a user's cell has. The LSTM, GRU and Elman
//! cells also have a fused [`Cell::unroll`](crate::Cell::unroll) (a whole-sequence op), which
//! the layer runs when no step needs a mask; their `step` (the path a user's cell takes) is
//! tested against the same PyTorch fixtures with `RecurrentConfig::fused(false)`.

mod gru;
mod layer_norm_lstm;
mod linear_recurrence;
mod lstm;
mod min_gru;
mod min_lstm;
mod mlstm;
mod peephole;
mod rg_lru;
mod rnn;
mod slstm;

pub use gru::GruCell;
pub use layer_norm_lstm::LayerNormLstmCell;
pub use lstm::LstmCell;
pub use min_gru::MinGruCell;
pub use min_lstm::MinLstmCell;
pub use mlstm::MlstmCell;
pub use peephole::PeepholeLstmCell;
pub use rg_lru::RgLruCell;
pub use rnn::{Nonlinearity, RnnCell};
pub use slstm::SlstmCell;

use crate::init;
use eddy_ops::VarExt;
use eddy_tape::{Float, MultiOp, Param, Result, Rng, Var};

/// A PyTorch-initialised parameter `U(-1/√hidden, 1/√hidden)`.
pub(crate) fn param<F: Float>(name: &str, shape: &[usize], hidden: usize, rng: &mut Rng) -> Param<F> {
    Param::new(name, init::pytorch_default(shape, hidden, rng))
}

/// `W_ih x + b_ih` for every time step at once: the `project` of the cells with PyTorch's two
/// biases (`biases` is `(bias_ih, bias_hh)`).
pub(crate) fn project_input<F: Float>(
    x: &Var<F>,
    weight_ih: &Param<F>,
    biases: &Option<(Param<F>, Param<F>)>,
) -> Result<Var<F>> {
    let t = x.tape();
    let b = biases.as_ref().map(|(b, _)| t.param(b));
    x.linear(&t.param(weight_ih), b.as_ref())
}

/// Applies a whole-sequence op (`eddy_ops::sequence`) to `[xp, weight_hh, states…, bias_hh]`:
/// the [`Cell::unroll`](crate::Cell::unroll) of the built-in cells.
pub(crate) fn apply_sequence<F: Float>(
    op: impl MultiOp<F>,
    xp: &Var<F>,
    weight_hh: &Param<F>,
    biases: &Option<(Param<F>, Param<F>)>,
    states: &[&Var<F>],
) -> Result<Vec<Var<F>>> {
    let t = xp.tape();
    let w = t.param(weight_hh);
    let b = biases.as_ref().map(|(_, b)| t.param(b));
    let mut inputs = vec![xp, &w];
    inputs.extend(states);
    inputs.extend(b.as_ref());
    t.apply_multi(op, &inputs)
}

/// The final step's entry of a `[T, B, H]` sequence output: step `T − 1`, or step 0 reversed.
pub(crate) fn last_step<F: Float>(all: &Var<F>, reverse: bool) -> Result<Var<F>> {
    let last = if reverse { 0 } else { all.shape()[0] - 1 };
    all.select(0, last)
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

/// Helpers of the cells' reference tests: parameters and random values as plain `Array2`s.
#[cfg(test)]
pub(crate) mod reference {
    use eddy_tape::{Param, Rng};
    use ndarray::{Array1, Array2, ArrayD};

    pub fn mat(p: &Param<f64>) -> Array2<f64> {
        p.value()
            .as_ref()
            .clone()
            .into_dimensionality()
            .expect("a matrix")
    }

    pub fn vec(p: &Param<f64>) -> Array1<f64> {
        p.value()
            .as_ref()
            .clone()
            .into_dimensionality()
            .expect("a vector")
    }

    pub fn random(rows: usize, cols: usize, rng: &mut Rng) -> Array2<f64> {
        Array2::from_shape_simple_fn((rows, cols), || rng.uniform_in(-1.0, 1.0))
    }

    pub fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// minGRU's and minLSTM's `g(v)`: `v + 0.5` for `v ≥ 0`, `σ(v)` otherwise.
    pub fn g(v: f64) -> f64 {
        if v >= 0.0 {
            v + 0.5
        } else {
            sigmoid(v)
        }
    }

    /// Runs `cell` step by step over `xs` (`T × [B, I]`) from `h0`: the final `h`.
    pub fn run_steps<C: crate::Cell<f64, State = eddy_tape::Var<f64>>>(
        cell: &C,
        xs: &[Array2<f64>],
        h0: &Array2<f64>,
    ) -> eddy_tape::Result<ArrayD<f64>> {
        let tape = eddy_tape::Tape::new();
        let mut h = tape.constant(h0.clone().into_dyn());
        for x in xs {
            h = cell.step(&cell.project(&tape.constant(x.clone().into_dyn()))?, &h)?;
        }
        Ok(h.value().clone())
    }

    /// Within `tol` of `want`, elementwise.
    pub fn assert_within(got: &ArrayD<f64>, want: &Array2<f64>, tol: f64) {
        assert_eq!(got.shape(), want.shape());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < tol, "got {got}, want {want}");
        }
    }

    pub fn assert_close(got: &ArrayD<f64>, want: &Array2<f64>) {
        assert_eq!(got.shape(), want.shape());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "got {got}, want {want}");
        }
    }
}
