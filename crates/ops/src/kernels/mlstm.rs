//! The inner loops of the mLSTM recurrence (xLSTM's matrix memory) over one head's `d × d`
//! memory `C` (row-major, row `a` belongs to `v[a]`, column `b` to `k[b]`), one time step at a
//! time, forward and backward, each compiled per instruction set (`multiversion!`). No
//! approximations: the f64 copies are the plain arithmetic.

use super::{madd, multiversion};
use eddy_tape::Float;

/// Partial sums per dot product (one 512-bit vector of f32 is 16, of f64 8).
const LANES: usize = 16;

/// `Σ a·b` over the common length, with [`LANES`] partial sums in a fixed-size array, summed
/// in order at the end. (Written so that LLVM keeps the partial sums in full vector registers:
/// an index loop, or a pairwise tree for the final sum, made it pack them two to a register.)
#[inline(always)]
fn dot<F: Float, const FMA: bool>(a: &[F], b: &[F]) -> F {
    let n = a.len().min(b.len());
    let (xs, x_rest) = a[..n].as_chunks::<LANES>();
    let (ys, y_rest) = b[..n].as_chunks::<LANES>();
    let mut acc = [F::zero(); LANES];
    for (x, y) in xs.iter().zip(ys) {
        for ((s, &p), &q) in acc.iter_mut().zip(x).zip(y) {
            *s = madd::<F, FMA>(p, q, *s);
        }
    }
    let mut s = acc.iter().fold(F::zero(), |s, &x| s + x);
    for (&x, &y) in x_rest.iter().zip(y_rest) {
        s = madd::<F, FMA>(x, y, s);
    }
    s
}

multiversion! {
    /// One step of one head, from the previous memory `c_prev` (`d × d`) and normaliser `n_prev`
    /// (`d`), the forget and input gates `f`, `i` and the head's `q`, `k`, `v` (`d` each):
    ///
    /// ```text
    /// C = f·C_prev + i·v kᵀ,   n = f·n_prev + i·k,   cq = C q
    /// ```
    ///
    /// writing `c`, `n` and `cq`; returns `nᵀq`. One pass over the memory.
    pub fn mlstm_step<F: Float, const FMA: bool>(
        c_prev: &[F],
        c: &mut [F],
        n_prev: &[F],
        n: &mut [F],
        qkv: [&[F]; 3],
        gates: (F, F),
        cq: &mut [F],
    ) -> F {
        let [q, k, v] = qkv;
        let (f, i) = gates;
        let d = q.len();
        if d == 0 {
            return F::zero();
        }
        let (k, v, cq, n, n_prev) = (&k[..d], &v[..d], &mut cq[..d], &mut n[..d], &n_prev[..d]);
        // Iterators, not indices: no bounds checks, so the inner loops vectorise.
        let rows = c.chunks_exact_mut(d).zip(c_prev.chunks_exact(d));
        for ((dst, src), (&va, cq_a)) in rows.zip(v.iter().zip(cq.iter_mut())) {
            let s = i * va;
            for ((x, &p), &kb) in dst.iter_mut().zip(src).zip(k) {
                *x = madd::<F, FMA>(s, kb, f * p);
            }
            *cq_a = dot::<F, FMA>(dst, q);
        }
        for ((x, &p), &kb) in n.iter_mut().zip(n_prev).zip(k) {
            *x = madd::<F, FMA>(i, kb, f * p);
        }
        dot::<F, FMA>(n, q)
    }
}

