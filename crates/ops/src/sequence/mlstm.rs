//! The mLSTM recurrence (xLSTM's matrix memory) over a whole sequence.

use super::*;
use crate::kernels::mlstm::{mlstm_step, mlstm_step_backward};
use crate::VarExt;
use eddy_tape::{MultiOp, Var};
use rayon::prelude::*;

/// The steps between two saved memories: the backward pass recomputes at most this many
/// memories of one head at a time from the last one saved before them.
pub const MLSTM_CHUNK: usize = 32;

/// The mLSTM over a whole sequence after the input projection (the recurrent form of
/// `MlstmCell` in eddy-nn, Beck et al. 2024). Inputs `[xp, c0, n0, m0]`: the projected
/// sequence `xp` `[T, B, 4H + 2·heads]`, per step `[q, k, v, o, ĩ, log f]` (`k` already scaled
/// by `1/√d`, `o` after its sigmoid, `log f = logsigmoid(f̃)`; `q`, `k`, `v`, `o` `H = heads·d`
/// wide, `ĩ` and `log f` one per head), and the initial state: `c0` `[B, heads·d·d]` (head-major,
/// each head's `C[a][b]` row-major, `a` the `v` index), `n0` `[B, H]`, `m0` `[B, heads]`. (The
/// cell's `h` is not read by the recurrence, so it is no input.) Per head and step, in time order
/// or from the last step to the first when `reverse`:
///
/// ```text
/// m' = max(log f + m, ĩ)                      (a tie takes log f + m, as the `maximum` op)
/// i' = exp(ĩ − m'),  f' = exp(log f + m − m')
/// C' = f' C + i' v kᵀ,  n' = f' n + i' k
/// h̃ = C' q / max(|n'ᵀ q|, exp(−m'))           (a tie takes |n'ᵀ q|; no ε)
/// h = o ⊙ h̃
/// ```
///
/// Outputs: every step's `h` (`[T, B, H]`, indexed by time step in both directions), the final
/// `C` `[B, heads·d·d]`, `n` `[B, H]` and `m` `[B, heads]`, and the saved memories for the fast
/// backward (`[B·heads, ⌈T/K⌉·(d² + d + 1)]`, `K` = [`MLSTM_CHUNK`]: the state `(C, n, m)` of
/// every head before every `K`-th step), empty (`[0]`) when `keep_checkpoints` is false (a tape
/// that records nothing). No gradient flows into that last output.
///
/// Memory: the saved states are `B·heads·⌈T/K⌉·(d² + d + 1)` numbers — for `T = 1024`, `K = 32`
/// one memory per 32 steps instead of every step's. The backward pass recomputes each run of
/// `K` steps of a head from its saved state into a buffer of `(K + 1)·d²` numbers and walks it
/// backwards: one more pass of the forward recurrence, no more memory.
///
/// Gradient, per head and step (`G` the gradient of `C'`, carried backwards with `dn`, `dm`):
/// `do = dh ⊙ h̃`, `dcq = dh ⊙ o / norm`, `dnorm = −Σ dh ⊙ o ⊙ h̃ / norm` routed to `|n'ᵀq|` (times
/// its sign) or to `exp(−m')`; `G += dcq qᵀ`, `dq = C'ᵀ dcq + d(n'ᵀq) n'`,
/// `dn += d(n'ᵀq) q`; `df' = Σ G ⊙ C + dn·n`, `di' = vᵀ G k + dn·k`, `dv = i' G k`,
/// `dk = i' (Gᵀ v + dn)`; `dC = f' G`, `dn ← f' dn`; then through the exponentials and the max
/// to `ĩ`, `log f` and `m`. The heads are independent: both passes split them across rayon's
/// threads. Under `create_graph` the rule is recorded instead: the forward recomputed step by
/// step with tape ops, and the same reverse pass written with differentiable ops.
///
/// # Errors
/// [`Error::Shape`] naming `mlstm_sequence` when the shapes do not fit together, `T` is 0 or
/// `heads` does not divide `H`.
pub struct MlstmSequence {
    /// Run from the last step to the first.
    pub reverse: bool,
    /// Output the saved memories for the fast backward (false on a tape that records nothing).
    pub keep_checkpoints: bool,
}

