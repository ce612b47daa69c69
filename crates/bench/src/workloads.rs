//! The workloads W1–W10: float32 training steps (forward over the whole sequence, a per-step
//! `Linear(H→1)` head, MSE, backward, one Adam update) and inference latencies (W6, W7c).
//! W7, W7b and W7c are W2, W4 and W6 with a user-written LSTM cell; W7F is W7 trained through
//! `Sequential` + `fit` instead of a hand-written loop. W8–W10
//! are the newer cells: minGRU (linear and log-space modes, run as a scan), sLSTM, mLSTM
//! (recurrent and parallel forms).
//!
//! `bench/torch_bench.py` runs the same workloads in PyTorch; keep the two in step. With more
//! than one thread, a train step splits the batch into one shard per thread (data parallelism),
//! except for the largest layer (W4), whose products are split across the threads instead.

use crate::custom_cell::{PointwiseLstm, UserLstm};
use crate::stats::{measure, Stats};
use eddy_nn::loss::{mse, Reduction};
use eddy_nn::optim::{Adam, AdamConfig, Optimizer};
use eddy_nn::parallel::data_parallel;
use eddy_nn::sequential::{dense, recurrent, Loss, Optim, Sequential};
use eddy_nn::FitOptions;
use eddy_nn::{
    init, Cell, Linear, MinGruCell, MlstmCell, Module, Nonlinearity, Recurrent, RecurrentConfig, SlstmCell,
};
use eddy_tape::{Error, Param, Result, Rng, Tape, Var};
use ndarray::{ArrayD, Axis, Slice};
use std::hint::black_box;
use std::sync::Arc;

/// A workload's id, what it runs, and its arithmetic.
pub struct Workload {
    pub id: &'static str,
    pub desc: &'static str,
    /// Floating-point operations of one step (a multiply-add counts 2), from the layers'
    /// products alone: a train step of an LSTM layer is `24·T·B·H·(I+H)` (its forward
    /// `8·T·B·H·(I+H)`, the backward twice that), a GRU's `18·…`, an Elman RNN's `6·…`; an
    /// inference step is the forward third. Summed over the layers, each with its own `I`.
    /// W8–W10 count their own products: see [`min_gru_flops`], [`slstm_flops`], [`mlstm_flops`].
    pub flops: f64,
}

/// `k·T·B·H·(I+H)` per layer (see [`Workload::flops`]), for `layers` layers of hidden size `h`
/// over input size `i`.
const fn flops(k: usize, t: usize, b: usize, i: usize, h: usize, layers: usize) -> f64 {
    let mut sum = 0;
    let mut layer = 0;
    while layer < layers {
        let input = if layer == 0 { i } else { h };
        sum += k * t * b * h * (input + h);
        layer += 1;
    }
    sum as f64
}

/// A minGRU train step (W8): the input projection `x·W_ihᵀ` to `2H` (`4·T·B·I·H`) and its weight
/// gradient (the same again); the input needs no gradient, and the scan is pointwise.
pub const fn min_gru_flops(t: usize, b: usize, i: usize, h: usize) -> f64 {
    (8 * t * b * i * h) as f64
}

/// An sLSTM train step (W9): the input projection to `4H` and its weight gradient
/// (`16·T·B·I·H`), and the block-diagonal recurrent product (`heads` blocks `[4·dh, dh]`,
/// `8·T·B·H·dh` forward) with its two backward products (`24·T·B·H·dh` in all).
pub const fn slstm_flops(t: usize, b: usize, i: usize, h: usize, heads: usize) -> f64 {
    let dh = h / heads;
    (16 * t * b * i * h + 24 * t * b * h * dh) as f64
}

/// An mLSTM train step (W10), recurrent form: the `q, k, v, o` projection to `4H` and its weight
/// gradient (`16·T·B·I·H`, the gates' `2·heads` rows are negligible), and per step and head the
/// memory update `C += v kᵀ` and read `C q` (`d²` multiply-adds each: `4·T·B·H·d` forward),
/// backward twice that (`12·T·B·H·d` in all). The parallel form does other work (its `T×T`
/// products); W10PAR is counted the same, for comparison.
pub const fn mlstm_flops(t: usize, b: usize, i: usize, h: usize, heads: usize) -> f64 {
    let d = h / heads;
    (16 * t * b * i * h + 12 * t * b * h * d) as f64
}

