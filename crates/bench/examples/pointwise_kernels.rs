//! The `pointwise` loops alone, against the built-in LSTM's gate loops, at W7's size
//! (`[64, 256]` units, in cache): µs per call, best of 200. The figures behind the block widths
//! in `eddy_ops::kernels::pointwise` (run at each level with `EDDY_KERNELS`):
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release -p eddy-bench --example pointwise_kernels
//! ```

use eddy_ops::kernels::gates::{lstm_row_backward, lstm_row_forward};
use eddy_ops::kernels::pointwise::{forward, memo_count, vjp, Pointwise, Real, Source, Target};
use std::time::Instant;
struct LstmGates;
impl Pointwise<5, 2> for LstmGates {
    #[inline(always)]
    fn eval<R: Real>(&self, [i, f, g, o, c]: [R; 5]) -> [R; 2] {
        let c = f.sigmoid() * c + i.sigmoid() * g.tanh();
        [o.sigmoid() * c.tanh(), c]
    }
}
fn best(mut f: impl FnMut()) -> f64 {
    let mut b = f64::MAX;
    for _ in 0..200 {
        let t = Instant::now();
        f();
        b = b.min(t.elapsed().as_secs_f64() * 1e6);
    }
    b
}
fn main() {
    let (rows, n) = (64usize, 256usize);
    let gates: Vec<f32> = (0..rows * 4 * n)
        .map(|k| ((k as f32) * 0.37).sin() * 2.0)
        .collect();
    let c: Vec<f32> = (0..rows * n).map(|k| ((k as f32) * 0.11).cos()).collect();
    let dh = c.clone();
    let dc = c.clone();
    let (mut h1, mut c1) = (vec![0f32; rows * n], vec![0f32; rows * n]);
    let src = |i: usize| Source {
        data: &gates[i * n..],
        stride: 4 * n,
    };
    let x = [
        src(0),
        src(1),
        src(2),
        src(3),
        Source {
            data: &c[..],
            stride: n,
        },
    ];
    let tf0 = best(|| forward(&LstmGates, rows, n, x, [&mut h1, &mut c1], None));
    let mut saved = vec![0f32; rows * memo_count(&LstmGates) * n];
    let tf = best(|| forward(&LstmGates, rows, n, x, [&mut h1, &mut c1], Some(&mut saved)));
    let mut dg = vec![0f32; rows * 4 * n];
    let mut dcp = vec![0f32; rows * n];
    let tb = best(|| {
        let mut t = Target::parts(&mut dg, rows, 4, n);
        t.extend(Target::parts(&mut dcp, rows, 1, n));
        let t: [Target<f32>; 5] = t.try_into().ok().unwrap();
        vjp(
            &LstmGates,
            rows,
            n,
            x,
            [Source { data: &dh, stride: n }, Source { data: &dc, stride: n }],
            &saved,
            t,
        )
    });
    let mut acts = vec![0f32; rows * 5 * n];
    let tf2 = best(|| {
        for r in 0..rows {
            let g = &gates[r * 4 * n..(r + 1) * 4 * n];
            let a = &mut acts[r * 5 * n..(r + 1) * 5 * n];
            let (si, rest) = a.split_at_mut(n);
            let (sf, rest) = rest.split_at_mut(n);
            let (tg, rest) = rest.split_at_mut(n);
            let (so, tc) = rest.split_at_mut(n);
            lstm_row_forward(
                [&g[..n], &g[n..2 * n], &g[2 * n..3 * n], &g[3 * n..]],
                &c[r * n..(r + 1) * n],
                [si, sf, tg, so, tc],
                &mut c1[r * n..(r + 1) * n],
                &mut h1[r * n..(r + 1) * n],
            );
        }
    });
    let tb2 = best(|| {
        for r in 0..rows {
            let a = &acts[r * 5 * n..(r + 1) * 5 * n];
            let d = &mut dg[r * 4 * n..(r + 1) * 4 * n];
            let (di, rest) = d.split_at_mut(n);
            let (df, rest) = rest.split_at_mut(n);
            let (dgg, d_o) = rest.split_at_mut(n);
            lstm_row_backward(
                [
                    &a[..n],
                    &a[n..2 * n],
                    &a[2 * n..3 * n],
                    &a[3 * n..4 * n],
                    &a[4 * n..],
                ],
                &c[r * n..(r + 1) * n],
                &dh[r * n..(r + 1) * n],
                &dc[r * n..(r + 1) * n],
                [di, df, dgg, d_o],
                &mut dcp[r * n..(r + 1) * n],
            );
        }
    });
    println!(
        "level {:?}: pointwise forward {tf0:.1} µs, recorded (saving its function values) {tf:.1} µs, vjp {tb:.1} µs; built-in LSTM forward {tf2:.1} µs, backward {tb2:.1} µs",
        eddy_ops::kernels::level()
    );
}