/// The sizes of an mLSTM sequence.
#[derive(Debug, Clone, Copy)]
struct Dims {
    steps: usize,
    batch: usize,
    heads: usize,
    /// The head size `d`.
    d: usize,
}

impl Dims {
    fn hidden(&self) -> usize {
        self.heads * self.d
    }
    /// The width of a projected step, `4H + 2·heads`.
    fn width(&self) -> usize {
        4 * self.hidden() + 2 * self.heads
    }
    fn pairs(&self) -> usize {
        self.batch * self.heads
    }
    fn chunks(&self) -> usize {
        self.steps.div_ceil(MLSTM_CHUNK)
    }
    /// The numbers saved per head: `(C, n, m)` per chunk.
    fn saved(&self) -> usize {
        self.chunks() * (self.d * self.d + self.d + 1)
    }

    fn check(inputs: &[&[usize]]) -> Result<Dims> {
        crate::arity("mlstm_sequence", inputs, 4)?;
        let bad = || {
            Error::shape(
                "mlstm_sequence",
                inputs,
                "expected xp [T, B, 4H + 2·heads] (T > 0), c0 [B, heads·d·d], n0 [B, H], m0 [B, heads] with H = heads·d",
            )
        };
        let (xp, c0, n0, m0) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        if xp.len() != 3 || c0.len() != 2 || n0.len() != 2 || m0.len() != 2 {
            return Err(bad());
        }
        let (steps, batch, hidden, heads) = (xp[0], xp[1], n0[1], m0[1]);
        if steps == 0 || heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(bad());
        }
        let d = hidden / heads;
        // Checked: huge sizes must not wrap round to ones that match.
        let width = hidden
            .checked_mul(4)
            .and_then(|w| w.checked_add(heads.checked_mul(2)?));
        let memory = d.checked_mul(d).and_then(|dd| dd.checked_mul(heads));
        let (Some(width), Some(memory)) = (width, memory) else {
            return Err(bad());
        };
        let ok = xp[2] == width
            && c0 == [batch, memory]
            && n0 == [batch, hidden]
            && m0 == [batch, heads]
            // The saved states, at most B·T·(heads·d² + H + heads) numbers, must be countable.
            && memory
                .checked_add(hidden + heads)
                .and_then(|m| m.checked_mul(steps)?.checked_mul(batch))
                .is_some();
        if !ok {
            return Err(bad());
        }
        Ok(Dims {
            steps,
            batch,
            heads,
            d,
        })
    }
}

/// One head's view of the projected sequence.
struct Head<'a, F> {
    xp: &'a [F],
    dims: Dims,
    /// Offset of the head's batch row within a step, and the head's index.
    row: usize,
    head: usize,
}

impl<'a, F: Float> Head<'a, F> {
    fn new(xp: &'a [F], dims: Dims, pair: usize) -> Self {
        let (b, head) = (pair / dims.heads, pair % dims.heads);
        Head {
            xp,
            dims,
            row: b * dims.width(),
            head,
        }
    }
    /// `[q, k, v, o]` of step `t`, `d` each.
    fn vectors(&self, t: usize) -> [&'a [F]; 4] {
        let (d, h) = (self.dims.d, self.dims.hidden());
        let base = t * self.dims.batch * self.dims.width() + self.row + self.head * d;
        let part = |g: usize| &self.xp[base + g * h..base + g * h + d];
        [part(0), part(1), part(2), part(3)]
    }
    /// `(ĩ, log f)` of step `t`.
    fn scalars(&self, t: usize) -> (F, F) {
        let base = t * self.dims.batch * self.dims.width() + self.row + 4 * self.dims.hidden() + self.head;
        (self.xp[base], self.xp[base + self.dims.heads])
    }
}