/// Every workload, in order.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        id: "W1",
        desc: "train: 2-layer LSTM(50), input 1, batch 32, T 50, Linear(50->1) per step, MSE, Adam(0.01)",
        flops: flops(24, 50, 32, 1, 50, 2),
    },
    Workload {
        id: "W2",
        desc: "train: LSTM input 128, hidden 256, batch 64, T 100, Linear(256->1) per step, MSE, Adam",
        flops: flops(24, 100, 64, 128, 256, 1),
    },
    Workload {
        id: "W3",
        desc: "train: GRU input 128, hidden 256, batch 64, T 100, Linear(256->1) per step, MSE, Adam",
        flops: flops(18, 100, 64, 128, 256, 1),
    },
    Workload {
        id: "W4",
        desc: "train: LSTM input 512, hidden 1024, batch 64, T 50, Linear(1024->1) per step, MSE, Adam",
        flops: flops(24, 50, 64, 512, 1024, 1),
    },
    Workload {
        id: "W5",
        desc: "train: Elman RNN (tanh) input 64, hidden 128, batch 32, T 200, Linear(128->1) per step, MSE, Adam",
        flops: flops(6, 200, 32, 64, 128, 1),
    },
    Workload {
        id: "W6",
        desc: "inference: LSTM input 128, hidden 256, batch 1, T 1000, forward only, no tape",
        flops: flops(8, 1000, 1, 128, 256, 1),
    },
    Workload {
        id: "W7",
        desc: "train: W2 with a user-written LSTM cell (crates/bench/src/custom_cell.rs): its input projection through the fused Linear op (x·Wᵀ + b, as a cell's `project`), its step from primitive ops (matmul_t, chunk, sigmoid, tanh, *, +), no fused gate kernel or sequence op",
        flops: flops(24, 100, 64, 128, 256, 1),
    },
    Workload {
        id: "W7F",
        desc: "train: W7's user-written LSTM cell and data through Sequential (recurrent(cell) -> dense(1)) + fit (one epoch of one batch of 64 per step, no shuffle, W7's shards: FitOptions::shards), the same batch, head, loss and Adam step as W7's hand loop",
        flops: flops(24, 100, 64, 128, 256, 1),
    },
    Workload {
        id: "W7b",
        desc: "train: W4 (LSTM input 512, hidden 1024, batch 64, T 50) with W7's user-written LSTM cell",
        flops: flops(24, 50, 64, 512, 1024, 1),
    },
    Workload {
        id: "W7c",
        desc: "inference: W6 (LSTM input 128, hidden 256, batch 1, T 1000, forward only, no tape) with W7's user-written LSTM cell",
        flops: flops(8, 1000, 1, 128, 256, 1),
    },
    Workload {
        id: "W7P",
        desc: "train: W7 with the user cell's gate math as one `pointwise` op (crates/bench/src/custom_cell.rs: PointwiseLstm), the products and the gates' sum as W7's",
        flops: flops(24, 100, 64, 128, 256, 1),
    },
    Workload {
        id: "W7bP",
        desc: "train: W7b with W7P's cell",
        flops: flops(24, 50, 64, 512, 1024, 1),
    },
    Workload {
        id: "W7cP",
        desc: "inference: W7c with W7P's cell",
        flops: flops(8, 1000, 1, 128, 256, 1),
    },
    Workload {
        id: "W8",
        desc: "train: minGRU input 256, hidden 256, batch 16, T 4096, Linear(256->1) per step, MSE, Adam (the linear scan)",
        flops: min_gru_flops(4096, 16, 256, 256),
    },
    Workload {
        id: "W8LOG",
        desc: "train: W8 in minGRU's log-space mode (the log-space scan)",
        flops: min_gru_flops(4096, 16, 256, 256),
    },
    Workload {
        id: "W9",
        desc: "train: sLSTM input 128, hidden 256, heads 4, batch 32, T 256, Linear(256->1) per step, MSE, Adam",
        flops: slstm_flops(256, 32, 128, 256, 4),
    },
    Workload {
        id: "W10",
        desc: "train: mLSTM input 256, hidden 256, heads 4, batch 8, T 1024, Linear(256->1) per step, MSE, Adam (recurrent form)",
        flops: mlstm_flops(1024, 8, 256, 256, 4),
    },
    Workload {
        id: "W10PAR",
        desc: "train: W10 in the parallel form (causal, quadratic in T)",
        flops: mlstm_flops(1024, 8, 256, 256, 4),
    },
];

