//! `ops`: what one op costs on a no-grad tape at batch 1 (W7c's sizes: hidden 256, four gates),
//! in nanoseconds. A user's cell at batch 1 is a dozen such ops per step around one product by
//! `W_hh`; this target shows how the step's time divides between the product and the ops'
//! fixed costs (the output's allocation, its shape, the tape's checks), which is what W7c adds
//! to W6 (docs/custom-cells.md). Last, chains of five elementwise ops at batch 64, which on
//! several threads show where splitting an op across them (`eddy_tape::split`) pays.

use crate::custom_cell::{PointwiseLstm, UserLstm};
use crate::stats::measure;
use eddy_nn::Cell;
use eddy_ops::VarExt;
use eddy_tape::{Error, Result, Rng, Tape, Var};
use ndarray::ArrayD;
use std::hint::black_box;

/// Hidden units (W6's and W7c's).
const HIDDEN: usize = 256;
/// Input width of the cell (W6's).
const INPUT: usize = 128;

/// One op's cost: its name and the median over `rounds` of the mean time per call, in ns.
#[derive(Debug, Clone)]
pub struct OpCost {
    pub id: &'static str,
    pub median_ns: f64,
    pub min_ns: f64,
}

/// The median and the minimum over `rounds` rounds of `calls` calls of `f` (after one untimed
/// round), per call, in ns: [`measure`] of a round, each round one sample.
fn time<T>(rounds: usize, calls: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, f64)> {
    let s = measure(1, rounds.max(1), || {
        for _ in 0..calls {
            black_box(f()?);
        }
        Ok::<(), Error>(())
    })?;
    let ns_per_call = 1e6 / calls as f64;
    Ok((s.median_ms * ns_per_call, s.min_ms * ns_per_call))
}

/// A `[1, n]` constant of smooth values in `[-1, 1]`.
fn row(tape: &Tape<f32>, n: usize, seed: f32) -> Var<f32> {
    tape.constant(ArrayD::from_shape_fn(vec![1, n], |d| {
        (d[1] as f32 * 0.37 + seed).sin()
    }))
}

/// The costs, each measured in `rounds` rounds of `calls` calls (a twentieth of that for the
/// product and the steps, which take ~50 times as long, and less again for the chains of ops
/// at batch 64).
pub fn costs(rounds: usize, calls: usize) -> Result<Vec<OpCost>> {
    let (cheap, dear) = (calls.max(1), (calls / 20).max(1));
    let tape = Tape::<f32>::no_grad();
    let mut rng = Rng::seed(7);
    let user = UserLstm::new(INPUT, HIDDEN, &mut rng);
    let fused = PointwiseLstm(user.clone());
    let (a, b) = (row(&tape, HIDDEN, 0.1), row(&tape, HIDDEN, 0.7));
    let gates = row(&tape, 4 * HIDDEN, 0.3);
    let state = (row(&tape, HIDDEN, 0.5), row(&tape, HIDDEN, 0.9));
    let w_hh = tape.param(&user.weight_hh);
    let mut out = Vec::new();
    let mut add = |id: &'static str, (median_ns, min_ns): (f64, f64)| {
        out.push(OpCost {
            id,
            median_ns,
            min_ns,
        });
    };
    add("a + b [1, 256]", time(rounds, cheap, || &a + &b)?);
    add("a * b [1, 256]", time(rounds, cheap, || &a * &b)?);
    add("sigmoid [1, 256]", time(rounds, cheap, || a.sigmoid())?);
    add("tanh [1, 256]", time(rounds, cheap, || a.tanh())?);
    add(
        "chunk(4) of [1, 1024]",
        time(rounds, cheap / 2 + 1, || gates.chunk(4, 1))?,
    );
    add(
        "h.matmul_t(W_hh) [1, 256] by [1024, 256]",
        time(rounds, dear, || a.matmul_t(&w_hh))?,
    );
    add(
        "user LSTM step (W7c's cell)",
        time(rounds, dear, || user.step(&gates, &state))?,
    );
    add(
        "the same step, gates as one pointwise op (W7cP's)",
        time(rounds, dear, || fused.step(&gates, &state))?,
    );
    // Five elementwise ops in a chain at batch 64, each reading the one before: on several
    // threads those of at least `eddy_tape::split::SPLIT_MIN` values a part are split across
    // them (compare `--threads 1` with `--threads 2`).
    for (id, n) in [
        ("5 elementwise ops in a chain [64, 256]", 256),
        ("5 elementwise ops in a chain [64, 512]", 512),
        ("5 elementwise ops in a chain [64, 1024]", 1024),
    ] {
        let wide = |seed: f32| {
            tape.constant(ArrayD::from_shape_fn(vec![64, n], |d| {
                ((d[0] * n + d[1]) as f32 * 0.37 + seed).sin()
            }))
        };
        let (a, b) = (wide(0.2), wide(0.8));
        let chain = || {
            let s = a.sigmoid()?;
            let t = (&s * &b)?.tanh()?;
            &(&t + &a)? * &s
        };
        add(id, time(rounds, (dear * 256 / n).max(1), chain)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_is_timed() {
        let costs = costs(1, 40).expect("the ops run");
        assert_eq!(costs.len(), 11);
        for c in &costs {
            assert!(c.median_ns > 0.0 && c.median_ns.is_finite(), "{c:?}");
            assert!(c.min_ns <= c.median_ns, "{c:?}");
        }
    }
}