/// The gates of a step: `m' = max(a, ĩ)` with `a = log f + m` (a tie or a NaN `a` takes `a`, as
/// the `maximum` op), `f' = exp(a − m')`, `i' = exp(ĩ − m')`. Returns `(m', f', i', a taken)`.
fn gates<F: Float>(i_pre: F, log_f: F, m: F) -> (F, F, F, bool) {
    let a = log_f + m;
    let take_a = a >= i_pre || a.is_nan();
    let m_new = if take_a { a } else { i_pre };
    (m_new, (a - m_new).exp(), (i_pre - m_new).exp(), take_a)
}

/// The denominator `max(|nq|, exp(−m))` (a tie or a NaN takes `|nq|`, as the `maximum` op) and
/// whether `|nq|` was taken.
fn denominator<F: Float>(nq: F, m: F) -> (F, bool) {
    let (abs, floor) = (nq.abs(), (-m).exp());
    let take_abs = abs >= floor || abs.is_nan();
    (if take_abs { abs } else { floor }, take_abs)
}

/// What the forward pass of one head produces.
struct HeadForward<F> {
    /// `h` per processed step (`[T, d]`, in processing order).
    hs: Vec<F>,
    c: Vec<F>,
    n: Vec<F>,
    m: F,
    saved: Vec<F>,
}

/// A head's initial state `(C, n, m)`.
type HeadState<'a, F> = (&'a [F], &'a [F], F);

/// The forward pass of one head from its initial state.
fn head_forward<F: Float>(
    x: &Head<'_, F>,
    (c0, n0, m0): HeadState<'_, F>,
    reverse: bool,
    keep: bool,
) -> HeadForward<F> {
    let Dims { steps, d, .. } = x.dims;
    let (mut c, mut c_next) = (c0.to_vec(), vec![F::zero(); d * d]);
    let (mut n, mut n_next) = (n0.to_vec(), vec![F::zero(); d]);
    let mut m = m0;
    let mut hs = vec![F::zero(); steps * d];
    let mut saved = Vec::with_capacity(if keep { x.dims.saved() } else { 0 });
    let mut cq = vec![F::zero(); d];
    for i in 0..steps {
        if keep && i % MLSTM_CHUNK == 0 {
            saved.extend_from_slice(&c);
            saved.extend_from_slice(&n);
            saved.push(m);
        }
        let t = step_at(i, steps, reverse);
        let [q, k, v, o] = x.vectors(t);
        let (i_pre, log_f) = x.scalars(t);
        let (m_new, f, ig, _) = gates(i_pre, log_f, m);
        let nq = mlstm_step(&c, &mut c_next, &n, &mut n_next, [q, k, v], (f, ig), &mut cq);
        let (norm, _) = denominator(nq, m_new);
        for (h, (&cq, &o)) in hs[i * d..(i + 1) * d].iter_mut().zip(cq.iter().zip(o)) {
            *h = o * (cq / norm);
        }
        std::mem::swap(&mut c, &mut c_next);
        std::mem::swap(&mut n, &mut n_next);
        m = m_new;
    }
    HeadForward { hs, c, n, m, saved }
}

/// The gradients of one head: of its projected steps (`[T, 4d + 2]` in processing order: `dq`,
/// `dk`, `dv`, `do`, `dĩ`, `d log f`) and of its initial state.
struct HeadBackward<F> {
    dx: Vec<F>,
    dc: Vec<F>,
    dn: Vec<F>,
    dm: F,
}

/// The incoming gradients of the op's outputs, `None` where none reached them.
struct Incoming<'a, F> {
    dhs: Option<&'a [F]>,
    dc: Option<&'a [F]>,
    dn: Option<&'a [F]>,
    dm: Option<&'a [F]>,
}

/// A chunk's recomputed memories and normalisers (its saved state first) and each step's `cq`:
/// the reverse pass's buffers, allocated once per thread's run of heads.
struct Chunk<F> {
    cs: Vec<F>,
    ns: Vec<F>,
    cqs: Vec<F>,
}

