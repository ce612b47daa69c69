//! sLSTM, xLSTM's scalar-memory cell (Beck et al. 2024).

use crate::{init, Cell, Module};
use eddy_ops::{matmul_t, SlstmSequence, VarExt};
use eddy_tape::{Error, Float, Param, Result, Rng, Var};
use ndarray::ArrayD;

/// The sLSTM cell (Beck, Pöppel, Spanring et al., "xLSTM: Extended Long Short-Term Memory",
/// 2024): an LSTM with an exponential input gate, a normaliser state `n`, a stabiliser state
/// `m` that keeps the exponentials finite, and block-diagonal (multi-head) recurrent weights.
///
/// ```text
/// [ĩ, f̃, z̃, õ] = W x + R h + b           (gate blocks of size H in this order)
/// log f = logsigmoid(f̃)
/// m' = max(log f + m, ĩ)
/// i' = exp(ĩ − m'),  f' = exp(log f + m − m')
/// c' = f' ⊙ c + i' ⊙ tanh(z̃)
/// n' = f' ⊙ n + i'
/// h' = σ(õ) ⊙ c' / n'
/// ```
///
/// `R` is block-diagonal over `heads` heads of `dh = H / heads` units: head `j` reads
/// `h[j·dh .. (j+1)·dh]`, and row `g·dh + u` of its block `weight_hh[j]` adds to pre-activation
/// `g·H + j·dh + u` (gate `g` in ĩ, f̃, z̃, õ order). The recursion is followed exactly: no
/// special first step and no ε, so the normaliser of a given initial state must keep `n'`
/// nonzero (the zero state does: `n' = i' > 0` at the first step). The stabiliser's `max` is
/// differentiated as is (the gradient goes to the larger argument).
///
/// Parameters: `weight_ih` `[4H, I]` and `weight_hh` `[heads, 4·dh, dh]`, `U(-1/√H, 1/√H)`
/// (PyTorch's LSTM init); `bias` `[4H]`, the same except the forget block, `linspace(3, 6)`
/// over the units so that the cell starts out remembering (xLSTM's forget biases are
/// positive for the same reason). State `(h, c, n, m)`, each `[B, H]`, zeros by default.
///
/// The layer runs a whole sequence (when no step needs a mask) as one
/// [`SlstmSequence`] op, with a fused kernel and a fast backward; [`Cell::step`] is the
/// reference it is tested against.
///
/// # Example
/// ```
/// use eddy_nn::{RecurrentConfig, SlstmCell};
/// use eddy_ops::prelude::*;
///
/// let mut rng = Rng::seed(0);
/// let layer = RecurrentConfig::new(3, 8)
///     .bidirectional(true)
///     .try_build(|i, h, rng| SlstmCell::<f32>::new(i, h, 2, rng), &mut rng)?;
/// let tape = Tape::new();
/// let out = layer.forward(&tape.input(ndarray::ArrayD::zeros(vec![5, 2, 3])))?; // [T, B, I]
/// assert_eq!(out.output.shape(), &[5, 2, 16]);
/// assert_eq!(out.states.len(), 4); // h, c, n, m
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SlstmCell<F: Float = f32> {
    /// Input weights `[4H, I]`, gates i, f, z, o.
    pub weight_ih: Param<F>,
    /// The recurrent weights, one `[4·dh, dh]` block per head.
    pub weight_hh: Param<F>,
    /// The gates' bias `[4H]` (forget block `linspace(3, 6)`).
    pub bias: Param<F>,
}

