//! PyTorch parity: runs a recurrent layer on a fixture written by `tools/torch_fixtures.py`
//! (`torch.nn.RNN/LSTM/GRU`) or `tools/torch_cell_fixtures.py` (minGRU, minLSTM, RG-LRU, sLSTM,
//! mLSTM written in plain PyTorch): weights by their PyTorch-style names, inputs, every state
//! part's initial `s0` and final `s_n`, lengths, outputs and the gradients of
//! `loss = Σ output·g_output + Σ_s Σ s_n·g_s_n`; it reports the largest errors.
//!
//! [`run_case_with`] runs the same case with the layer's fused whole-sequence ops switched off
//! ([`RecurrentConfig::fused`]): the built-in LSTM, GRU, Elman and sLSTM cells then run
//! through the layer's loop over their `step`, the generic path every user cell takes.

use crate::io::TensorFile;
use crate::{
    io, Cell, MinGruCell, MinLstmCell, MlstmCell, Nonlinearity, Recurrent, RecurrentConfig, RgLruCell,
    SlstmCell,
};
use eddy_tape::{Error, Float, Result, Rng, Tape, Var};
use ndarray::ArrayD;
use std::path::Path;

/// The largest errors of one case in one float type.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseErrors {
    /// Largest absolute error of `output`, `h_n`, `c_n`.
    pub output_abs: f64,
    /// Largest absolute error of every gradient.
    pub grad_abs: f64,
    /// Largest error relative to `max(|expected|, 1)`, over outputs and gradients.
    pub relative: f64,
    /// The tensor with the largest relative error.
    pub worst: String,
    /// The nodes the tape recorded for the forward pass and the loss: a few per time step on
    /// the per-step path, a few per layer and direction with a fused sequence op.
    pub tape_nodes: usize,
}

impl CaseErrors {
    /// The largest absolute error of outputs and gradients together.
    pub fn max_abs(&self) -> f64 {
        self.output_abs.max(self.grad_abs)
    }
}

/// Runs the case in `path` in float type `F`.
///
/// # Errors
/// [`Error::File`] for a file that is not a valid case; any error of the layer.
pub fn run_case<F: Float>(path: impl AsRef<Path>) -> Result<CaseErrors> {
    run_case_with::<F>(path, true)
}

/// Runs the case in `path` in float type `F`, with the cells' fused whole-sequence ops
/// ([`Cell::unroll`]) allowed or not (`fused = false`: the loop over [`Cell::step`]).
///
/// # Errors
/// As [`run_case`].
pub fn run_case_with<F: Float>(path: impl AsRef<Path>, fused: bool) -> Result<CaseErrors> {
    let file = TensorFile::read(path)?;
    let flag = |k: &str| -> Result<bool> { Ok(file.meta(k)? == "true") };
    let num = |k: &str| -> Result<usize> {
        file.meta(k)?
            .parse()
            .map_err(|_| Error::file(&file.path, format!("metadata {k:?} is not a number")))
    };
    let cfg = RecurrentConfig::new(num("input_size")?, num("hidden_size")?)
        .num_layers(num("num_layers")?)
        .fused(fused)
        .bidirectional(flag("bidirectional")?)
        .batch_first(flag("batch_first")?)
        .bias(flag("bias")?)
        .proj_size(
            file.metadata
                .get("proj_size")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
        );
    let mut rng = Rng::seed(0);
    let log_space = file.metadata.get("log_space").is_some_and(|v| v == "true");
    let xlstm = ["h", "c", "n", "m"];
    match file.meta("mode")? {
        "LSTM" => compare(cfg.lstm::<F>(&mut rng), &file, &["h", "c"]),
        "GRU" => compare(cfg.gru::<F>(&mut rng), &file, &["h"]),
        "RNN_TANH" => compare(cfg.rnn::<F>(Nonlinearity::Tanh, &mut rng), &file, &["h"]),
        "RNN_RELU" => compare(cfg.rnn::<F>(Nonlinearity::Relu, &mut rng), &file, &["h"]),
        "mingru" => {
            let make = |i, h, r: &mut Rng| MinGruCell::<F>::new(i, h, true, r).log_space(log_space);
            compare(cfg.build(make, &mut rng), &file, &["h"])
        }
        "minlstm" => {
            let make = |i, h, r: &mut Rng| MinLstmCell::<F>::new(i, h, true, r).log_space(log_space);
            compare(cfg.build(make, &mut rng), &file, &["h"])
        }
        "rglru" => compare(cfg.try_build(RgLruCell::<F>::new, &mut rng)?, &file, &["h"]),
        "slstm" => {
            let heads = num("heads")?;
            let layer = cfg.try_build(|i, h, r| SlstmCell::<F>::new(i, h, heads, r), &mut rng)?;
            compare(layer, &file, &xlstm)
        }
        "mlstm" => {
            let heads = num("heads")?;
            let layer = cfg.try_build(|i, h, r| MlstmCell::<F>::new(i, h, heads, r), &mut rng)?;
            compare(layer, &file, &["h", "C", "n", "m"])
        }
        other => Err(Error::file(&file.path, format!("unknown mode {other:?}"))),
    }
}