const W8_SHAPE: Shape = Shape {
    input: 256,
    hidden: 256,
    layers: 1,
    batch: 16,
    steps: 4096,
};

const W9_SHAPE: Shape = Shape {
    input: 128,
    hidden: 256,
    layers: 1,
    batch: 32,
    steps: 256,
};

const W10_SHAPE: Shape = Shape {
    input: 256,
    hidden: 256,
    layers: 1,
    batch: 8,
    steps: 1024,
};

/// The sizes of a recurrent workload.
#[derive(Debug, Clone, Copy)]
struct Shape {
    input: usize,
    hidden: usize,
    layers: usize,
    batch: usize,
    steps: usize,
}

const W2_SHAPE: Shape = Shape {
    input: 128,
    hidden: 256,
    layers: 1,
    batch: 64,
    steps: 100,
};

const W4_SHAPE: Shape = Shape {
    input: 512,
    hidden: 1024,
    layers: 1,
    batch: 64,
    steps: 50,
};

const W6_SHAPE: Shape = Shape {
    input: 128,
    hidden: 256,
    layers: 1,
    batch: 1,
    steps: 1000,
};

/// Runs workload `id` (`W1` … `W10PAR`): `warmup` untimed steps, then `steps` timed ones.
pub fn run(id: &str, warmup: usize, steps: usize) -> Result<Stats> {
    let mut rng = Rng::seed(0);
    match id {
        "W1" => {
            let s = Shape {
                input: 1,
                hidden: 50,
                layers: 2,
                batch: 32,
                steps: 50,
            };
            let lstm = config(s).lstm(&mut rng);
            train(lstm, s, 0.01, &mut rng, warmup, steps)
        }
        "W2" => train(
            config(W2_SHAPE).lstm(&mut rng),
            W2_SHAPE,
            1e-3,
            &mut rng,
            warmup,
            steps,
        ),
        "W3" => train(
            config(W2_SHAPE).gru(&mut rng),
            W2_SHAPE,
            1e-3,
            &mut rng,
            warmup,
            steps,
        ),
        "W4" => train(
            config(W4_SHAPE).lstm(&mut rng),
            W4_SHAPE,
            1e-3,
            &mut rng,
            warmup,
            steps,
        ),
        "W5" => {
            let s = Shape {
                input: 64,
                hidden: 128,
                layers: 1,
                batch: 32,
                steps: 200,
            };
            let rnn = config(s).rnn(Nonlinearity::Tanh, &mut rng);
            train(rnn, s, 1e-3, &mut rng, warmup, steps)
        }
        "W6" => {
            let lstm = config(W6_SHAPE).lstm::<f32>(&mut rng);
            infer(lstm, W6_SHAPE, &mut rng, warmup, steps)
        }
        "W7" => {
            let user = config(W2_SHAPE).build(UserLstm::new, &mut rng);
            train(user, W2_SHAPE, 1e-3, &mut rng, warmup, steps)
        }
        "W7F" => train_fit(W2_SHAPE, 1e-3, &mut rng, warmup, steps),
        "W7b" => {
            let user = config(W4_SHAPE).build(UserLstm::new, &mut rng);
            train(user, W4_SHAPE, 1e-3, &mut rng, warmup, steps)
        }
        "W7c" => {
            let user = config(W6_SHAPE).build(UserLstm::new, &mut rng);
            infer(user, W6_SHAPE, &mut rng, warmup, steps)
        }
        "W7P" => {
            let user = config(W2_SHAPE).build(PointwiseLstm::new, &mut rng);
            train(user, W2_SHAPE, 1e-3, &mut rng, warmup, steps)
        }
        "W7bP" => {
            let user = config(W4_SHAPE).build(PointwiseLstm::new, &mut rng);
            train(user, W4_SHAPE, 1e-3, &mut rng, warmup, steps)
        }
        "W7cP" => {
            let user = config(W6_SHAPE).build(PointwiseLstm::new, &mut rng);
            infer(user, W6_SHAPE, &mut rng, warmup, steps)
        }
        "W8" | "W8LOG" => {
            let log = id == "W8LOG";
            let make = |i, h, r: &mut Rng| MinGruCell::new(i, h, true, r).log_space(log);
            train(
                config(W8_SHAPE).build(make, &mut rng),
                W8_SHAPE,
                1e-3,
                &mut rng,
                warmup,
                steps,
            )
        }
        "W9" => {
            let make = |i, h, r: &mut Rng| SlstmCell::new(i, h, 4, r);
            let slstm = config(W9_SHAPE).try_build(make, &mut rng)?;
            train(slstm, W9_SHAPE, 1e-3, &mut rng, warmup, steps)
        }
        "W10" => {
            let make = |i, h, r: &mut Rng| MlstmCell::new(i, h, 4, r);
            let mlstm = config(W10_SHAPE).try_build(make, &mut rng)?;
            train(mlstm, W10_SHAPE, 1e-3, &mut rng, warmup, steps)
        }
        "W10PAR" => {
            let cell = MlstmCell::<f32>::new(W10_SHAPE.input, W10_SHAPE.hidden, 4, &mut rng)?;
            let params = cell.param_list();
            let forward = |x: &Var<f32>| cell.parallel(x, false);
            train_model(params, forward, W10_SHAPE, 1e-3, &mut rng, warmup, steps)
        }
        other => Err(Error::invalid("eddy-bench", format!("unknown workload {other}"))),
    }
}

