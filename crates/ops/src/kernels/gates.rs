//! The fused pointwise loops of the recurrent cells, one batch row at a time, each compiled per
//! instruction set (`multiversion!`): the LSTM, GRU and sLSTM gate math forward and backward, the
//! Elman activation, and the small row helpers the sequence ops share. Each slice is a
//! separate argument, so the compiler knows they do not alias and vectorises the loops.

use super::activations::{exp, log_sigmoid_and_complement, sigmoid, tanh};
use super::multiversion;
use eddy_tape::Float;

/// The nonlinearity of an Elman recurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RnnActivation {
    /// `tanh`.
    Tanh,
    /// `max(0, x)`.
    Relu,
}

impl RnnActivation {
    /// The derivative from the output `y`.
    #[inline(always)]
    pub fn derivative<F: Float>(self, y: F) -> F {
        match self {
            RnnActivation::Tanh => F::one() - y * y,
            RnnActivation::Relu if y > F::zero() => F::one(),
            RnnActivation::Relu => F::zero(),
        }
    }
}

multiversion! {
    /// `row += b`, elementwise over the common length.
    pub fn add_row<F: Float, const FMA: bool>(row: &mut [F], b: &[F]) {
        let n = row.len().min(b.len());
        let (row, b) = (&mut row[..n], &b[..n]);
        for j in 0..n {
            row[j] += b[j];
        }
    }
}

multiversion! {
    /// `out = a + b`, elementwise over the common length.
    pub fn sum_into<F: Float, const FMA: bool>(out: &mut [F], a: &[F], b: &[F]) {
        let n = out.len().min(a.len()).min(b.len());
        let (out, a, b) = (&mut out[..n], &a[..n], &b[..n]);
        for j in 0..n {
            out[j] = a[j] + b[j];
        }
    }
}

/// `Σ_rows m` of a row-major matrix with `cols` columns (a bias gradient).
pub fn column_sums<F: Float>(m: &[F], cols: usize) -> Vec<F> {
    let mut out = vec![F::zero(); cols];
    for row in m.chunks_exact(cols.max(1)) {
        add_row(&mut out, row);
    }
    out
}

multiversion! {
    /// One row of the LSTM forward: from the pre-activations `g` (i, f, g, o) and the previous
    /// cell `cp`, the activations `acts` (σi, σf, tanh g, σo, tanh c'), the cell `cn` and the
    /// output `hn`:  `c' = σf ⊙ c + σi ⊙ tanh g`, `h' = σo ⊙ tanh c'`.
    pub fn lstm_row_forward<F: Float, const FMA: bool>(g: [&[F]; 4], cp: &[F], acts: [&mut [F]; 5], cn: &mut [F], hn: &mut [F]) {
        let h = cp.len();
        let [gi, gf, gg, go] = g;
        let (gi, gf, gg, go) = (&gi[..h], &gf[..h], &gg[..h], &go[..h]);
        let [si, sf, tg, so, tc] = acts;
        let (si, sf, tg, so, tc) = (&mut si[..h], &mut sf[..h], &mut tg[..h], &mut so[..h], &mut tc[..h]);
        let (cn, hn) = (&mut cn[..h], &mut hn[..h]);
        for j in 0..h {
            si[j] = sigmoid(gi[j]);
            sf[j] = sigmoid(gf[j]);
            tg[j] = tanh(gg[j]);
            so[j] = sigmoid(go[j]);
        }
        for j in 0..h {
            let c1 = sf[j] * cp[j] + si[j] * tg[j];
            cn[j] = c1;
            tc[j] = tanh(c1);
            hn[j] = so[j] * tc[j];
        }
    }
}

multiversion! {
    /// One row of the LSTM backward from the saved activations (see [`lstm_row_forward`]): the
    /// pre-activation gradients `d` (i, f, g, o) and the previous cell's `dcp`, from `dh`, `dc`.
    pub fn lstm_row_backward<F: Float, const FMA: bool>(
        acts: [&[F]; 5],
        cp: &[F],
        dh: &[F],
        dc: &[F],
        d: [&mut [F]; 4],
        dcp: &mut [F],
    ) {
        let h = cp.len();
        let one = F::one();
        let [si, sf, tg, so, tc] = acts;
        let (si, sf, tg, so, tc) = (&si[..h], &sf[..h], &tg[..h], &so[..h], &tc[..h]);
        let (dh, dc, dcp) = (&dh[..h], &dc[..h], &mut dcp[..h]);
        let [di, df, dg, d_o] = d;
        let (di, df, dg, d_o) = (&mut di[..h], &mut df[..h], &mut dg[..h], &mut d_o[..h]);
        for j in 0..h {
            let dct = dc[j] + dh[j] * so[j] * (one - tc[j] * tc[j]);
            di[j] = dct * tg[j] * si[j] * (one - si[j]);
            df[j] = dct * cp[j] * sf[j] * (one - sf[j]);
            dg[j] = dct * si[j] * (one - tg[j] * tg[j]);
            d_o[j] = dh[j] * tc[j] * so[j] * (one - so[j]);
            dcp[j] = dct * sf[j];
        }
    }
}

