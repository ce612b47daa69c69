//! The sLSTM recurrence (xLSTM's scalar-memory cell) over a whole sequence.

use super::*;
use crate::kernels::fresh::{written_all, written_by};
use crate::kernels::gates::{slstm_row_backward, slstm_row_forward, SLSTM_SAVED};
use crate::{matmul_t, where_, VarExt};
use eddy_tape::{MultiOp, Var};
use ndarray::{Array3, ArrayView2, ArrayViewMut3, Axis};

/// sLSTM (Beck et al. 2024, "xLSTM") over a whole sequence after the input projection: from
/// `xp` `[T, B, 4H]` (`W xₜ + b` for every step), the block-diagonal recurrent weight
/// `weight_hh` `[heads, 4·dh, dh]` (`H = heads · dh`) and the initial `h0`, `c0`, `n0`, `m0`
/// `[B, H]`, every step of
///
/// ```text
/// [ĩ, f̃, z̃, õ] = xpₜ + R hₜ₋₁                    (gate blocks of size H in this order)
/// a = logsigmoid(f̃) + mₜ₋₁,   mₜ = max(a, ĩ)
/// i' = exp(ĩ − mₜ),   f' = exp(a − mₜ)
/// cₜ = f' ⊙ cₜ₋₁ + i' ⊙ tanh(z̃),   nₜ = f' ⊙ nₜ₋₁ + i',   hₜ = σ(õ) ⊙ cₜ / nₜ
/// ```
///
/// in time order (or from the last step to the first when `reverse`). `R` is block-diagonal:
/// head `j` reads `h[j·dh .. (j+1)·dh]`, and row `g·dh + u` of `weight_hh[j]` adds to
/// pre-activation `g·H + j·dh + u`. The recursion has no special first step and no ε; the
/// stabiliser's `max` is differentiated as is, exactly as the [`Maximum`](crate::reduce::Maximum)
/// op (the gradient to `a` where `a ≥ ĩ` or `a` is NaN, else to `ĩ`). Inputs in that order:
/// `[xp, weight_hh, h0, c0, n0, m0]`.
///
/// Outputs: every `hₜ`, `cₜ`, `nₜ`, `mₜ` (`[T, B, H]` each, indexed by time step in both
/// directions), and what the fast backward reads, `[±e, tanh z̃, σ(õ), σ(−f̃)]` per step
/// (`[T, B, 4H]`; `i'` and `f'` as one value whose sign says which argument the `max` took:
/// see [`slstm_row_forward`]); when `keep_activations` is false (inference on a
/// tape that records nothing) that output is empty (`[0]`). No gradient flows into it.
///
/// Per step the forward gathers each head's slice of `hₜ₋₁` into a contiguous `[B, dh]` block
/// and multiplies it by that head's weight, laid out once per sequence; a fused row kernel
/// does the gate math. The fast backward is one reverse loop over raw arrays, with
/// `dhₜ₋₁ = Σ_heads dgatesₜ·R` per head, and `dW_hh` per head as one GEMM over the whole
/// sequence at the end. Under `create_graph` the forward is recomputed step by step with
/// differentiable ops and the reverse pass is written with them, so higher orders work.
///
/// # Errors
/// [`Error::Shape`] when the shapes do not fit together, `heads` is 0 or `T` is 0.
pub struct SlstmSequence {
    /// Run from the last step to the first.
    pub reverse: bool,
    /// Output the saved activations for the fast backward (false on a tape that records nothing).
    pub keep_activations: bool,
}

const NAME: &str = "slstm_sequence";