fn config(s: Shape) -> RecurrentConfig {
    RecurrentConfig::new(s.input, s.hidden).num_layers(s.layers)
}

/// Train steps of `rnn` + a per-step `Linear(H→1)` head, MSE against a fixed random target, Adam.
fn train<C: Cell<f32> + Sync>(
    rnn: Recurrent<f32, C>,
    s: Shape,
    lr: f64,
    rng: &mut Rng,
    warmup: usize,
    steps: usize,
) -> Result<Stats> {
    let params = rnn.param_list();
    let forward = |x: &Var<f32>| Ok(rnn.forward(x)?.output);
    train_model(params, forward, s, lr, rng, warmup, steps)
}

/// Train steps of a model given by its parameters and its forward map (`[T, B, I]` →
/// `[T, B, H]`), as [`train`].
fn train_model(
    mut params: Vec<Param<f32>>,
    forward: impl Fn(&Var<f32>) -> Result<Var<f32>> + Sync,
    s: Shape,
    lr: f64,
    rng: &mut Rng,
    warmup: usize,
    steps: usize,
) -> Result<Stats> {
    let head = Linear::<f32>::new(s.hidden, 1, rng);
    let x: Arc<ArrayD<f32>> = Arc::new(init::uniform(&[s.steps, s.batch, s.input], 1.0, rng));
    let target: Arc<ArrayD<f32>> = Arc::new(init::uniform(&[s.steps, s.batch, 1], 1.0, rng));
    params.extend(head.param_list());
    let mut opt = Adam::new(
        params,
        AdamConfig {
            lr,
            ..AdamConfig::default()
        },
    )?;
    // Shards of the batch, one tape each, gradients summed in shard order (eddy_nn::parallel):
    // with one thread this is the plain single-tape step.
    let shards = shards(s, rayon::current_num_threads());
    measure(warmup, steps, || -> Result<()> {
        let (loss, grads) = data_parallel(s.batch, shards, |rows, weight| {
            let tape = Tape::new();
            // A shard's rows of the batch; the whole batch (one shard) is shared, not copied,
            // as PyTorch's side passes its tensor.
            let rows_of = |a: &Arc<ArrayD<f32>>| match rows.len() == s.batch {
                true => tape.constant_shared(Arc::clone(a)),
                false => tape.constant(a.slice_axis(Axis(1), Slice::from(rows.clone())).to_owned()),
            };
            let out = forward(&rows_of(&x))?;
            let pred = head.forward(&out)?;
            let loss = mse(&pred, &rows_of(&target), Reduction::Mean, None)?.scale(weight)?;
            Ok((loss.item()? as f64, loss.backward()?))
        })?;
        opt.step(&grads)?;
        if !loss.is_finite() {
            return Err(Error::invalid("eddy-bench", "the loss is not finite"));
        }
        Ok(())
    })
}