impl<F: Float> Chunk<F> {
    fn new(d: usize) -> Self {
        Chunk {
            cs: vec![F::zero(); (MLSTM_CHUNK + 1) * d * d],
            ns: vec![F::zero(); (MLSTM_CHUNK + 1) * d],
            cqs: vec![F::zero(); MLSTM_CHUNK * d],
        }
    }
}

/// The reverse pass of one head: per chunk of [`MLSTM_CHUNK`] steps, last first, the memories
/// recomputed from the chunk's saved state, then walked backwards.
fn head_backward<F: Float>(
    x: &Head<'_, F>,
    (pair, saved): (usize, &[F]),
    g: &Incoming<'_, F>,
    reverse: bool,
    buffers: &mut Chunk<F>,
) -> HeadBackward<F> {
    let Dims { steps, d, .. } = x.dims;
    let (dd, hidden, batch) = (d * d, x.dims.hidden(), x.dims.batch);
    let b = pair / x.dims.heads;
    let per_chunk = dd + d + 1;
    let mut dc =
        g.dc.map_or_else(|| vec![F::zero(); dd], |s| s[pair * dd..(pair + 1) * dd].to_vec());
    let mut dn =
        g.dn.map_or_else(|| vec![F::zero(); d], |s| s[pair * d..(pair + 1) * d].to_vec());
    let mut dm = g.dm.map_or(F::zero(), |s| s[pair]);
    let width = 4 * d + 2;
    let mut dx = vec![F::zero(); steps * width];
    let Chunk { cs, ns, cqs } = buffers;
    // Per step of the chunk: f', i', m', whether the max took log f + m, and nq.
    let mut scalars = [(F::zero(), F::zero(), F::zero(), false, F::zero()); MLSTM_CHUNK];
    let (mut dcq, mut dh_tilde) = (vec![F::zero(); d], vec![F::zero(); d]);
    let (mut dck, mut dctv) = (vec![F::zero(); d], vec![F::zero(); d]);
    for chunk in (0..x.dims.chunks()).rev() {
        let start = chunk * MLSTM_CHUNK;
        let len = MLSTM_CHUNK.min(steps - start);
        let state = &saved[chunk * per_chunk..(chunk + 1) * per_chunk];
        cs[..dd].copy_from_slice(&state[..dd]);
        ns[..d].copy_from_slice(&state[dd..dd + d]);
        let mut m = state[dd + d];
        for j in 0..len {
            let t = step_at(start + j, steps, reverse);
            let [q, k, v, _] = x.vectors(t);
            let (i_pre, log_f) = x.scalars(t);
            let (m_new, f, ig, take_a) = gates(i_pre, log_f, m);
            let (c_prev, c) = cs[j * dd..(j + 2) * dd].split_at_mut(dd);
            let (n_prev, n) = ns[j * d..(j + 2) * d].split_at_mut(d);
            let nq = mlstm_step(
                c_prev,
                c,
                n_prev,
                n,
                [q, k, v],
                (f, ig),
                &mut cqs[j * d..(j + 1) * d],
            );
            scalars[j] = (f, ig, m_new, take_a, nq);
            m = m_new;
        }
        for j in (0..len).rev() {
            let i = start + j;
            let t = step_at(i, steps, reverse);
            let [q, k, v, o] = x.vectors(t);
            let (f, ig, m_new, take_a, nq) = scalars[j];
            let (norm, take_abs) = denominator(nq, m_new);
            let cq = &cqs[j * d..(j + 1) * d];
            let (dxq, rest) = dx[i * width..(i + 1) * width].split_at_mut(d);
            let (dxk, rest) = rest.split_at_mut(d);
            let (dxv, rest) = rest.split_at_mut(d);
            let (dxo, rest) = rest.split_at_mut(d);
            // h = o ⊙ cq / norm.
            let mut dnorm = F::zero();
            match g.dhs {
                Some(dhs) => {
                    let dh = &dhs[(t * batch + b) * hidden + x.head * d..][..d];
                    for a in 0..d {
                        let h_tilde = cq[a] / norm;
                        dxo[a] = dh[a] * h_tilde;
                        dh_tilde[a] = dh[a] * o[a];
                        dcq[a] = dh_tilde[a] / norm;
                        dnorm -= dh_tilde[a] * h_tilde;
                    }
                    dnorm /= norm;
                }
                None => dcq.fill(F::zero()),
            }
            // norm = max(|nq|, exp(−m')).
            let (dnq, mut dm_new) = match take_abs {
                true => (dnorm * sign(nq), dm),
                false => (F::zero(), dm - dnorm * (-m_new).exp()),
            };
            let (c_prev, c) = cs[j * dd..(j + 2) * dd].split_at(dd);
            let (n_prev, n) = ns[j * d..(j + 2) * d].split_at(d);
            let sum_c = mlstm_step_backward(
                c,
                c_prev,
                &mut dc,
                [q, k, v],
                &dcq,
                f,
                [&mut *dxq, &mut dck, &mut dctv],
            );
            let (mut df, mut di) = (sum_c, F::zero());
            for a in 0..d {
                dxq[a] += dnq * n[a];
                let dn_a = dn[a] + dnq * q[a];
                df += dn_a * n_prev[a];
                di += dn_a * k[a] + v[a] * dck[a];
                dxv[a] = ig * dck[a];
                dxk[a] = ig * (dctv[a] + dn_a);
                dn[a] = f * dn_a;
            }
            // f' = exp(a − m'), i' = exp(ĩ − m'), m' = max(a, ĩ), a = log f + m.
            let (mut da, mut d_i) = (df * f, di * ig);
            dm_new -= da + d_i;
            match take_a {
                true => da += dm_new,
                false => d_i += dm_new,
            }
            rest[0] = d_i;
            rest[1] = da;
            dm = da;
        }
    }
    HeadBackward { dx, dc, dn, dm }
}

