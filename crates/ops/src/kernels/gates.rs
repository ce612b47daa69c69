//! The fused pointwise loops of the recurrent cells, one batch row at a time, each compiled per
//! instruction set (`multiversion!`): the LSTM and GRU gate math forward and backward, the
//! Elman activation, and the small row helpers the sequence ops share. Each slice is a
//! separate argument, so the compiler knows they do not alias and vectorises the loops.

use super::activations::{sigmoid, tanh};
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