multiversion! {
    /// One row of the GRU forward from the input part `x` and the recurrent part `y` of the
    /// pre-activations (r, z, n) and the previous state `hp`:
    /// `h' = n + z ⊙ (h − n)` with `n = tanh(xn + r ⊙ yn)`.
    pub fn gru_row_forward<F: Float, const FMA: bool>(x: [&[F]; 3], y: [&[F]; 3], hp: &[F], out: &mut [F]) {
        let h = hp.len();
        let ([xr, xz, xn], [yr, yz, yn]) = (x, y);
        let (xr, xz, xn, yr, yz, yn) = (&xr[..h], &xz[..h], &xn[..h], &yr[..h], &yz[..h], &yn[..h]);
        let out = &mut out[..h];
        for j in 0..h {
            let rg = sigmoid(xr[j] + yr[j]);
            let z = sigmoid(xz[j] + yz[j]);
            let n = tanh(xn[j] + rg * yn[j]);
            out[j] = n + z * (hp[j] - n);
        }
    }
}

multiversion! {
    /// One row of the GRU backward: `x`, `y` are the row's `[3H]` projections; writes the
    /// gradients of both (`dx`, `dy`) and of the previous state's direct path (`dh`).
    pub fn gru_row_backward<F: Float, const FMA: bool>(
        x: &[F],
        y: &[F],
        hp: &[F],
        g: &[F],
        dx: &mut [F],
        dy: &mut [F],
        dh: &mut [F],
    ) {
        let h = hp.len();
        let one = F::one();
        let (xr, xz, xn) = (&x[..h], &x[h..2 * h], &x[2 * h..3 * h]);
        let (yr, yz, yn) = (&y[..h], &y[h..2 * h], &y[2 * h..3 * h]);
        let (dxr, rest) = dx.split_at_mut(h);
        let (dxz, dxn) = rest.split_at_mut(h);
        let (dyr, rest) = dy.split_at_mut(h);
        let (dyz, dyn_) = rest.split_at_mut(h);
        let (dxr, dxz, dxn, dyr, dyz, dyn_) =
            (&mut dxr[..h], &mut dxz[..h], &mut dxn[..h], &mut dyr[..h], &mut dyz[..h], &mut dyn_[..h]);
        let (g, dh) = (&g[..h], &mut dh[..h]);
        for j in 0..h {
            let rg = sigmoid(xr[j] + yr[j]);
            let z = sigmoid(xz[j] + yz[j]);
            let n = tanh(xn[j] + rg * yn[j]);
            let dn = g[j] * (one - z) * (one - n * n);
            let dz = g[j] * (hp[j] - n) * z * (one - z);
            let dr = dn * yn[j] * rg * (one - rg);
            dxr[j] = dr;
            dxz[j] = dz;
            dxn[j] = dn;
            dyr[j] = dr;
            dyz[j] = dz;
            dyn_[j] = dn * rg;
            dh[j] = g[j] * z;
        }
    }
}

multiversion! {
    /// `h = act(h)` in place.
    pub fn activate<F: Float, const FMA: bool>(act: RnnActivation, h: &mut [F]) {
        match act {
            RnnActivation::Tanh => h.iter_mut().for_each(|v| *v = tanh(*v)),
            RnnActivation::Relu => h.iter_mut().for_each(|v| {
                // NaN stays NaN (as PyTorch's relu).
                if *v < F::zero() {
                    *v = F::zero()
                }
            }),
        }
    }
}

multiversion! {
    /// `d ⊙= act'(y)`, from the outputs `y`.
    pub fn scale_by_derivative<F: Float, const FMA: bool>(act: RnnActivation, d: &mut [F], y: &[F]) {
        let n = d.len().min(y.len());
        let (d, y) = (&mut d[..n], &y[..n]);
        for j in 0..n {
            d[j] *= act.derivative(y[j]);
        }
    }
}

/// The number of values [`slstm_row_forward`] saves per unit for the backward pass.
pub const SLSTM_SAVED: usize = 4;

/// `e` (≥ 0 or NaN) with its sign bit set when the `max` took `ĩ`: the saved form of `i'` and
/// `f'`, one of which is 1 and the other `e`. The sign bit is set on `|e|`, so it holds for
/// `e = 0` (−0) and for a NaN `e` as well.
#[inline(always)]
fn signed_gate<F: Float>(e: F, take_a: bool) -> F {
    let e = e.abs();
    if take_a {
        e
    } else {
        -e
    }
}