/// `sign(x)` with `sign(0) = 0` (the `abs` op's derivative).
fn sign<F: Float>(x: F) -> F {
    if x > F::zero() {
        F::one()
    } else if x < F::zero() {
        -F::one()
    } else {
        F::zero()
    }
}

/// What the fast backward reads that the forward keeps only when asked.
const NEEDS: Needs = Needs {
    what: "the saved memories",
    option: "keep_checkpoints",
};

impl<F: Float> MultiOp<F> for MlstmSequence {
    fn name(&self) -> &str {
        "mlstm_sequence"
    }

    fn shapes(&self, inputs: &[&[usize]]) -> Result<Vec<Vec<usize>>> {
        let dims = Dims::check(inputs)?;
        let saved = match self.keep_checkpoints {
            true => vec![dims.pairs(), dims.saved()],
            false => vec![0],
        };
        Ok(vec![
            vec![dims.steps, dims.batch, dims.hidden()],
            inputs[1].to_vec(),
            inputs[2].to_vec(),
            inputs[3].to_vec(),
            saved,
        ])
    }

    fn forward(&self, inputs: &[&ArrayD<F>]) -> Result<Vec<ArrayD<F>>> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
        let dims = Dims::check(&shapes)?;
        let Dims { steps, batch, d, .. } = dims;
        let (dd, hidden) = (d * d, dims.hidden());
        let xp = flat(inputs[0]);
        let (c0, n0, m0) = (flat(inputs[1]), flat(inputs[2]), flat(inputs[3]));
        let heads: Vec<HeadForward<F>> = (0..dims.pairs())
            .into_par_iter()
            .map(|p| {
                let state = (&c0[p * dd..(p + 1) * dd], &n0[p * d..(p + 1) * d], m0[p]);
                head_forward(
                    &Head::new(&xp, dims, p),
                    state,
                    self.reverse,
                    self.keep_checkpoints,
                )
            })
            .collect();
        let mut hs = vec![F::zero(); steps * batch * hidden];
        let (mut c, mut n, mut m) = (
            Vec::with_capacity(c0.len()),
            Vec::with_capacity(n0.len()),
            Vec::new(),
        );
        let mut saved = Vec::with_capacity(if self.keep_checkpoints {
            dims.pairs() * dims.saved()
        } else {
            0
        });
        for (p, head) in heads.into_iter().enumerate() {
            for i in 0..steps {
                let t = step_at(i, steps, self.reverse);
                let at = t * batch * hidden + p * d; // p·d = b·H + head·d
                hs[at..at + d].copy_from_slice(&head.hs[i * d..(i + 1) * d]);
            }
            c.extend_from_slice(&head.c);
            n.extend_from_slice(&head.n);
            m.push(head.m);
            saved.extend_from_slice(&head.saved);
        }
        let saved = match self.keep_checkpoints {
            true => shaped(saved, &[dims.pairs(), dims.saved()]),
            false => shaped(Vec::new(), &[0]),
        };
        Ok(vec![
            shaped(hs, &[steps, batch, hidden]),
            shaped(c, inputs[1].shape()),
            shaped(n, inputs[2].shape()),
            shaped(m, inputs[3].shape()),
            saved,
        ])
    }

    fn backward(
        &self,
        inputs: &[Var<F>],
        outputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let recorded = || self.recorded_backward(inputs, grads);
        if let Some(g) = recorded_or_kept(self, inputs, NEEDS, self.keep_checkpoints, recorded)? {
            return Ok(g);
        }
        let tape = inputs[0].tape();
        let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
        let dims = Dims::check(&shapes)?;
        let Dims {
            steps,
            batch,
            heads,
            d,
        } = dims;
        let (dd, hidden, width) = (d * d, dims.hidden(), dims.width());
        let xp = flat(inputs[0].value());
        let saved = flat(outputs[4].value());
        let g: Vec<Option<std::borrow::Cow<'_, [F]>>> = grads[..4]
            .iter()
            .map(|g| g.as_ref().map(|g| flat(g.value())))
            .collect();
        let incoming = Incoming {
            dhs: g[0].as_deref(),
            dc: g[1].as_deref(),
            dn: g[2].as_deref(),
            dm: g[3].as_deref(),
        };
        let per = dims.saved();
        let heads_back: Vec<HeadBackward<F>> = (0..dims.pairs())
            .into_par_iter()
            .map_init(
                || Chunk::new(d),
                |buffers, p| {
                    let saved = (p, &saved[p * per..(p + 1) * per]);
                    head_backward(&Head::new(&xp, dims, p), saved, &incoming, self.reverse, buffers)
                },
            )
            .collect();
        let need = |k: usize| inputs[k].requires_grad();
        let mut dxp = vec![F::zero(); steps * batch * width];
        let (mut dc, mut dn, mut dm) = (Vec::with_capacity(dims.pairs() * dd), Vec::new(), Vec::new());
        for (p, head) in heads_back.into_iter().enumerate() {
            let (b, j) = (p / heads, p % heads);
            for i in 0..steps {
                let t = step_at(i, steps, self.reverse);
                let src = &head.dx[i * (4 * d + 2)..(i + 1) * (4 * d + 2)];
                let row = &mut dxp[(t * batch + b) * width..(t * batch + b + 1) * width];
                for part in 0..4 {
                    row[part * hidden + j * d..part * hidden + (j + 1) * d]
                        .copy_from_slice(&src[part * d..(part + 1) * d]);
                }
                row[4 * hidden + j] = src[4 * d];
                row[4 * hidden + heads + j] = src[4 * d + 1];
            }
            dc.extend_from_slice(&head.dc);
            dn.extend_from_slice(&head.dn);
            dm.push(head.dm);
        }
        let out = |k: usize, v: Vec<F>| need(k).then(|| tape.constant(shaped(v, inputs[k].shape())));
        Ok(vec![out(0, dxp), out(1, dc), out(2, dn), out(3, dm)])
    }
}