/// `(T, B, heads, dh)` after checking the inputs' shapes.
fn check(inputs: &[&[usize]]) -> Result<(usize, usize, usize, usize)> {
    crate::arity(NAME, inputs, 6)?;
    let (xp, w) = (inputs[0], inputs[1]);
    let expected = "expected xp [T, B, 4H], weight_hh [heads, 4·dh, dh] with H = heads·dh, \
                    h0, c0, n0, m0 [B, H] each, T > 0";
    if xp.len() != 3 || w.len() != 3 {
        return Err(Error::shape(NAME, inputs, expected));
    }
    let (steps, batch, heads, dh) = (xp[0], xp[1], w[0], w[2]);
    // Checked: huge sizes must not wrap round to sizes that match.
    let sizes = heads
        .checked_mul(dh)
        .and_then(|h| Some((h, h.checked_mul(SLSTM_SAVED)?, dh.checked_mul(4)?)));
    let Some((h, _, dh4)) = sizes else {
        return Err(Error::shape(NAME, inputs, "heads · 6·dh overflows usize"));
    };
    let mut ok = steps > 0 && heads > 0 && w[1] == dh4 && xp[2] == 4 * h;
    ok &= inputs[2..].iter().all(|s| *s == [batch, h]);
    if !ok {
        return Err(Error::shape(NAME, inputs, expected));
    }
    Ok((steps, batch, heads, dh))
}

/// Each head's `[4·dh, dh]` block of `weight_hh`, as its own matrix.
fn blocks<F: Float>(w: &ArrayD<F>) -> Vec<ArrayD<F>> {
    w.axis_iter(Axis(0)).map(|b| b.to_owned()).collect()
}

/// Columns `start .. start + len` of `src` (row-major, rows of `width`) into `dst` (rows of
/// `len`). A `[B, 4H]` array read as `[4B, H]` gives head `j`'s `[B, 4·dh]` block of the gates
/// this way (`start = j·dh`, `len = dh`).
fn gather<F: Float>(src: &[F], width: usize, start: usize, len: usize, dst: &mut [F]) {
    for (d, s) in dst.chunks_exact_mut(len).zip(src.chunks_exact(width)) {
        d.copy_from_slice(&s[start..start + len]);
    }
}

/// The inverse of [`gather`]: `dst`'s columns `start .. start + len` `+= src` (`add`) or `= src`.
fn scatter<F: Float>(src: &[F], width: usize, start: usize, len: usize, dst: &mut [F], add: bool) {
    for (s, d) in src.chunks_exact(len).zip(dst.chunks_exact_mut(width)) {
        match add {
            true => add_row(&mut d[start..start + len], s),
            false => d[start..start + len].copy_from_slice(s),
        }
    }
}

/// Row `row` of the saved activations (rows of `SLSTM_SAVED · h`).
fn saved_row<F>(saved: &[F], row: usize, h: usize) -> &[F] {
    &saved[row * SLSTM_SAVED * h..(row + 1) * SLSTM_SAVED * h]
}

/// What the fast backward reads that the forward keeps only when asked.
const NEEDS: Needs = Needs {
    what: "the activations",
    option: "keep_activations",
};