/// `(i', f', a ≥ ĩ)` from [`signed_gate`]'s value.
#[inline(always)]
fn gates_of<F: Float>(s: F) -> (F, F, bool) {
    let (e, take_a) = (s.abs(), !s.is_sign_negative());
    match take_a {
        true => (e, F::one(), true),
        false => (F::one(), e, false),
    }
}

multiversion! {
    /// One row of the sLSTM forward (xLSTM's scalar-memory cell) from the pre-activations `g`
    /// (ĩ, f̃, z̃, õ) and the previous state `prev` (`c`, `n`, `m`):
    ///
    /// ```text
    /// a = logsigmoid(f̃) + m,  m' = max(a, ĩ)   (a where a ≥ ĩ or a is NaN, as `Maximum`)
    /// i' = exp(ĩ − m'),  f' = exp(a − m'),  c' = f' c + i' tanh z̃,  n' = f' n + i',
    /// h' = σ(õ) ⊙ c' / n'
    /// ```
    ///
    /// into `out` (`h'`, `c'`, `n'`, `m'`), and saves `[±e, tanh z̃, σ(õ), σ(−f̃)]`
    /// ([`SLSTM_SAVED`] blocks of the row's length) in `saved` for [`slstm_row_backward`]:
    /// one of `i'`, `f'` is `exp(0) = 1` (exactly, in `exp` too) and the other is
    /// `e = exp(−|a − ĩ|)`, saved as `|e|` where the `max` took `a` and as `−|e|` where it took
    /// `ĩ` (the sign bit says which, for 0 and NaN too): a third less memory written here and
    /// read back than `i'`, `f'` and the choice apiece. `exp` and `logsigmoid` are
    /// [`super::activations`]' (the standard library's in `f64`); `logsigmoid(f̃)` and `σ(−f̃)`
    /// share one `exp`.
    pub fn slstm_row_forward<F: Float, const FMA: bool>(g: [&[F]; 4], prev: [&[F]; 3], saved: &mut [F], out: [&mut [F]; 4]) {
        let [cp, np, mp] = prev;
        let h = cp.len();
        let (np, mp) = (&np[..h], &mp[..h]);
        let [gi, gf, gz, go] = g;
        let (gi, gf, gz, go) = (&gi[..h], &gf[..h], &gz[..h], &go[..h]);
        let (es, rest) = saved[..SLSTM_SAVED * h].split_at_mut(h);
        let (tz, rest) = rest.split_at_mut(h);
        let (so, sf) = rest.split_at_mut(h);
        let [hn, cn, nn, mn] = out;
        let (hn, cn, nn, mn) = (&mut hn[..h], &mut cn[..h], &mut nn[..h], &mut mn[..h]);
        for j in 0..h {
            let (log_f, sig_neg_f) = log_sigmoid_and_complement(gf[j]);
            let a = log_f + mp[j];
            let take_a = a >= gi[j] || a.is_nan();
            es[j] = signed_gate(exp(-(a - gi[j]).abs()), take_a);
            sf[j] = sig_neg_f;
            mn[j] = if take_a { a } else { gi[j] };
        }
        for j in 0..h {
            let (i, f, _) = gates_of(es[j]);
            tz[j] = tanh(gz[j]);
            so[j] = sigmoid(go[j]);
            let c = f * cp[j] + i * tz[j];
            let n = f * np[j] + i;
            cn[j] = c;
            nn[j] = n;
            hn[j] = so[j] * (c / n);
        }
    }
}