impl<F: Float> SlstmCell<F> {
    /// A cell from `input` to `hidden` features in `heads` heads.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `heads` is 0 or does not divide `hidden`.
    pub fn new(input: usize, hidden: usize, heads: usize, rng: &mut Rng) -> Result<Self> {
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(Error::invalid(
                "slstm",
                format!("{heads} heads do not divide the hidden size {hidden}"),
            ));
        }
        let dh = hidden / heads;
        // Checked sizes: a huge hidden size is an error, not a wrapped shape.
        let Some(h4) = hidden.checked_mul(4) else {
            return Err(Error::shape(
                "slstm",
                &[&[input, hidden, heads]],
                "4 × hidden overflows usize (sizes input, hidden, heads)",
            ));
        };
        init::check_size::<F>("slstm weight_ih", &[h4, input.max(1)])?;
        init::check_size::<F>("slstm weight_hh", &[heads, 4 * dh, dh.max(1)])?;
        let weight_ih = Param::new("weight_ih", init::pytorch_default(&[h4, input], hidden, rng));
        let weight_hh = Param::new(
            "weight_hh",
            init::pytorch_default(&[heads, 4 * dh, dh], hidden, rng),
        );
        let mut bias: ArrayD<F> = init::pytorch_default(&[h4], hidden, rng);
        for u in 0..hidden {
            let s = if hidden > 1 {
                u as f64 / (hidden - 1) as f64
            } else {
                0.0
            };
            bias[hidden + u] = F::of(3.0 + 3.0 * s);
        }
        Ok(SlstmCell {
            weight_ih,
            weight_hh,
            bias: Param::new("bias", bias),
        })
    }

    /// The number of heads.
    pub fn heads(&self) -> usize {
        self.weight_hh.shape()[0]
    }

    /// The state size `H`.
    pub fn hidden_size(&self) -> usize {
        self.weight_ih.shape()[0] / 4
    }

    /// `R h` (`[B, 4H]`): each head's block times its slice of `h`, scattered to the gate rows.
    fn recurrent(&self, h: &Var<F>) -> Result<Var<F>> {
        let (batch, hidden, heads) = (h.shape()[0], self.hidden_size(), self.heads());
        let dh = hidden / heads;
        let per_head = h.reshape(&[batch, heads, dh])?.transpose(0, 1)?; // [heads, B, dh]
        let w = h.tape().param(&self.weight_hh); // [heads, 4·dh, dh]
        let r = matmul_t(&per_head, &w, false, true)?; // [heads, B, 4·dh]
                                                       // [heads, B, gate, dh] → [B, gate, heads, dh]: element (g, j, u) lands at g·H + j·dh + u.
        r.reshape(&[heads, batch, 4, dh])?
            .permute(&[1, 2, 0, 3])?
            .reshape(&[batch, 4 * hidden])
    }
}

impl<F: Float> Module<F> for SlstmCell<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        vec![
            ("weight_ih".to_string(), self.weight_ih.clone()),
            ("weight_hh".to_string(), self.weight_hh.clone()),
            ("bias".to_string(), self.bias.clone()),
        ]
    }
}

impl<F: Float> Cell<F> for SlstmCell<F> {
    type State = Vec<Var<F>>;

    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    fn state_sizes(&self) -> Vec<usize> {
        vec![self.hidden_size(); 4]
    }