impl<F: Float> MultiOp<F> for SlstmSequence {
    fn name(&self) -> &str {
        NAME
    }

    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
        let (steps, batch, heads, dh) = check(inputs)?;
        let h = heads * dh;
        let saved = match self.keep_activations {
            true => vec![steps, batch, SLSTM_SAVED * h],
            false => vec![0],
        };
        let all = vec![steps, batch, h];
        Ok(vec![all.clone(), all.clone(), all.clone(), all, saved])
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
        let (steps, batch, heads, dh) = check(&shapes)?;
        let (h, reverse) = (heads * dh, self.reverse);
        let (bh, gw) = (batch * h, 4 * h);
        let xp = flat(inputs[0]);
        let first: Vec<_> = inputs[2..6].iter().map(|a| flat(a)).collect();
        let blocks = blocks(inputs[1]);
        let weights: Vec<Recurrent<F>> = blocks.iter().map(|w| Recurrent::forward(w, batch)).collect();
        let keep = self.keep_activations;
        let row_saved = SLSTM_SAVED * h;
        // Without `keep`, one row's scratch (written, then read, by each row in turn).
        let mut scratch = vec![F::zero(); if keep { 0 } else { row_saved }];
        let kept = if keep { steps * batch * row_saved } else { 0 };
        let mut gates = vec![F::zero(); batch * gw];
        let (mut h_head, mut g_head) = (vec![F::zero(); batch * dh], vec![F::zero(); batch * 4 * dh]);
        let write = |[hs, cs, ns, ms, saved]: [&mut [F]; 5]| {
            for i in 0..steps {
                let t = step_at(i, steps, reverse);
                // gates = xpₜ + R hₜ₋₁: xpₜ copied whole (one streaming pass over the cold
                // projection; adding it column block by column block in the heads' scatter read
                // it strided: 4.6% of a W9 profile in that add), then each head's product added.
                gates.copy_from_slice(&xp[t * batch * gw..(t + 1) * batch * gw]);
                let h_prev = state_before(hs, &first[0], t, steps, reverse, bh);
                for (j, w) in weights.iter().enumerate().filter(|_| dh > 0 && batch > 0) {
                    gather(h_prev, h, j * dh, dh, &mut h_head);
                    w.mul_into(&h_head, &mut g_head, false);
                    scatter(&g_head, h, j * dh, dh, &mut gates, true);
                }
                let (c_t, c_prev) = block_and_state(cs, &first[1], t, steps, reverse, bh);
                let (n_t, n_prev) = block_and_state(ns, &first[2], t, steps, reverse, bh);
                let (m_t, m_prev) = block_and_state(ms, &first[3], t, steps, reverse, bh);
                let h_t = &mut hs[t * bh..(t + 1) * bh];
                for r in 0..batch {
                    let g = &gates[r * gw..(r + 1) * gw];
                    let s = match keep {
                        true => &mut saved[(t * batch + r) * row_saved..(t * batch + r + 1) * row_saved],
                        false => &mut scratch[..],
                    };
                    let rows = r * h..(r + 1) * h;
                    slstm_row_forward(
                        [&g[..h], &g[h..2 * h], &g[2 * h..3 * h], &g[3 * h..]],
                        [
                            &c_prev[rows.clone()],
                            &n_prev[rows.clone()],
                            &m_prev[rows.clone()],
                        ],
                        s,
                        [
                            &mut h_t[rows.clone()],
                            &mut c_t[rows.clone()],
                            &mut n_t[rows.clone()],
                            &mut m_t[rows],
                        ],
                    );
                }
            }
        };
        // SAFETY: step `t` writes block `t` of `h`, `c`, `n`, `m` (every row `r < B`, each `H`
        // long, by `slstm_row_forward`) and, with `keep`, row `(t, r)` of `saved` (all
        // `SLSTM_SAVED·H` of it), so the steps `0..T` write every element; the only reads of
        // these buffers are of the state block of the step before (`prev_of(t)`), written
        // already, and of `saved`'s row after the kernel wrote it.
        let lens = [steps * bh, steps * bh, steps * bh, steps * bh, kept];
        let [hs, cs, ns, ms, saved] = unsafe { written_all(lens, write) };
        let mut result: Vec<ArrayD<F>> = [hs, cs, ns, ms]
            .into_iter()
            .map(|o| shaped(o, &[steps, batch, h]))
            .collect();
        result.push(match keep {
            true => shaped(saved, &[steps, batch, row_saved]),
            false => shaped(Vec::new(), &[0]),
        });
        Ok(result)
    }

    fn backward(
        &self,
        inputs: &[Var<F>],
        outputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let recorded = || self.recorded_backward(inputs, grads);
        if let Some(g) = recorded_or_kept(self, inputs, NEEDS, self.keep_activations, recorded)? {
            return Ok(g);
        }
        let tape = inputs[0].tape();
        let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
        let (steps, batch, heads, dh) = check(&shapes)?;
        let (h, reverse) = (heads * dh, self.reverse);
        let (bh, gw, hw) = (batch * h, 4 * h, 4 * dh);
        let blocks = blocks(inputs[1].value());
        let weights: Vec<Recurrent<F>> = blocks.iter().map(|w| Recurrent::backward(w, batch)).collect();
        let first: Vec<_> = inputs[2..6].iter().map(|a| flat(a.value())).collect();
        let all: Vec<_> = outputs[..4].iter().map(|o| flat(o.value())).collect();
        let saved = flat(outputs[4].value());
        let incoming_grads: Vec<Option<_>> = grads[..4]
            .iter()
            .map(|g| g.as_ref().map(|g| flat(g.value())))
            .collect();
        // Each head's gate gradients of the last few steps, `[B, 4·dh]` a step: its part of
        // `dhₜ₋₁` at each step, and its weight gradient once per chunk of steps.
        let need = |k: usize| inputs[k].requires_grad();
        let mut dw = need(1).then(|| HeadWeightGrads::new(steps, batch, heads, dh, reverse));
        let chunk = dw.as_ref().map_or(1, |w| w.chunk);
        let mut dg_heads: Vec<Vec<F>> = (0..heads).map(|_| vec![F::zero(); chunk * batch * hw]).collect();
        let mut carry: Vec<Vec<F>> = (0..4).map(|_| vec![F::zero(); bh]).collect();
        let mut d: Vec<Vec<F>> = (0..4).map(|_| vec![F::zero(); bh]).collect();
        let mut dh_head = vec![F::zero(); batch * dh];
        let write = |dg: &mut [F]| {
            for i in (0..steps).rev() {
                let t = step_at(i, steps, reverse);
                let block = t * bh..(t + 1) * bh;
                // dₖ = the output's gradient + the carried one. Without the former, the carried
                // buffer becomes dₖ as it is (a swap, not a copy): this step writes every element
                // of each `carry[k]` before the next reads it (`c`, `n`, `m` by the row kernel
                // over all rows, `h` by the heads' scatter over all columns).
                for k in 0..4 {
                    match incoming_grads[k].as_ref() {
                        Some(g) => sum_into(&mut d[k], &g[block.clone()], &carry[k]),
                        None => std::mem::swap(&mut d[k], &mut carry[k]),
                    }
                }
                let c_prev = state_before(&all[1], &first[1], t, steps, reverse, bh);
                let n_prev = state_before(&all[2], &first[2], t, steps, reverse, bh);
                let dg_t = &mut dg[t * batch * gw..(t + 1) * batch * gw];
                let [_, dc_carry, dn_carry, dm_carry] = &mut carry[..] else {
                    unreachable!("four state parts")
                };
                for r in 0..batch {
                    let rows = r * h..(r + 1) * h;
                    let dgr = &mut dg_t[r * gw..(r + 1) * gw];
                    let (di, rest) = dgr.split_at_mut(h);
                    let (df, rest) = rest.split_at_mut(h);
                    let (dz, d_o) = rest.split_at_mut(h);
                    slstm_row_backward(
                        saved_row(&saved, t * batch + r, h),
                        [&c_prev[rows.clone()], &n_prev[rows.clone()]],
                        [
                            &all[1][block.clone()][rows.clone()],
                            &all[2][block.clone()][rows.clone()],
                        ],
                        [
                            &d[0][rows.clone()],
                            &d[1][rows.clone()],
                            &d[2][rows.clone()],
                            &d[3][rows.clone()],
                        ],
                        [di, df, dz, d_o],
                        [
                            &mut dc_carry[rows.clone()],
                            &mut dn_carry[rows.clone()],
                            &mut dm_carry[rows],
                        ],
                    );
                }
                // dhₜ₋₁ = dgatesₜ·R, head by head.
                let slot = dw.as_ref().map_or(0, |w| w.slot(i)) * batch * hw;
                for (j, w) in weights.iter().enumerate().filter(|_| dh > 0 && batch > 0) {
                    let dg_head = &mut dg_heads[j][slot..slot + batch * hw];
                    gather(dg_t, h, j * dh, dh, dg_head);
                    w.back(dg_head, &mut dh_head);
                    scatter(&dh_head, h, j * dh, dh, &mut carry[0], false);
                }
                if let Some(dw) = dw.as_mut() {
                    dw.add_chunk(i, &dg_heads, (&all[0], &first[0]));
                }
            }
        };
        // SAFETY: step `t` writes block `t` of `dg` (rows `r < B`, each `4H` long: `dĩ`, `df̃`,
        // `dz̃`, `dõ` by `slstm_row_backward`), so the steps `0..T` write it whole, and read it
        // (the heads' `dhₜ₋₁`) only after.
        let dg = unsafe { written_by(steps * batch * gw, write) };
        let dw = dw.map(|w| tape.constant(w.into_array().into_dyn()));
        let mut out = vec![
            need(0).then(|| tape.constant(shaped(dg, &[steps, batch, gw]))),
            dw,
        ];
        for (k, s) in carry.into_iter().enumerate() {
            out.push(need(2 + k).then(|| tape.constant(shaped(s, &[batch, h]))));
        }
        Ok(out)
    }
}