multiversion! {
    /// One row of the sLSTM backward (see [`slstm_row_forward`]): from what the forward saved,
    /// the previous state `prev` (`c`, `n`), the step's `c'`, `n'` (`now`) and the incoming
    /// gradients `dout` of `h'`, `c'`, `n'`, `m'`, the pre-activation gradients `d` (ĩ, f̃, z̃,
    /// õ) and those of the previous state `dprev` (`c`, `n`, `m`). The `max` routes its
    /// gradient to the argument it took.
    pub fn slstm_row_backward<F: Float, const FMA: bool>(
        saved: &[F],
        prev: [&[F]; 2],
        now: [&[F]; 2],
        dout: [&[F]; 4],
        d: [&mut [F]; 4],
        dprev: [&mut [F]; 3],
    ) {
        let [cp, np] = prev;
        let h = cp.len();
        let one = F::one();
        let np = &np[..h];
        let (c, n) = (&now[0][..h], &now[1][..h]);
        let saved = &saved[..SLSTM_SAVED * h];
        let (es, tz) = (&saved[..h], &saved[h..2 * h]);
        let (so, sf) = (&saved[2 * h..3 * h], &saved[3 * h..]);
        let [dh, dc, dn, dm] = dout;
        let (dh, dc, dn, dm) = (&dh[..h], &dc[..h], &dn[..h], &dm[..h]);
        let [di, df, dz, d_o] = d;
        let (di, df, dz, d_o) = (&mut di[..h], &mut df[..h], &mut dz[..h], &mut d_o[..h]);
        let [dcp, dnp, dmp] = dprev;
        let (dcp, dnp, dmp) = (&mut dcp[..h], &mut dnp[..h], &mut dmp[..h]);
        for j in 0..h {
            let (ig, fg, took_a) = gates_of(es[j]);
            let r = c[j] / n[j];
            d_o[j] = dh[j] * r * (so[j] * (one - so[j]));
            let dct = dc[j] + dh[j] * so[j] / n[j];
            let dnt = dn[j] - dh[j] * so[j] * r / n[j];
            dz[j] = dct * ig * (one - tz[j] * tz[j]);
            // Through i' = exp(ĩ − m') and f' = exp(a − m').
            let gi = (dct * tz[j] + dnt) * ig;
            let ga = (dct * cp[j] + dnt * np[j]) * fg;
            dcp[j] = dct * fg;
            dnp[j] = dnt * fg;
            // m' = max(a, ĩ): its whole gradient to the argument taken.
            let dmt = dm[j] - gi - ga;
            let (da, dii) = if took_a { (ga + dmt, gi) } else { (ga, gi + dmt) };
            di[j] = dii;
            df[j] = da * sf[j];
            dmp[j] = da;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::activations::log_sigmoid;

    /// The sLSTM forward's shared `exp`s give what the direct formulas give: `i' = exp(ĩ − m')`
    /// and `f' = exp(a − m')` bit for bit (one of them is `exp(0) = 1`), `m'` the `max`; and an
    /// infinite `ĩ` gives `i' = 1`, `f' = 0` (where the direct `exp(∞ − ∞)` is NaN).
    #[test]
    fn slstm_gates_match_the_direct_formulas() {
        let h = 37;
        let v = |s: f32| {
            (0..h)
                .map(|j| (j as f32 * 0.61 + s).sin() * 9.0)
                .collect::<Vec<f32>>()
        };
        let (gi, gf, gz, go) = (v(0.1), v(1.3), v(2.2), v(3.7));
        let (cp, np, mp) = (
            v(0.4),
            v(0.9).iter().map(|x| x.abs() + 0.5).collect::<Vec<_>>(),
            v(5.0),
        );
        let mut saved = vec![0f32; SLSTM_SAVED * h];
        let mut out = [vec![0f32; h], vec![0f32; h], vec![0f32; h], vec![0f32; h]];
        {
            let [o0, o1, o2, o3] = &mut out;
            slstm_row_forward(
                [&gi, &gf, &gz, &go],
                [&cp, &np, &mp],
                &mut saved,
                [o0, o1, o2, o3],
            );
        }
        let took: Vec<bool> = saved[..h].iter().map(|&s| gates_of(s).2).collect();
        assert!(
            took.contains(&true) && took.contains(&false),
            "both arguments of the max are taken"
        );
        for j in 0..h {
            let a = log_sigmoid(gf[j]) + mp[j];
            let m = if a >= gi[j] { a } else { gi[j] };
            let (i, f, took_a) = gates_of(saved[j]);
            assert_eq!(took_a, a >= gi[j], "the max's choice at {j}");
            assert_eq!(out[3][j].to_bits(), m.to_bits(), "m' at {j}");
            assert_eq!(i.to_bits(), exp(gi[j] - m).to_bits(), "i' at {j}");
            assert_eq!(f.to_bits(), exp(a - m).to_bits(), "f' at {j}");
        }
        let inf = [f32::INFINITY; 1];
        let mut saved = vec![0f32; SLSTM_SAVED];
        let mut o = [[0f32; 1]; 4];
        let [o0, o1, o2, o3] = &mut o;
        slstm_row_forward(
            [&inf, &[0.5], &[0.3], &[0.2]],
            [&[1.0], &[2.0], &[0.0]],
            &mut saved,
            [o0, o1, o2, o3],
        );
        let (i, f, took_a) = gates_of(saved[0]);
        assert_eq!((i, f, took_a), (1.0, 0.0, false), "i', f' for ĩ = ∞");
        assert_eq!(o[2][0], 1.0, "n' = 0·n + 1");
        assert!(o[0][0].is_finite() && o[1][0].is_finite());
    }
}
