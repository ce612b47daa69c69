//! mLSTM, xLSTM's matrix-memory cell (Beck et al. 2024), in its recurrent form.

use crate::{init, Cell, Module};
use eddy_ops::{concat, matmul_t, rank_one_update, MlstmSequence, VarExt};
use eddy_tape::{Error, Float, Param, Result, Rng, Var};
use ndarray::ArrayD;

/// The mLSTM cell (Beck, Pöppel, Spanring et al., "xLSTM: Extended Long Short-Term Memory",
/// 2024): a matrix memory `C` per head, written with the outer product `v kᵀ` and read with a
/// query `q`, under exponential input and sigmoid forget gates with a stabiliser `m`. All gates
/// come from the input alone, so the recurrence is linear in `(C, n)`.
///
/// ```text
/// q, k, v = W_q x + b_q, (W_k x + b_k)/√d, W_v x + b_v      (split into heads of d = H/heads)
/// ĩ, f̃ = w_i·x + b_i, w_f·x + b_f                           (one scalar of each per head)
/// o = σ(W_o x + b_o)
/// m' = max(logsigmoid(f̃) + m, ĩ)
/// i' = exp(ĩ − m'),  f' = exp(logsigmoid(f̃) + m − m')
/// C' = f' C + i' v kᵀ
/// n' = f' n + i' k
/// h̃ = C' q / max(|n'ᵀ q|, exp(−m'))
/// h' = o ⊙ h̃                                                 (heads concatenated; no ε)
/// ```
///
/// The stabiliser's `max` is differentiated as is (the gradient goes to the larger argument).
///
/// Parameters: `weight_qkvo` `[4H, I]` (rows q, k, v, o) and `bias_qkvo` `[4H]`; `weight_if`
/// `[2·heads, I]` (the ĩ rows of heads `0..heads`, then the f̃ rows) and `bias_if` `[2·heads]`.
/// All `U(-1/√I, 1/√I)` (PyTorch's `nn.Linear`) except the forget biases, `linspace(3, 6)` over
/// the heads as in xLSTM, so that the cell starts out remembering. State `(h, C, n, m)`:
/// `h`, `n` `[B, H]`, `C` `[B, heads·d·d]` (head-major; each head's `C[a][b]` row-major with `a`
/// the `v` index and `b` the `k` index), `m` `[B, heads]`; zeros by default.
///
/// For a zero initial state, [`MlstmCell::parallel`] computes the same outputs with a causal,
/// quadratic-in-`T` form instead of the loop.
///
/// # Example
/// ```
/// use eddy_nn::{MlstmCell, RecurrentConfig};
/// use eddy_ops::prelude::*;
///
/// let mut rng = Rng::seed(0);
/// let layer = RecurrentConfig::new(3, 8)
///     .num_layers(2)
///     .try_build(|i, h, rng| MlstmCell::<f32>::new(i, h, 2, rng), &mut rng)?;
/// let tape = Tape::new();
/// let out = layer.forward(&tape.input(ndarray::ArrayD::zeros(vec![5, 2, 3])))?; // [T, B, I]
/// assert_eq!(out.output.shape(), &[5, 2, 8]);
/// let sizes: Vec<_> = out.states.iter().map(|s| s.shape()[2]).collect();
/// assert_eq!(sizes, [8, 2 * 4 * 4, 8, 2]); // h, C, n, m
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MlstmCell<F: Float = f32> {
    /// Query, key, value and output-gate weights `[4H, I]` (rows q, k, v, o).
    pub weight_qkvo: Param<F>,
    /// Their bias `[4H]`.
    pub bias_qkvo: Param<F>,
    /// Input- and forget-gate weights `[2·heads, I]`: the ĩ rows of every head, then the f̃ rows.
    pub weight_if: Param<F>,
    /// Their bias `[2·heads]` (forget biases `linspace(3, 6)`).
    pub bias_if: Param<F>,
}

/// The projected input of one step or a sequence, split: `q`, `k` (scaled), `v`, `o` (after
/// its sigmoid), `ĩ`, `log f`.
struct Projected<F: Float> {
    q: Var<F>,
    k: Var<F>,
    v: Var<F>,
    o: Var<F>,
    i: Var<F>,
    log_f: Var<F>,
}