/// The gradient of the block-diagonal weight (`[heads, 4·dh, dh]`), summed during the reverse
/// pass: `dW[j] = Σₜ dGₜ⁽ʲ⁾ᵀ · hₜ₋₁[:, j·dh ..]` with `dGₜ⁽ʲ⁾` (`[B, 4·dh]`) head `j`'s gate
/// gradients of step `t` as the pass gathers them for `dhₜ₋₁`. They are kept for a chunk of
/// steps (about [`HeadWeightGrads::ROWS`] rows), and each chunk adds one product per head, whose
/// `hₜ₋₁` rows are consecutive in the outputs: four products of `4·dh` rows per chunk instead
/// of one per head and gate over the whole sequence (W9's `dW_hh`: 79 against 53 GFLOP/s).
/// The step that read `h0` adds its own product, skipped when `h0` is zero.
struct HeadWeightGrads<F> {
    /// `[heads, 4·dh, dh]`, row-major.
    dw: Vec<F>,
    /// Steps per chunk.
    chunk: usize,
    steps: usize,
    batch: usize,
    heads: usize,
    dh: usize,
    reverse: bool,
}

impl<F: Float> HeadWeightGrads<F> {
    /// Rows of each operand per product, at the most (~512 KiB of gate gradients per head at
    /// `dh` = 64; 8–32 steps gave the same rate).
    const ROWS: usize = 512;