/// W7F: W7's cell, sizes and data through `Sequential` + `fit`, one optimizer step per `fit`
/// call (one epoch of one batch), to compare a user cell in `fit` with the same cell in W7's hand
/// loop. `fit` splits the batch into W7's shards ([`shards`], via [`FitOptions::shards`]), so
/// the two differ only in `fit` against the hand loop.
fn train_fit(s: Shape, lr: f64, rng: &mut Rng, warmup: usize, steps: usize) -> Result<Stats> {
    let hidden = s.hidden;
    let mut model = Sequential::new()
        .add(recurrent(move |input, rng| UserLstm::new(input, hidden, rng)).return_sequences(true))
        .add(dense(1))
        .build::<f32>(s.input, rng)?;
    model.compile(Optim::adam(lr), Loss::Mse)?;
    // W7's arrays, time-major there, batch-first here.
    let x: ArrayD<f32> = init::uniform(&[s.steps, s.batch, s.input], 1.0, rng);
    let target: ArrayD<f32> = init::uniform(&[s.steps, s.batch, 1], 1.0, rng);
    let batch_first = |a: ArrayD<f32>| a.permuted_axes(vec![1, 0, 2]).as_standard_layout().to_owned();
    let (x, target) = (batch_first(x), batch_first(target));
    let shards = shards(s, rayon::current_num_threads());
    measure(warmup, steps, || -> Result<()> {
        let options = FitOptions {
            epochs: 1,
            batch_size: s.batch,
            shuffle: false,
            progress: false,
            shards,
            ..FitOptions::default()
        };
        let history = model.fit(&x, &target, options)?;
        if !history.loss[0].is_finite() {
            return Err(Error::invalid("eddy-bench", "the loss is not finite"));
        }
        Ok(())
    })
}

/// How many data-parallel shards a train step uses on `threads` threads. Up to hidden size 512:
/// one per thread (each shard's weight gradients are small, and its half-batch products still
/// fill a core). From hidden size 1024 (W4): one shard, and the large products themselves are
/// split across the threads (`eddy_ops::kernels::gemm`): a shard per thread would compute and sum two
/// full-size weight gradients (24 MiB each at W4) from half-batch (M = 32) products, measured
/// 7% slower.
fn shards(s: Shape, threads: usize) -> usize {
    if s.hidden >= 1024 {
        1
    } else {
        threads.min(s.batch)
    }
}

/// W6 and W7c: forward passes of a recurrent layer on a tape that records nothing.
fn infer<C: Cell<f32>>(
    rnn: Recurrent<f32, C>,
    s: Shape,
    rng: &mut Rng,
    warmup: usize,
    steps: usize,
) -> Result<Stats> {
    let x: ArrayD<f32> = init::uniform(&[s.steps, s.batch, s.input], 1.0, rng);
    measure(warmup, steps, || -> Result<()> {
        let tape = Tape::no_grad();
        let x = tape.constant(x.clone());
        let out = rnn.forward(&x)?;
        black_box(out.output.value());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_runs_one_step() {
        for w in WORKLOADS {
            // W4 is large; one step of each still proves the plumbing.
            let s = run(w.id, 0, 1).unwrap_or_else(|e| panic!("{}: {e}", w.id));
            assert_eq!(s.times_ms.len(), 1);
        }
    }

    #[test]
    fn unknown_workload_is_an_error() {
        assert!(run("W99", 0, 1).is_err());
    }
}