impl<F: Float> MlstmCell<F> {
    /// A cell from `input` to `hidden` features in `heads` heads.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `heads` is 0 or does not divide `hidden`.
    pub fn new(input: usize, hidden: usize, heads: usize, rng: &mut Rng) -> Result<Self> {
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(Error::invalid(
                "mlstm",
                format!("{heads} heads do not divide the hidden size {hidden}"),
            ));
        }
        // Checked sizes: a huge hidden size or head count is an error, not a wrapped shape.
        let (Some(h4), Some(heads2)) = (hidden.checked_mul(4), heads.checked_mul(2)) else {
            return Err(Error::shape(
                "mlstm",
                &[&[input, hidden, heads]],
                "4 × hidden or 2 × heads overflows usize (sizes input, hidden, heads)",
            ));
        };
        init::check_size::<F>("mlstm weight_qkvo", &[h4, input])?;
        init::check_size::<F>("mlstm weight_if", &[heads2, input.max(1)])?;
        let p = |name: &str, shape: &[usize], rng: &mut Rng| {
            Param::new(name, init::pytorch_default(shape, input, rng))
        };
        let weight_qkvo = p("weight_qkvo", &[h4, input], rng);
        let bias_qkvo = p("bias_qkvo", &[h4], rng);
        let weight_if = p("weight_if", &[heads2, input], rng);
        let mut bias_if: ArrayD<F> = init::pytorch_default(&[heads2], input, rng);
        for j in 0..heads {
            let s = if heads > 1 {
                j as f64 / (heads - 1) as f64
            } else {
                0.0
            };
            bias_if[heads + j] = F::of(3.0 + 3.0 * s);
        }
        Ok(MlstmCell {
            weight_qkvo,
            bias_qkvo,
            weight_if,
            bias_if: Param::new("bias_if", bias_if),
        })
    }

    /// The number of heads.
    pub fn heads(&self) -> usize {
        self.weight_if.shape()[0] / 2
    }

    /// The state size `H`.
    pub fn hidden_size(&self) -> usize {
        self.weight_qkvo.shape()[0] / 4
    }

    /// The head size `d = H / heads`.
    pub fn head_size(&self) -> usize {
        self.hidden_size() / self.heads()
    }

    /// Splits a projection (`[..., 4H + 2·heads]`, from [`Cell::project`]) into its parts.
    fn split(&self, xp: &Var<F>) -> Result<Projected<F>> {
        let (h, heads) = (self.hidden_size(), self.heads());
        let [q, k, v, o, i, log_f]: [Var<F>; 6] = xp
            .split(&[h, h, h, h, heads, heads], -1)?
            .try_into()
            .expect("six parts");
        Ok(Projected { q, k, v, o, i, log_f })
    }

    /// The outputs `h` (`[T, B, H]`) of the sequence `x` (`[T, B, I]`) from the zero state, by
    /// the parallel form: for each head, with `F_t = Σ_{u≤t} log f_u`,
    ///
    /// ```text
    /// D̃_ts = F_t − F_s + ĩ_s  (s ≤ t; −∞ otherwise),   m_t = max_s D̃_ts
    /// C̃_ts = (q_t · k_s) exp(D̃_ts − m_t)
    /// h̃_t = Σ_s C̃_ts v_s / max(|Σ_s C̃_ts|, exp(−m_t)),   h_t = o_t ⊙ h̃_t
    /// ```
    ///
    /// Its stabiliser `m_t` differs from the recurrent form's, which cancels in `h̃` (both
    /// scale numerator and denominator alike) but not in the state: the parallel form gives no
    /// final state. Quadratic in `T` in time and memory. `reverse` runs the sequence backwards
    /// (as the reverse direction of a bidirectional layer).
    ///
    /// # Errors
    /// A shape error if `x` is not `[T, B, I]`.
    pub fn parallel(&self, x: &Var<F>, reverse: bool) -> Result<Var<F>> {
        if x.ndim() != 3 || x.shape()[2] != self.input_size() {
            return Err(Error::shape(
                "mlstm parallel",
                &[x.shape()],
                format!("expected [T, B, I] with I = {}", self.input_size()),
            ));
        }
        let (steps, batch) = (x.shape()[0], x.shape()[1]);
        let (heads, d) = (self.heads(), self.head_size());
        let tape = x.tape();
        let p = self.split(&self.project(x)?)?;
        // [T, B, heads·d] → [B·heads, T, d]; [T, B, heads] → [B·heads, T]
        let per_head =
            |v: &Var<F>| -> Result<Var<F>> { v.reshape(&[steps, batch * heads, d])?.transpose(0, 1) };
        let per_head_scalar =
            |v: &Var<F>| -> Result<Var<F>> { v.reshape(&[steps, batch * heads])?.transpose(0, 1) };
        let (q, k, v) = (per_head(&p.q)?, per_head(&p.k)?, per_head(&p.v)?);
        let (ig, log_f) = (per_head_scalar(&p.i)?, per_head_scalar(&p.log_f)?);
        // Causal in the direction of travel: s "before" t is s ≤ t forwards, s ≥ t reversed.
        let before = |t: usize, s: usize| if reverse { s >= t } else { s <= t };
        // F = cumulative sum of log f along the direction of travel: log_f · Lᵀ, L[t][s] = [s before t].
        let l = ArrayD::from_shape_fn(vec![steps, steps], |ix| {
            if before(ix[0], ix[1]) {
                F::one()
            } else {
                F::zero()
            }
        });
        let cum = log_f.matmul_t(&tape.constant(l))?; // [BH, T]
                                                      // D̃[t][s] = F_t − F_s + ĩ_s for s before t.
        let d_tilde = ((cum.unsqueeze(2)? - cum.unsqueeze(1)?)? + ig.unsqueeze(1)?)?; // [BH, T, T]
        let causal = ArrayD::from_shape_fn(vec![1, steps, steps], |ix| before(ix[1], ix[2]));
        let far = tape.constant(ArrayD::from_elem(vec![1, 1, 1], F::of(-1e30)));
        let d_tilde = eddy_ops::where_(&causal, &d_tilde, &far)?;
        let m = d_tilde.max(2, true)?; // [BH, T, 1]
        let decay = (d_tilde - &m)?.exp()?;
        let scores = (matmul_t(&q, &k, false, true)? * decay)?; // [BH, T, T]
        let norm = scores.sum(2, true)?.abs()?.maximum(&m.neg()?.exp()?)?; // [BH, T, 1]
        let h_tilde = (scores / norm)?.matmul(&v)?; // [BH, T, d]
        let h_tilde = h_tilde.transpose(0, 1)?.reshape(&[steps, batch, heads * d])?;
        p.o * h_tilde
    }
}