    fn new(steps: usize, batch: usize, heads: usize, dh: usize, reverse: bool) -> Self {
        HeadWeightGrads {
            dw: vec![F::zero(); heads * 4 * dh * dh],
            chunk: (Self::ROWS / batch.max(1)).clamp(1, steps.max(1)),
            steps,
            batch,
            heads,
            dh,
            reverse,
        }
    }

    /// The processing indices (`i` of [`step_at`]) of the chunk that holds `i ≥ 1`; index 0,
    /// the step that read `h0`, is a chunk of its own.
    fn chunk_of(&self, i: usize) -> std::ops::Range<usize> {
        if i == 0 {
            return 0..1;
        }
        let lo = 1 + (i - 1) / self.chunk * self.chunk;
        lo..(lo + self.chunk).min(self.steps)
    }

    /// The first time step of the chunk of index `i`, and its length.
    fn times(&self, i: usize) -> (usize, usize) {
        let r = self.chunk_of(i);
        let (a, b) = (
            step_at(r.start, self.steps, self.reverse),
            step_at(r.end - 1, self.steps, self.reverse),
        );
        (a.min(b), r.len())
    }

    /// Where step `i`'s gate gradients go in each head's buffer, in steps: by time within its
    /// chunk, so that they pair with `hₜ₋₁` rows in the order the outputs hold them.
    fn slot(&self, i: usize) -> usize {
        step_at(i, self.steps, self.reverse) - self.times(i).0
    }

    /// After step `i`: when it completes its chunk (the reverse pass reaches a chunk's first
    /// index last), adds the chunk's product per head. `hs` are the outputs `[T, B, H]`, `h0`
    /// the initial state.
    fn add_chunk(&mut self, i: usize, dg_heads: &[Vec<F>], (hs, h0): (&[F], &[F])) {
        let (batch, heads, dh) = (self.batch, self.heads, self.dh);
        let (h, hw) = (heads * dh, 4 * dh);
        if self.chunk_of(i).start != i || batch == 0 || dh == 0 {
            return;
        }
        let (t0, len) = self.times(i);
        let (rows, prev): (usize, &[F]) = match i {
            0 if h0.iter().all(|v| *v == F::zero()) => return,
            0 => (batch, h0),
            // The previous state of time t is the output of time t − 1 (t + 1 reversed).
            _ => {
                let p0 = if self.reverse { t0 + 1 } else { t0 - 1 };
                (len * batch, &hs[p0 * batch * h..(p0 + len) * batch * h])
            }
        };
        let prev = ArrayView2::from_shape((rows, h), prev).expect("[rows, H]");
        let mut dw = ArrayViewMut3::from_shape((heads, hw, dh), &mut self.dw[..]).expect("[heads, 4·dh, dh]");
        for (j, dg) in dg_heads.iter().enumerate() {
            let a = ArrayView2::from_shape((rows, hw), &dg[..rows * hw]).expect("[rows, 4·dh]");
            let b = prev.slice(ndarray::s![.., j * dh..(j + 1) * dh]);
            let mut c = dw.index_axis_mut(Axis(0), j);
            gemm(F::one(), &a.t(), &b, F::one(), &mut c);
        }
    }

