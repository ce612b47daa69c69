//! W7's LSTM written as a user would: a struct with three [`Param`]s implementing [`Cell`] with
//! primitive tape ops only (`linear`, `matmul_t`, `chunk`, `sigmoid`, `tanh`, `*`, `+`), no
//! fused kernels. The input projection goes through [`Cell::project`], so the layer computes it
//! for all time steps in one GEMM, as the built-in does.

use eddy_nn::{init, Cell, Module};
use eddy_ops::pointwise::{pointwise, Pointwise, Real};
use eddy_ops::{linear_add, VarExt};
use eddy_tape::{Param, Result, Rng, Var};

/// `i, f, g, o = chunk(W_ih x + b + W_hh h, 4)`; `c' = σ(f)c + σ(i)tanh(g)`; `h' = σ(o)tanh(c')`.
/// `Clone` shares the parameters (a `Sequential` layer needs it: W7F).
#[derive(Clone)]
pub struct UserLstm {
    pub weight_ih: Param<f32>,
    pub weight_hh: Param<f32>,
    pub bias: Param<f32>,
}

impl UserLstm {
    /// PyTorch's initialisation, `U(-1/√hidden, 1/√hidden)`.
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> UserLstm {
        UserLstm {
            weight_ih: Param::new(
                "weight_ih",
                init::pytorch_default(&[4 * hidden, input], hidden, rng),
            ),
            weight_hh: Param::new(
                "weight_hh",
                init::pytorch_default(&[4 * hidden, hidden], hidden, rng),
            ),
            bias: Param::new("bias", init::pytorch_default(&[4 * hidden], hidden, rng)),
        }
    }
}

impl Module<f32> for UserLstm {
    fn params(&self) -> Vec<(String, Param<f32>)> {
        vec![
            ("weight_ih".into(), self.weight_ih.clone()),
            ("weight_hh".into(), self.weight_hh.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}

impl Cell<f32> for UserLstm {
    type State = (Var<f32>, Var<f32>);

    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    fn state_sizes(&self) -> Vec<usize> {
        let h = self.weight_hh.shape()[1];
        vec![h, h]
    }

    fn project(&self, x: &Var<f32>) -> Result<Var<f32>> {
        let t = x.tape();
        x.linear(&t.param(&self.weight_ih), Some(&t.param(&self.bias)))
    }

    fn step(&self, xw: &Var<f32>, (h, c): &(Var<f32>, Var<f32>)) -> Result<(Var<f32>, Var<f32>)> {
        let t = xw.tape();
        let gates = (xw + h.matmul_t(&t.param(&self.weight_hh))?)?;
        let [i, f, g, o]: [Var<f32>; 4] = gates.chunk(4, 1)?.try_into().expect("four chunks");
        let (i, f, g, o) = (i.sigmoid()?, f.sigmoid()?, g.tanh()?, o.sigmoid()?);
        let fc = (&f * c)?;
        let ig = (&i * &g)?;
        let c = (&fc + &ig)?;
        let h = (&o * &c.tanh()?)?;
        Ok((h, c))
    }
}

/// The LSTM's gate math, `i, f, g, o, c` to `h', c'`, written once over [`Real`]: eddy runs it in
/// one loop and differentiates it (dual numbers), so the cell writes no backward code.
pub struct LstmGates;

impl Pointwise<5, 2> for LstmGates {
    #[inline(always)]
    fn eval<R: Real>(&self, [i, f, g, o, c]: [R; 5]) -> [R; 2] {
        let c = f.sigmoid() * c + i.sigmoid() * g.tanh();
        [o.sigmoid() * c.tanh(), c]
    }
}

/// W7P, W7bP, W7cP: [`UserLstm`]'s parameters and projection, its step's gate math as one
/// [`pointwise`] op ([`LstmGates`]) instead of ten separate ones (`chunk`, four activations,
/// three products, a sum).
#[derive(Clone)]
pub struct PointwiseLstm(pub UserLstm);

impl PointwiseLstm {
    /// As [`UserLstm::new`].
    pub fn new(input: usize, hidden: usize, rng: &mut Rng) -> PointwiseLstm {
        PointwiseLstm(UserLstm::new(input, hidden, rng))
    }
}

impl Module<f32> for PointwiseLstm {
    fn params(&self) -> Vec<(String, Param<f32>)> {
        self.0.params()
    }
}

impl Cell<f32> for PointwiseLstm {
    type State = (Var<f32>, Var<f32>);

    fn input_size(&self) -> usize {
        self.0.input_size()
    }

    fn state_sizes(&self) -> Vec<usize> {
        self.0.state_sizes()
    }

    fn project(&self, x: &Var<f32>) -> Result<Var<f32>> {
        self.0.project(x)
    }

    fn step(&self, xw: &Var<f32>, (h, c): &(Var<f32>, Var<f32>)) -> Result<(Var<f32>, Var<f32>)> {
        let t = xw.tape();
        // `xw + h·W_hhᵀ` in one op: the product stored onto a copy of `xw`, the weight's
        // gradient deferred to one product over all steps, as `matmul_t`'s.
        let gates = linear_add(h, &t.param(&self.0.weight_hh), None, Some(xw))?;
        let [h, c] = pointwise(LstmGates, &[(&gates, 4), (c, 1)])?;
        Ok((h, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_nn::{LstmCell, RecurrentConfig};
    use eddy_tape::Tape;

    /// The user's cell computes what the built-in LSTM computes, given the same weights.
    #[test]
    fn matches_the_builtin_lstm() -> Result<()> {
        let mut rng = Rng::seed(1);
        let cfg = RecurrentConfig::new(3, 4);
        let builtin = cfg.lstm::<f32>(&mut rng);
        let user = cfg.build(UserLstm::new, &mut rng);
        let (b, u): (&LstmCell<f32>, &UserLstm) = (&builtin.cells[0], &user.cells[0]);
        u.weight_ih.set((*b.weight_ih.value()).clone());
        u.weight_hh.set((*b.weight_hh.value()).clone());
        let (bi, bh) = b.biases.as_ref().expect("biases");
        u.bias.set(&*bi.value() + &*bh.value());
        let tape = Tape::new();
        let x = tape.constant(init::uniform(&[5, 2, 3], 1.0, &mut rng));
        let (yb, yu) = (builtin.forward(&x)?.output, user.forward(&x)?.output);
        let diff = (yb.value() - yu.value())
            .mapv(f32::abs)
            .fold(0.0f32, |a, &b| a.max(b));
        assert!(diff < 1e-5, "max difference {diff}");
        // The same cell with its gate math as one `pointwise` op.
        let fused = cfg.build(PointwiseLstm::new, &mut rng);
        for (p, q) in fused.cells[0].params().iter().zip(user.cells[0].params()) {
            p.1.set((*q.1.value()).clone());
        }
        let yp = fused.forward(&x)?.output;
        let diff = (yp.value() - yu.value())
            .mapv(f32::abs)
            .fold(0.0f32, |a, &b| a.max(b));
        assert!(diff < 1e-5, "max difference (pointwise) {diff}");
        Ok(())
    }
}
