//! What several test files share: two user-defined cells (JANET on the sequence paths, [`Mgu`]
//! on the per-step path) and scratch directories.

use eddy_nn::{init, Cell, Module};
use eddy_ops::prelude::*;
use std::path::PathBuf;

/// A forget-gate-only cell (JANET, van der Westhuizen & Lasenby 2018), written with the public API
/// only, in any float type: `s, c̃ = W x + U h + b`, `h' = σ(s) ⊙ h + σ(1 − s) ⊙ tanh(c̃)`.
#[derive(Clone)]
pub struct Janet<F: Float> {
    weight_ih: Param<F>,
    weight_hh: Param<F>,
    bias: Param<F>,
}

impl<F: Float> Janet<F> {
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        Janet {
            weight_ih: Param::new("weight_ih", init::xavier_uniform(&[2 * hidden, input], 1.0, rng)),
            weight_hh: Param::new("weight_hh", init::orthogonal(2 * hidden, hidden, 1.0, rng)),
            bias: Param::new("bias", init::pytorch_default(&[2 * hidden], hidden, rng)),
        }
    }
}

impl<F: Float> Module<F> for Janet<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        vec![
            ("weight_ih".into(), self.weight_ih.clone()),
            ("weight_hh".into(), self.weight_hh.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}

impl<F: Float> Cell<F> for Janet<F> {
    type State = Var<F>;
    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }
    fn state_sizes(&self) -> Vec<usize> {
        vec![self.weight_hh.shape()[1]]
    }
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        let t = x.tape();
        x.linear(&t.param(&self.weight_ih), Some(&t.param(&self.bias)))
    }
    fn step(&self, xw: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
        let gates = (xw + h.matmul_t(&xw.tape().param(&self.weight_hh))?)?;
        let [s, c]: [Var<F>; 2] = gates.chunk(2, 1)?.try_into().expect("two chunks");
        let input = s.neg()?.shift(F::of(1.0))?.sigmoid()?;
        (s.sigmoid()? * h)? + (input * c.tanh()?)?
    }
}

/// An empty scratch directory `eddy-<group>-<name>-<pid>` under the system's temporary directory
/// (`group` keeps the test files' directories apart: they run in one process).
pub fn tmp_dir(group: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("eddy-{group}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A user cell, per-step path only: a minimal gated unit (Zhou et al. 2016) with its input
/// projection hoisted, `f = σ(x_f + U_f h)`, `h' = h + f ⊙ (tanh(x_n + U_n (f ⊙ h)) − h)`.
#[derive(Clone)]
pub struct Mgu<F: Float> {
    w: Param<F>,
    b: Param<F>,
    uf: Param<F>,
    un: Param<F>,
}

impl<F: Float> Mgu<F> {
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> Self {
        Mgu {
            w: Param::new("w", init::pytorch_default(&[2 * hidden, input], hidden, rng)),
            b: Param::new("b", init::pytorch_default(&[2 * hidden], hidden, rng)),
            uf: Param::new("u_f", init::pytorch_default(&[hidden, hidden], hidden, rng)),
            un: Param::new("u_n", init::pytorch_default(&[hidden, hidden], hidden, rng)),
        }
    }
}

impl<F: Float> Module<F> for Mgu<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        [&self.w, &self.b, &self.uf, &self.un]
            .iter()
            .map(|p| (p.name().to_string(), (*p).clone()))
            .collect()
    }
}

impl<F: Float> Cell<F> for Mgu<F> {
    type State = Var<F>;
    fn input_size(&self) -> usize {
        self.w.shape()[1]
    }
    fn state_sizes(&self) -> Vec<usize> {
        vec![self.uf.shape()[0]]
    }
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        let t = x.tape();
        x.linear(&t.param(&self.w), Some(&t.param(&self.b)))
    }
    fn step(&self, xp: &Var<F>, h: &Var<F>) -> Result<Var<F>> {
        let t = xp.tape();
        let parts = xp.chunk(2, 1)?;
        let f = (&parts[0] + h.matmul_t(&t.param(&self.uf))?)?.sigmoid()?;
        let n = (&parts[1] + (&f * h)?.matmul_t(&t.param(&self.un))?)?.tanh()?;
        h + (&f * (&n - h)?)?
    }
}