    fn into_array(self) -> Array3<F> {
        Array3::from_shape_vec((self.heads, 4 * self.dh, self.dh), self.dw).expect("[heads, 4·dh, dh]")
    }
}

/// Head-major views of the block-diagonal product, as differentiable ops (the recorded rule).
struct Heads {
    batch: usize,
    heads: usize,
    dh: usize,
}

impl Heads {
    /// `h` `[B, H]` → `[heads, B, dh]`.
    fn of_state<F: Float>(&self, h: &Var<F>) -> Result<Var<F>> {
        h.reshape(&[self.batch, self.heads, self.dh])?.transpose(0, 1)
    }

    /// `[heads, B, dh]` → `[B, H]`.
    fn to_state<F: Float>(&self, h: &Var<F>) -> Result<Var<F>> {
        h.transpose(0, 1)?.reshape(&[self.batch, self.heads * self.dh])
    }

    /// Gates `[B, 4H]` → `[heads, B, 4·dh]` (element `g·H + j·dh + u` to head `j`, `g·dh + u`).
    fn of_gates<F: Float>(&self, g: &Var<F>) -> Result<Var<F>> {
        g.reshape(&[self.batch, 4, self.heads, self.dh])?
            .permute(&[2, 0, 1, 3])?
            .reshape(&[self.heads, self.batch, 4 * self.dh])
    }

    /// `[heads, B, 4·dh]` → gates `[B, 4H]`.
    fn to_gates<F: Float>(&self, g: &Var<F>) -> Result<Var<F>> {
        g.reshape(&[self.heads, self.batch, 4, self.dh])?
            .permute(&[1, 2, 0, 3])?
            .reshape(&[self.batch, 4 * self.heads * self.dh])
    }
}

/// What the recorded rule keeps of a step: the state it read, its gate values and its outputs.
struct Step<F: Float> {
    h_prev: Var<F>,
    c_prev: Var<F>,
    n_prev: Var<F>,
    f: Var<F>,
    o: Var<F>,
    ig: Var<F>,
    fg: Var<F>,
    tz: Var<F>,
    c: Var<F>,
    n: Var<F>,
    took_a: ArrayD<bool>,
}