/// What the recorded rule keeps of a step (all per head: `[B·heads, …]`).
struct RecordedStep<F: Float> {
    q: Var<F>,
    k: Var<F>,
    v: Var<F>,
    o: Var<F>,
    f: Var<F>,
    ig: Var<F>,
    c_prev: Var<F>,
    c: Var<F>,
    n_prev: Var<F>,
    n: Var<F>,
    cq: Var<F>,
    norm: Var<F>,
    /// `exp(−m')`.
    floor: Var<F>,
    /// `1` where the max took `log f + m`, else `0`; `1` where the denominator took `|nq|`.
    take_a: Var<F>,
    take_abs: Var<F>,
    /// `sign(nq)`.
    sign: Var<F>,
}

impl MlstmSequence {
    /// The recorded rule (under `create_graph`): the forward recomputed step by step with tape
    /// ops, then the reverse pass of the fast backward written with differentiable ops.
    fn recorded_backward<F: Float>(
        &self,
        inputs: &[Var<F>],
        grads: &[Option<Var<F>>],
    ) -> Result<Vec<Option<Var<F>>>> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
        let dims = Dims::check(&shapes)?;
        let Dims {
            steps,
            batch,
            heads,
            d,
        } = dims;
        let (bh, hidden) = (dims.pairs(), dims.hidden());
        let tape = inputs[0].tape();
        let constant = |a: ArrayD<F>| tape.constant(a);
        let mask = |x: &Var<F>, rule: &dyn Fn(F, F) -> bool, y: &Var<F>| {
            let vals = ndarray::Zip::from(x.value())
                .and(y.value())
                .map_collect(|&a, &b| if rule(a, b) { F::one() } else { F::zero() });
            constant(vals)
        };
        let xs = inputs[0].unstack(0)?;
        let (mut c, mut n, mut m) = (
            inputs[1].reshape(&[bh, d, d])?,
            inputs[2].reshape(&[bh, d])?,
            inputs[3].reshape(&[bh])?,
        );
        let mut saved: Vec<Option<RecordedStep<F>>> = (0..steps).map(|_| None).collect();
        for i in 0..steps {
            let t = step_at(i, steps, self.reverse);
            let [q, k, v, o, ip, lf]: [Var<F>; 6] = xs[t]
                .split(&[hidden, hidden, hidden, hidden, heads, heads], -1)?
                .try_into()
                .expect("six parts");
            let per_head = |x: &Var<F>| x.reshape(&[bh, d]);
            let (q, k, v, o) = (per_head(&q)?, per_head(&k)?, per_head(&v)?, per_head(&o)?);
            let (ip, lf) = (ip.reshape(&[bh])?, lf.reshape(&[bh])?);
            let a = (&lf + &m)?;
            let take_a = mask(&a, &|a, b| a >= b || a.is_nan(), &ip);
            let m_new = a.maximum(&ip)?;
            let f = (&a - &m_new)?.exp()?;
            let ig = (&ip - &m_new)?.exp()?;
            let c_new = crate::rank_one_update(&c, &f, &ig, &v, &k)?;
            let n_new = ((&f.unsqueeze(1)? * &n)? + (&ig.unsqueeze(1)? * &k)?)?;
            let cq = c_new.matmul(&q.reshape(&[bh, d, 1])?)?.reshape(&[bh, d])?;
            let nq = (&n_new * &q)?.sum(1, false)?;
            let floor = m_new.neg()?.exp()?;
            let abs = nq.abs()?;
            let take_abs = mask(&abs, &|a, b| a >= b || a.is_nan(), &floor);
            let norm = abs.maximum(&floor)?;
            let sign = constant(nq.value().mapv(sign));
            saved[t] = Some(RecordedStep {
                q,
                k,
                v,
                o,
                f,
                ig,
                c_prev: c,
                c: c_new.clone(),
                n_prev: n,
                n: n_new.clone(),
                cq,
                norm,
                floor,
                take_a,
                take_abs,
                sign,
            });
            (c, n, m) = (c_new, n_new, m_new);
        }
        let zeros = |shape: &[usize]| constant(ArrayD::zeros(shape.to_vec()));
        let carried = |k: usize, shape: &[usize]| -> Result<Var<F>> {
            match &grads[k] {
                Some(g) => g.reshape(shape),
                None => Ok(zeros(shape)),
            }
        };
        let (mut dc, mut dn, mut dm) = (
            carried(1, &[bh, d, d])?,
            carried(2, &[bh, d])?,
            carried(3, &[bh])?,
        );
        let dhs = grads[0].as_ref().map(|g| g.unstack(0)).transpose()?;
        let mut dxs: Vec<Option<Var<F>>> = vec![None; steps];
        let one = |x: &Var<F>| -> Result<Var<F>> { x.neg()?.shift(F::one()) };
        for i in (0..steps).rev() {
            let t = step_at(i, steps, self.reverse);
            let s = saved[t].take().expect("every step ran");
            let dh = match &dhs {
                Some(d_) => d_[t].reshape(&[bh, d])?,
                None => zeros(&[bh, d]),
            };
            let norm = s.norm.unsqueeze(1)?;
            let h_tilde = (&s.cq / &norm)?;
            let d_o = (&dh * &h_tilde)?;
            let dht = (&dh * &s.o)?;
            let dcq = (&dht / &norm)?;
            let dnorm = ((&dht * &h_tilde)?.sum(1, false)? / &s.norm)?.neg()?;
            let dnq = ((&dnorm * &s.take_abs)? * &s.sign)?;
            let dfloor = (&dnorm * &one(&s.take_abs)?)?;
            let mut dm_new = (&dm - &(&dfloor * &s.floor)?)?;
            let dq =
                (dcq.reshape(&[bh, 1, d])?.matmul(&s.c)?.reshape(&[bh, d])? + (&dnq.unsqueeze(1)? * &s.n)?)?;
            let g = (&dc + &dcq.reshape(&[bh, d, 1])?.matmul(&s.q.reshape(&[bh, 1, d])?)?)?;
            let dn_t = (&dn + &(&dnq.unsqueeze(1)? * &s.q)?)?;
            let gk = g.matmul(&s.k.reshape(&[bh, d, 1])?)?.reshape(&[bh, d])?;
            let gtv = s.v.reshape(&[bh, 1, d])?.matmul(&g)?.reshape(&[bh, d])?;
            let df =
                ((&g * &s.c_prev)?.sum(2, false)?.sum(1, false)? + (&dn_t * &s.n_prev)?.sum(1, false)?)?;
            let di = ((&gk * &s.v)?.sum(1, false)? + (&dn_t * &s.k)?.sum(1, false)?)?;
            let ig1 = s.ig.unsqueeze(1)?;
            let dv = (&gk * &ig1)?;
            let dk = ((&gtv + &dn_t)? * &ig1)?;
            dc = (&g * &s.f.reshape(&[bh, 1, 1])?)?;
            dn = (&dn_t * &s.f.unsqueeze(1)?)?;
            let da = (&df * &s.f)?;
            let d_i = (&di * &s.ig)?;
            dm_new = ((&dm_new - &da)? - &d_i)?;
            let da = (&da + &(&dm_new * &s.take_a)?)?;
            let d_i = (&d_i + &(&dm_new * &one(&s.take_a)?)?)?;
            let wide = |x: &Var<F>| x.reshape(&[batch, hidden]);
            let narrow = |x: &Var<F>| x.reshape(&[batch, heads]);
            dxs[t] = Some(crate::concat(
                &[
                    &wide(&dq)?,
                    &wide(&dk)?,
                    &wide(&dv)?,
                    &wide(&d_o)?,
                    &narrow(&d_i)?,
                    &narrow(&da)?,
                ],
                -1,
            )?);
            dm = da;
        }
        let dxs: Vec<Var<F>> = dxs.into_iter().map(|d_| d_.expect("every step ran")).collect();
        Ok(vec![
            Some(crate::stack(&dxs.iter().collect::<Vec<_>>(), 0)?),
            Some(dc.reshape(inputs[1].shape())?),
            Some(dn.reshape(inputs[2].shape())?),
            Some(dm.reshape(inputs[3].shape())?),
        ])
    }
}
