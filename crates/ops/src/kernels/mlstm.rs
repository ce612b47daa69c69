//! The inner loops of the mLSTM recurrence (xLSTM's matrix memory) over one head's `d × d`
//! memory `C` (row-major, row `a` belongs to `v[a]`, column `b` to `k[b]`), one time step at a
//! time, forward and backward, each compiled per instruction set (`multiversion!`). No
//! approximations: the f64 copies are the plain arithmetic.

use super::{madd, multiversion};
use eddy_tape::Float;

/// Partial sums per dot product (one 512-bit vector of f32 is 16, of f64 8).
const LANES: usize = 16;

/// `Σ a·b` over the common length, with [`LANES`] partial sums (so the loop vectorises).
#[inline(always)]
fn dot<F: Float, const FMA: bool>(a: &[F], b: &[F]) -> F {
    let n = a.len().min(b.len());
    let full = n / LANES * LANES;
    let mut acc = [F::zero(); LANES];
    for (x, y) in a[..full].chunks_exact(LANES).zip(b[..full].chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] = madd::<F, FMA>(x[l], y[l], acc[l]);
        }
    }
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    let mut s = acc[0];
    for j in full..n {
        s = madd::<F, FMA>(a[j], b[j], s);
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
        let (k, v, cq, n, n_prev) = (&k[..d], &v[..d], &mut cq[..d], &mut n[..d], &n_prev[..d]);
        for a in 0..d {
            let (src, dst) = (&c_prev[a * d..(a + 1) * d], &mut c[a * d..(a + 1) * d]);
            let s = i * v[a];
            for b in 0..d {
                dst[b] = madd::<F, FMA>(s, k[b], f * src[b]);
            }
            cq[a] = dot::<F, FMA>(dst, q);
        }
        for b in 0..d {
            n[b] = madd::<F, FMA>(i, k[b], f * n_prev[b]);
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
        let (k, v, dcq) = (&k[..d], &v[..d], &dcq[..d]);
        let (dq, dck, dctv) = (&mut dq[..d], &mut dck[..d], &mut dctv[..d]);
        dq.fill(F::zero());
        dctv.fill(F::zero());
        let mut sum_f = F::zero();
        for a in 0..d {
            let row = &mut dc[a * d..(a + 1) * d];
            let (cr, pr) = (&c[a * d..(a + 1) * d], &c_prev[a * d..(a + 1) * d]);
            let (g, va) = (dcq[a], v[a]);
            for b in 0..d {
                let x = madd::<F, FMA>(g, q[b], row[b]);
                row[b] = x;
                dq[b] = madd::<F, FMA>(g, cr[b], dq[b]);
                dctv[b] = madd::<F, FMA>(va, x, dctv[b]);
            }
            sum_f += dot::<F, FMA>(row, pr);
            dck[a] = dot::<F, FMA>(row, k);
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