    /// `W x + b` (`[T, B, 4H]`) for all time steps at once.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        let t = x.tape();
        x.linear(&t.param(&self.weight_ih), Some(&t.param(&self.bias)))
    }

    /// The whole sequence as one [`SlstmSequence`] op.
    fn unroll(
        &self,
        xp: &Var<F>,
        state: &Vec<Var<F>>,
        reverse: bool,
    ) -> Option<Result<(Var<F>, Vec<Var<F>>)>> {
        let run = || {
            let t = xp.tape();
            let op = SlstmSequence {
                reverse,
                keep_activations: t.is_recording(),
            };
            let w = t.param(&self.weight_hh);
            let mut inputs = vec![xp, &w];
            inputs.extend(state.iter());
            let out = t.apply_multi(op, &inputs)?;
            let finals = out[..4]
                .iter()
                .map(|s| super::last_step(s, reverse))
                .collect::<Result<Vec<_>>>()?;
            Ok((out[0].clone(), finals))
        };
        Some(run())
    }

    fn step(&self, xw: &Var<F>, state: &Vec<Var<F>>) -> Result<Vec<Var<F>>> {
        let [h, c, n, m]: [&Var<F>; 4] = [&state[0], &state[1], &state[2], &state[3]];
        let pre = (xw + self.recurrent(h)?)?;
        let [i, f, z, o]: [Var<F>; 4] = pre.chunk(4, 1)?.try_into().expect("four chunks");
        let log_f_m = (f.log_sigmoid()? + m)?; // log f + m
        let m_new = log_f_m.maximum(&i)?;
        let i_gate = (i - &m_new)?.exp()?;
        let f_gate = (log_f_m - &m_new)?.exp()?;
        let c_new = ((&f_gate * c)? + (&i_gate * z.tanh()?)?)?;
        let n_new = ((f_gate * n)? + i_gate)?;
        let h_new = (o.sigmoid()? * (&c_new / &n_new)?)?;
        Ok(vec![h_new, c_new, n_new, m_new])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::reference::{assert_within, mat, random, sigmoid, vec};
    use eddy_tape::Tape;
    use ndarray::{s, Array2, Array3};

    /// One step against the equations in plain f64, with the block-diagonal `R` built element
    /// by element from the index rule.
    #[test]
    fn a_step_matches_the_equations() -> Result<()> {
        let mut rng = Rng::seed(16);
        let (batch, input, hidden, heads) = (3, 2, 6, 3);
        let dh = hidden / heads;
        let cell = SlstmCell::<f64>::new(input, hidden, heads, &mut rng)?;
        let x = random(batch, input, &mut rng);
        let h = random(batch, hidden, &mut rng);
        let c = random(batch, hidden, &mut rng);
        let n = random(batch, hidden, &mut rng).mapv(|v| v.abs() + 0.5);
        let m = random(batch, hidden, &mut rng);

        let w_hh: Array3<f64> = cell
            .weight_hh
            .value()
            .as_ref()
            .clone()
            .into_dimensionality()
            .unwrap();
        let mut r = Array2::<f64>::zeros((4 * hidden, hidden));
        for j in 0..heads {
            for g in 0..4 {
                for u in 0..dh {
                    for v in 0..dh {
                        r[[g * hidden + j * dh + u, j * dh + v]] = w_hh[[j, g * dh + u, v]];
                    }
                }
            }
        }
        let pre = x.dot(&mat(&cell.weight_ih).t()) + h.dot(&r.t()) + vec(&cell.bias);
        let block = |g: usize| pre.slice(s![.., g * hidden..(g + 1) * hidden]).to_owned();
        let (i, f, z, o) = (block(0), block(1), block(2), block(3));
        let log_f = f.mapv(|v| sigmoid(v).ln());
        let m_new = ndarray::Zip::from(&log_f)
            .and(&m)
            .and(&i)
            .map_collect(|&lf, &m, &i| (lf + m).max(i));
        let i_gate = (&i - &m_new).mapv(f64::exp);
        let f_gate = (&log_f + &m - &m_new).mapv(f64::exp);
        let c_new = &f_gate * &c + &i_gate * &z.mapv(f64::tanh);
        let n_new = &f_gate * &n + &i_gate;
        let h_new = o.mapv(sigmoid) * &c_new / &n_new;

        let tape = Tape::new();
        let v = |a: &Array2<f64>| tape.constant(a.clone().into_dyn());
        let out = cell.step(&cell.project(&v(&x))?, &vec![v(&h), v(&c), v(&n), v(&m)])?;
        for (got, want) in out.iter().zip([&h_new, &c_new, &n_new, &m_new]) {
            assert_within(got.value(), want, 1e-12);
        }
        Ok(())
    }

    #[test]
    fn heads_must_divide_the_hidden_size() {
        let err = SlstmCell::<f64>::new(2, 6, 4, &mut Rng::seed(0)).unwrap_err();
        assert!(
            err.to_string().contains("slstm") && err.to_string().contains("4 heads"),
            "{err}"
        );
        assert!(SlstmCell::<f64>::new(2, 6, 0, &mut Rng::seed(0)).is_err());
    }

    #[test]
    fn the_forget_biases_start_between_3_and_6() -> Result<()> {
        let cell = SlstmCell::<f64>::new(2, 4, 2, &mut Rng::seed(0))?;
        let b = vec(&cell.bias);
        assert_eq!(b.slice(s![4..8]).to_vec(), [3.0, 4.0, 5.0, 6.0]);
        Ok(())
    }
}