impl<F: Float> Module<F> for MlstmCell<F> {
    fn params(&self) -> Vec<(String, Param<F>)> {
        [&self.weight_qkvo, &self.bias_qkvo, &self.weight_if, &self.bias_if]
            .into_iter()
            .map(|p| (p.name().to_string(), p.clone()))
            .collect()
    }
}

impl<F: Float> Cell<F> for MlstmCell<F> {
    type State = Vec<Var<F>>;

    fn input_size(&self) -> usize {
        self.weight_qkvo.shape()[1]
    }

    fn state_sizes(&self) -> Vec<usize> {
        let (h, heads, d) = (self.hidden_size(), self.heads(), self.head_size());
        vec![h, heads * d * d, h, heads]
    }

    /// `[q, k/√d, v, σ(o), ĩ, logsigmoid(f̃)]` (`[T, B, 4H + 2·heads]`) for all time steps: two
    /// GEMMs and pointwise ops.
    fn project(&self, x: &Var<F>) -> Result<Var<F>> {
        let t = x.tape();
        let qkvo = x.linear(&t.param(&self.weight_qkvo), Some(&t.param(&self.bias_qkvo)))?;
        let gates = x.linear(&t.param(&self.weight_if), Some(&t.param(&self.bias_if)))?;
        let [q, k, v, o]: [Var<F>; 4] = qkvo.chunk(4, -1)?.try_into().expect("four chunks");
        let [i, f]: [Var<F>; 2] = gates.chunk(2, -1)?.try_into().expect("two chunks");
        let k = k.scale(F::one() / F::of(self.head_size() as f64).sqrt())?;
        concat(&[&q, &k, &v, &o.sigmoid()?, &i, &f.log_sigmoid()?], -1)
    }