/// Runs `layer` on the case in `file`, whose state parts are named `parts` (`h`, `c`, …: the
/// tensors `{s}0`, `{s}_n`, `g_{s}_n`, `grad.{s}0`).
fn compare<F: Float, C: Cell<F>>(
    mut layer: Recurrent<F, C>,
    file: &TensorFile,
    parts: &[&str],
) -> Result<CaseErrors> {
    io::load_params(&layer, file, false)?;
    crate::Module::set_training(&mut layer, false);
    let tape = Tape::<F>::new();
    let x = tape.input(file.float("input")?);
    let init = parts
        .iter()
        .map(|s| Ok(tape.input(file.float(&format!("{s}0"))?)))
        .collect::<Result<Vec<_>>>()?;
    let lengths: Option<Vec<usize>> = match file.tensors.get("lengths") {
        Some(_) => Some(file.int("lengths")?.iter().map(|&l| l.max(0) as usize).collect()),
        None => None,
    };
    let out = layer.forward_with(&x, Some(&init), lengths.as_deref(), None)?;
    let weighted =
        |v: &Var<F>, name: &str| -> Result<Var<F>> { (v * &tape.constant(file.float(name)?))?.sum_all() };
    let mut loss = weighted(&out.output, "g_output")?;
    for (s, state) in parts.iter().zip(&out.states) {
        loss = (loss + weighted(state, &format!("g_{s}_n"))?)?;
    }
    let tape_nodes = tape.len();
    let grads = loss.backward()?;

    let mut e = CaseErrors {
        output_abs: 0.0,
        grad_abs: 0.0,
        relative: 0.0,
        worst: String::new(),
        tape_nodes,
    };
    let mut check = |name: &str, got: &ArrayD<F>, grad: bool| -> Result<()> {
        let want = file.float::<f64>(name)?;
        if want.shape() != got.shape() {
            return Err(Error::file(
                &file.path,
                format!(
                    "{name}: eddy gives shape {:?}, the fixture {:?}",
                    got.shape(),
                    want.shape()
                ),
            ));
        }
        let (mut abs, mut rel) = (0.0f64, 0.0f64);
        for (a, b) in got.iter().zip(want.iter()) {
            let d = (a.as_f64() - b).abs();
            abs = abs.max(d);
            rel = rel.max(d / b.abs().max(1.0));
        }
        if grad {
            e.grad_abs = e.grad_abs.max(abs);
        } else {
            e.output_abs = e.output_abs.max(abs);
        }
        if rel >= e.relative {
            e.relative = rel;
            e.worst = name.to_string();
        }
        Ok(())
    };
    check("output", out.output.value(), false)?;
    for (s, state) in parts.iter().zip(&out.states) {
        check(&format!("{s}_n"), state.value(), false)?;
    }
    let grad_of = |v: &Var<F>| grads.var(v).cloned().unwrap_or_else(|| ArrayD::zeros(v.shape()));
    check("grad.input", &grad_of(&x), true)?;
    for (s, v) in parts.iter().zip(&init) {
        check(&format!("grad.{s}0"), &grad_of(v), true)?;
    }
    for (name, p) in crate::Module::params(&layer) {
        let g = grads
            .param(&p)
            .cloned()
            .unwrap_or_else(|| ArrayD::zeros(p.shape()));
        check(&format!("grad.{name}"), &g, true)?;
    }
    Ok(e)
}
