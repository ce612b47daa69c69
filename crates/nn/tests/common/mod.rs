//! What several test files share: [`Mgu`], a user cell that runs on the per-step path.

use eddy_nn::{init, Cell, Module};
use eddy_ops::prelude::*;
use eddy_tape::Float;

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