multiversion! {
    /// The memory's part of one step's backward (see [`mlstm_step`]): from the incoming
    /// gradient `dc` of `C` (carried from the later steps, `d × d`) and `dcq` of `cq`, with
    /// `C` and `C_prev`:
    ///
    /// ```text
    /// G = dc + dcq qᵀ                     (the whole gradient of C)
    /// dq = Cᵀ dcq,  dck = G k,  dctv = Gᵀ v
    /// dc ← f·G                            (the gradient of C_prev)
    /// ```
    ///
    /// and returns `Σ G ⊙ C_prev` (the memory's part of the gradient of `f`). One pass.
    pub fn mlstm_step_backward<F: Float, const FMA: bool>(
        c: &[F],
        c_prev: &[F],
        dc: &mut [F],
        qkv: [&[F]; 3],
        dcq: &[F],
        f: F,
        out: [&mut [F]; 3],
    ) -> F {
        let [q, k, v] = qkv;
        let [dq, dck, dctv] = out;
        let d = q.len();
        if d == 0 {
            return F::zero();
        }
        let (k, v, dcq) = (&k[..d], &v[..d], &dcq[..d]);
        let (dq, dck, dctv) = (&mut dq[..d], &mut dck[..d], &mut dctv[..d]);
        dq.fill(F::zero());
        dctv.fill(F::zero());
        let mut sum_f = F::zero();
        let rows = dc.chunks_exact_mut(d).zip(c.chunks_exact(d)).zip(c_prev.chunks_exact(d));
        for (((row, cr), pr), ((&g, &va), dck_a)) in rows.zip(dcq.iter().zip(v).zip(dck.iter_mut())) {
            for (((x, &qb), &cb), (dq_b, dctv_b)) in row.iter_mut().zip(q).zip(cr).zip(dq.iter_mut().zip(dctv.iter_mut())) {
                let y = madd::<F, FMA>(g, qb, *x);
                *x = y;
                *dq_b = madd::<F, FMA>(g, cb, *dq_b);
                *dctv_b = madd::<F, FMA>(va, y, *dctv_b);
            }
            sum_f += dot::<F, FMA>(row, pr);
            *dck_a = dot::<F, FMA>(row, k);
            for x in row.iter_mut() {
                *x = f * *x;
            }
        }
        sum_f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|j| ((j as f64 + 1.0) * seed).sin()).collect()
    }

    #[test]
    fn a_step_and_its_backward_match_plain_loops() {
        let d = 19; // above LANES, not a multiple of it
        let (cp, np, q, k, w) = (v(d * d, 0.3), v(d, 0.7), v(d, 1.1), v(d, 1.3), v(d, 1.7));
        let (f, i) = (0.8, 1.4);
        let (mut c, mut n, mut cq) = (vec![0.0; d * d], vec![0.0; d], vec![0.0; d]);
        let nq = mlstm_step(&cp, &mut c, &np, &mut n, [&q, &k, &w], (f, i), &mut cq);
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
        for a in 0..d {
            let mut s = 0.0;
            for b in 0..d {
                close(c[a * d + b], f * cp[a * d + b] + i * w[a] * k[b]);
                s += c[a * d + b] * q[b];
            }
            close(cq[a], s);
            close(n[a], f * np[a] + i * k[a]);
        }
        close(nq, (0..d).map(|a| n[a] * q[a]).sum());

        let (dc0, dcq) = (v(d * d, 0.9), v(d, 2.1));
        let mut dc = dc0.clone();
        let (mut dq, mut dck, mut dctv) = (vec![0.0; d], vec![0.0; d], vec![0.0; d]);
        let sum_f = mlstm_step_backward(
            &c,
            &cp,
            &mut dc,
            [&q, &k, &w],
            &dcq,
            f,
            [&mut dq, &mut dck, &mut dctv],
        );
        let g = |a: usize, b: usize| dc0[a * d + b] + dcq[a] * q[b];
        let mut want_f = 0.0;
        for a in 0..d {
            close(dq[a], (0..d).map(|r| c[r * d + a] * dcq[r]).sum());
            close(dck[a], (0..d).map(|b| g(a, b) * k[b]).sum());
            close(dctv[a], (0..d).map(|r| g(r, a) * w[r]).sum());
            for b in 0..d {
                close(dc[a * d + b], f * g(a, b));
                want_f += g(a, b) * cp[a * d + b];
            }
        }
        close(sum_f, want_f);
    }
}