    /// The whole sequence as one [`MlstmSequence`] op: each head's memory stays in cache across
    /// the steps, and the tape keeps one memory per head every [`eddy_ops::MLSTM_CHUNK`] steps
    /// instead of every step's.
    fn unroll(
        &self,
        xp: &Var<F>,
        state: &Vec<Var<F>>,
        reverse: bool,
    ) -> Option<Result<(Var<F>, Vec<Var<F>>)>> {
        let run = || {
            let [_, c, n, m] = state.as_slice() else {
                return Err(Error::invalid(
                    "mlstm",
                    format!("expected 4 state parts (h, C, n, m), got {}", state.len()),
                ));
            };
            let tape = xp.tape();
            let op = MlstmSequence {
                reverse,
                keep_checkpoints: tape.is_recording(),
            };
            let out = tape.apply_multi(op, &[xp, c, n, m])?;
            let last = if reverse { 0 } else { xp.shape()[0] - 1 };
            let h = out[0].select(0, last)?;
            Ok((
                out[0].clone(),
                vec![h, out[1].clone(), out[2].clone(), out[3].clone()],
            ))
        };
        Some(run())
    }

    fn step(&self, xp: &Var<F>, state: &Vec<Var<F>>) -> Result<Vec<Var<F>>> {
        let (batch, heads, d) = (xp.shape()[0], self.heads(), self.head_size());
        let hidden = heads * d;
        let p = self.split(xp)?;
        let [c, n, m]: [&Var<F>; 3] = [&state[1], &state[2], &state[3]];
        // The stabiliser and the gates, one scalar per head: [B, heads].
        let log_f_m = (&p.log_f + m)?;
        let m_new = log_f_m.maximum(&p.i)?;
        let i_gate = (&p.i - &m_new)?.exp()?;
        let f_gate = (log_f_m - &m_new)?.exp()?;
        // C' = f' C + i' v kᵀ, per head, as one op: [B·heads, d (v), d (k)].
        let (q, k, v) = (
            p.q.reshape(&[batch, heads, d])?,
            p.k.reshape(&[batch, heads, d])?,
            p.v.reshape(&[batch, heads, d])?,
        );
        let bh = batch * heads;
        let c_new = rank_one_update(
            &c.reshape(&[bh, d, d])?,
            &f_gate.reshape(&[bh])?,
            &i_gate.reshape(&[bh])?,
            &v.reshape(&[bh, d])?,
            &k.reshape(&[bh, d])?,
        )?;
        // n' = f' n + i' k: [B, heads, d].
        let (i3, f3) = (
            i_gate.reshape(&[batch, heads, 1])?,
            f_gate.reshape(&[batch, heads, 1])?,
        );
        let n_new = ((&f3 * n.reshape(&[batch, heads, d])?)? + (&i3 * &k)?)?;
        // h̃ = C' q / max(|n'ᵀ q|, exp(−m')).
        let cq = c_new
            .matmul(&q.reshape(&[bh, d, 1])?)?
            .reshape(&[batch, heads, d])?;
        let nq = (&n_new * &q)?.sum(2, false)?; // [B, heads]
        let norm = nq.abs()?.maximum(&m_new.neg()?.exp()?)?;
        let h_tilde = (cq / norm.unsqueeze(2)?)?.reshape(&[batch, hidden])?;
        let h_new = (p.o * h_tilde)?;
        Ok(vec![
            h_new,
            c_new.reshape(&[batch, heads * d * d])?,
            n_new.reshape(&[batch, hidden])?,
            m_new,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::reference::{assert_within, mat, random, sigmoid, vec};
    use eddy_tape::Tape;
    use ndarray::{s, Array1, Array2};

    /// One step against the equations in plain f64, head by head and element by element.
    #[test]
    fn a_step_matches_the_equations() -> Result<()> {
        let mut rng = Rng::seed(17);
        let (batch, input, hidden, heads) = (2, 3, 4, 2);
        let d = hidden / heads;
        let cell = MlstmCell::<f64>::new(input, hidden, heads, &mut rng)?;
        let x = random(batch, input, &mut rng);
        let h = random(batch, hidden, &mut rng);
        let c = random(batch, heads * d * d, &mut rng);
        let n = random(batch, hidden, &mut rng);
        let m = random(batch, heads, &mut rng);

        let qkvo = x.dot(&mat(&cell.weight_qkvo).t()) + vec(&cell.bias_qkvo);
        let gates = x.dot(&mat(&cell.weight_if).t()) + vec(&cell.bias_if);
        let mut want_h = Array2::zeros((batch, hidden));
        let mut want_c = Array2::zeros((batch, heads * d * d));
        let mut want_n = Array2::zeros((batch, hidden));
        let mut want_m = Array2::zeros((batch, heads));
        for b in 0..batch {
            for j in 0..heads {
                let part = |g: usize| -> Array1<f64> {
                    qkvo.slice(s![b, g * hidden + j * d..g * hidden + (j + 1) * d])
                        .to_owned()
                };
                let (q, k, v) = (part(0), part(1) / (d as f64).sqrt(), part(2));
                let o = part(3).mapv(sigmoid);
                let (i, log_f) = (gates[[b, j]], sigmoid(gates[[b, heads + j]]).ln());
                let m_new = (log_f + m[[b, j]]).max(i);
                let (ig, fg) = ((i - m_new).exp(), (log_f + m[[b, j]] - m_new).exp());
                let mut nq = 0.0;
                for a in 0..d {
                    let n_new = fg * n[[b, j * d + a]] + ig * k[a];
                    want_n[[b, j * d + a]] = n_new;
                    nq += n_new * q[a];
                    for e in 0..d {
                        let at = j * d * d + a * d + e;
                        want_c[[b, at]] = fg * c[[b, at]] + ig * v[a] * k[e];
                    }
                }
                let norm = nq.abs().max((-m_new).exp());
                for a in 0..d {
                    let cq: f64 = (0..d).map(|e| want_c[[b, j * d * d + a * d + e]] * q[e]).sum();
                    want_h[[b, j * d + a]] = o[a] * cq / norm;
                }
                want_m[[b, j]] = m_new;
            }
        }
        let tape = Tape::new();
        let var = |a: &Array2<f64>| tape.constant(a.clone().into_dyn());
        let out = cell.step(
            &cell.project(&var(&x))?,
            &vec![var(&h), var(&c), var(&n), var(&m)],
        )?;
        for (got, want) in out.iter().zip([&want_h, &want_c, &want_n, &want_m]) {
            assert_within(got.value(), want, 1e-12);
        }
        Ok(())
    }

    /// The parallel form equals the recurrent one in `h`, forwards and reversed, to 1e-10.
    #[test]
    fn the_parallel_form_equals_the_recurrent_form() -> Result<()> {
        let mut rng = Rng::seed(18);
        let (steps, batch, input, hidden, heads) = (9, 3, 4, 6, 3);
        let cell = MlstmCell::<f64>::new(input, hidden, heads, &mut rng)?;
        let x = ArrayD::from_shape_simple_fn(vec![steps, batch, input], || rng.uniform_in(-2.0, 2.0));
        for reverse in [false, true] {
            let tape = Tape::new();
            let xv = tape.constant(x.clone());
            let parallel = cell.parallel(&xv, reverse)?;
            let xp = cell.project(&xv)?.unstack(0)?;
            let mut state = cell.zero_state(&tape, batch)?;
            let mut hs = vec![None; steps];
            let order: Vec<usize> = if reverse {
                (0..steps).rev().collect()
            } else {
                (0..steps).collect()
            };
            for t in order {
                state = cell.step(&xp[t], &state)?;
                hs[t] = Some(state[0].value().clone());
            }
            for (t, h) in hs.into_iter().enumerate() {
                let h = h.expect("every step ran");
                let got = parallel.value().index_axis(ndarray::Axis(0), t);
                let err = (&got - &h).iter().fold(0.0f64, |e, v| e.max(v.abs()));
                assert!(err < 1e-10, "step {t} reverse {reverse}: {err}");
            }
        }
        Ok(())
    }

    #[test]
    fn heads_must_divide_the_hidden_size_and_the_parallel_form_checks_its_input() {
        let err = MlstmCell::<f64>::new(2, 6, 4, &mut Rng::seed(0)).unwrap_err();
        assert!(
            err.to_string().contains("mlstm") && err.to_string().contains("4 heads"),
            "{err}"
        );
        let cell = MlstmCell::<f64>::new(2, 4, 2, &mut Rng::seed(0)).unwrap();
        let tape = Tape::new();
        let err = cell
            .parallel(&tape.constant(ArrayD::zeros(vec![3, 2, 5])), false)
            .unwrap_err();
        assert!(err.to_string().contains("mlstm parallel"), "{err}");
    }
}