impl SlstmSequence {
    /// The recorded rule (under `create_graph`): the forward recomputed step by step with
    /// differentiable ops, then the reverse pass through time written with them.
    fn recorded_backward<F: Float>(
        &self,
        inputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let (xp, w) = (&inputs[0], &inputs[1]);
        let tape = xp.tape();
        let (steps, batch) = (xp.shape()[0], xp.shape()[1]);
        let (heads, dh) = (w.shape()[0], w.shape()[2]);
        let hd = Heads { batch, heads, dh };
        let xs = xp.unstack(0)?;
        let mut saved: Vec<Option<Step<F>>> = (0..steps).map(|_| None).collect();
        let [mut h, mut c, mut n, mut m]: [Var<F>; 4] = [0, 1, 2, 3].map(|k| inputs[2 + k].clone());
        for i in 0..steps {
            let t = step_at(i, steps, self.reverse);
            let rec = hd.to_gates(&matmul_t(&hd.of_state(&h)?, w, false, true)?)?;
            let pre = (&xs[t] + &rec)?;
            let [gi, f, z, o]: [Var<F>; 4] = pre.chunk(4, 1)?.try_into().expect("four chunks");
            let a = (f.log_sigmoid()? + &m)?;
            let took_a = ndarray::Zip::from(a.value())
                .and(gi.value())
                .map_collect(|&a, &i| a >= i || a.is_nan());
            let m_new = where_(&took_a, &a, &gi)?;
            let ig = (&gi - &m_new)?.exp()?;
            let fg = (&a - &m_new)?.exp()?;
            let tz = z.tanh()?;
            let c_new = ((&fg * &c)? + (&ig * &tz)?)?;
            let n_new = ((&fg * &n)? + &ig)?;
            let h_new = (o.sigmoid()? * (&c_new / &n_new)?)?;
            saved[t] = Some(Step {
                h_prev: h,
                c_prev: c,
                n_prev: n,
                f,
                o,
                ig,
                fg,
                tz,
                c: c_new.clone(),
                n: n_new.clone(),
                took_a,
            });
            (h, c, n, m) = (h_new, c_new, n_new, m_new);
        }
        let per_step: Vec<Option<Vec<Var<F>>>> = grads[..4]
            .iter()
            .map(|g| g.as_ref().map(|g| g.unstack(0)).transpose())
            .collect::<Result<_>>()?;
        let zeros = tape.constant(ArrayD::zeros(vec![batch, heads * dh]));
        let mut carry: Vec<Maybe<F>> = vec![None; 4];
        let mut dxs: Vec<Maybe<F>> = vec![None; steps];
        let mut dw: Maybe<F> = None;
        for i in (0..steps).rev() {
            let t = step_at(i, steps, self.reverse);
            let s = saved[t].take().expect("every step ran");
            let mut d = Vec::with_capacity(4);
            for k in 0..4 {
                let from_output = per_step[k].as_ref().map(|g| g[t].clone());
                d.push(add_opt(from_output, carry[k].take())?.unwrap_or_else(|| zeros.clone()));
            }
            let [dh, dc, dn, dm]: [Var<F>; 4] = d.try_into().expect("four gradients");
            // h = σ(õ) ⊙ c / n.
            let so = s.o.sigmoid()?;
            let r = (&s.c / &s.n)?;
            let d_o = ((&dh * &r)? * (&so * &s.o.neg()?.sigmoid()?)?)?;
            let dh_so = (&dh * &so)?;
            let dct = (&dc + (&dh_so / &s.n)?)?;
            let dnt = (&dn - ((&dh_so * &r)? / &s.n)?)?;
            let one_minus_tz2 = (&s.tz * &s.tz)?.neg()?.shift(F::one())?;
            let dz = ((&dct * &s.ig)? * &one_minus_tz2)?;
            let gi = (((&dct * &s.tz)? + &dnt)? * &s.ig)?;
            let ga = (((&dct * &s.c_prev)? + (&dnt * &s.n_prev)?)? * &s.fg)?;
            let dcp = (&dct * &s.fg)?;
            let dnp = (&dnt * &s.fg)?;
            let dmt = ((&dm - &gi)? - &ga)?;
            let zero = tape.constant(ArrayD::zeros(dmt.shape()));
            let da = (&ga + &where_(&s.took_a, &dmt, &zero)?)?;
            let di = (&gi + &where_(&s.took_a, &zero, &dmt)?)?;
            let df = (&da * &s.f.neg()?.sigmoid()?)?;
            let dpre = crate::concat(&[&di, &df, &dz, &d_o], 1)?;
            let dpre_heads = hd.of_gates(&dpre)?;
            let dh_prev = hd.to_state(&dpre_heads.matmul(w)?)?;
            let dw_t = matmul_t(&dpre_heads, &hd.of_state(&s.h_prev)?, true, false)?;
            dw = add_opt(dw.take(), Some(dw_t))?;
            dxs[t] = Some(dpre);
            carry = vec![Some(dh_prev), Some(dcp), Some(dnp), Some(da)];
        }
        let dxs: Vec<Var<F>> = dxs.into_iter().map(|d| d.expect("every step ran")).collect();
        let mut out = vec![Some(crate::stack(&dxs.iter().collect::<Vec<_>>(), 0)?), dw];
        out.extend(carry);
        Ok(out)
    }
}
