//! Weights used at every step of a recurrence (`h · Wᵀ`, `h · U` and `linear_add(h, V, x)`, the
//! packed path in `f32`):
//! their gradients, which a plain reverse pass sums in one product over all the steps' rows
//! (`Tape::defer_outer`), equal the per-step products of a recorded (`create_graph`) pass, to
//! 1e-12 in `f64`, and central differences of the loss.

use eddy_ops::linear_add;
use eddy_ops::prelude::*;
use eddy_tape::{Float, GradOptions, Param, Result, Tape, Var};
use ndarray::{Array2, ArrayD};

fn m<F: Float>(r: usize, c: usize, seed: f64) -> ArrayD<F> {
    Array2::from_shape_fn((r, c), |(i, j)| {
        F::of(0.5 * ((i * 7 + j * 3) as f64 * 0.37 + seed).sin())
    })
    .into_dyn()
}

/// The seeds of `W`, `U` and `V`.
const SEEDS: [f64; 3] = [0.2, 0.4, 0.6];

/// `h ← tanh(linear_add(h, V, x_t) + h · Wᵀ + h · U)` (`x_t + h · Vᵀ` in one op) over five
/// steps of `rows` rows, `Σ h²` at the end; `p` is `[W, U, V]`.
fn loss<F: Float>(tape: &Tape<F>, p: &[Param<F>; 3], rows: usize) -> Result<Var<F>> {
    let [wv, uv, vv] = [0, 1, 2].map(|i| tape.param(&p[i]));
    let mut h = tape.input(m(rows, 6, 0.9)).tanh()?;
    for t in 0..5 {
        let x = tape.input(m(rows, 6, t as f64));
        let xv = linear_add(&h, &vv, None, Some(&x))?;
        h = ((&xv + &h.matmul_t(&wv)?)? + h.matmul(&uv)?)?.tanh()?;
    }
    (&h * &h)?.sum_all()
}

fn params<F: Float>() -> [Param<F>; 3] {
    SEEDS.map(|seed| Param::new("p", m::<F>(6, 6, seed)))
}

/// The gradients of `W`, `U` and `V` from a plain pass (deferred) and a recorded pass (per
/// step).
fn both<F: Float>(rows: usize) -> [[ArrayD<F>; 3]; 2] {
    let p = params::<F>();
    [GradOptions::default(), GradOptions::create_graph()].map(|options| {
        let tape = Tape::new();
        let l = loss(&tape, &p, rows).unwrap();
        let [wv, uv, vv] = [0, 1, 2].map(|i| tape.param(&p[i]));
        let g = tape.grad(&[&l], None, &[&wv, &uv, &vv], options).unwrap();
        let g: Vec<_> = g.into_iter().map(|g| g.unwrap().value().clone()).collect();
        g.try_into().unwrap()
    })
}

fn close<F: Float>(a: &ArrayD<F>, b: &ArrayD<F>, tol: f64) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (*x - *y).as_f64().abs() <= tol * (1.0 + y.as_f64().abs()))
}

#[test]
fn deferred_weight_gradients_equal_the_per_step_products_in_f64() {
    for rows in [1, 3, 9] {
        let [deferred, per_step] = both::<f64>(rows);
        for (a, b) in deferred.iter().zip(&per_step) {
            assert!(close(a, b, 1e-12), "{rows} rows");
        }
    }
}

#[test]
fn deferred_weight_gradients_equal_the_per_step_products_on_the_packed_path_in_f32() {
    // 9 rows: more than the row kernels' 4, so `f32` takes the packed path where it runs.
    let [deferred, per_step] = both::<f32>(9);
    for (a, b) in deferred.iter().zip(&per_step) {
        assert!(close(a, b, 1e-5));
    }
}

#[test]
fn deferred_weight_gradients_match_central_differences() {
    let [grads, _] = both::<f64>(3);
    let at = |p: &[Param<f64>; 3]| loss(&Tape::new(), p, 3).unwrap().item().unwrap();
    let eps = 1e-6;
    for (which, grad) in grads.iter().enumerate() {
        for idx in [[0, 0], [2, 5], [5, 1], [3, 3]] {
            let nudged = |d: f64| {
                let mut p = params::<f64>();
                let mut v = m::<f64>(6, 6, SEEDS[which]);
                v[&idx[..]] += d;
                p[which] = Param::new("p", v);
                at(&p)
            };
            let numeric = (nudged(eps) - nudged(-eps)) / (2.0 * eps);
            let analytic = grad[&idx[..]];
            assert!(
                (numeric - analytic).abs() <= 1e-6 * (1.0 + analytic.abs()),
                "{which} {idx:?}: {numeric} vs {analytic}"
            );
        }
    }
}

/// A long recurrence (`h ← tanh((h · Wᵀ) · P + x_t)`, 50 steps of 32 rows, `W` `[160, 40]`,
/// the loss `Σₜ Σ hₜ²`):
/// `W`'s deferred gradient sums 1 600 rows, which in `f32` at the AVX-512 level the deep
/// kernel reads step by step where they are (`eddy_ops::kernels::deep::mul_tn_rows`), with no
/// stacked copy; it equals the recorded pass's per-step products, on 1 and 2 threads.
#[test]
fn a_long_recurrences_deferred_weight_gradient_equals_the_per_step_products_in_f32() {
    let (steps, rows, hidden, out) = (50, 32, 40, 160);
    let w = Param::new("w", m::<f32>(out, hidden, 0.3).mapv(|v| v * 0.3));
    let run = |options: GradOptions| {
        let tape = Tape::new();
        let wv = tape.param(&w);
        let p = tape.input(m::<f32>(out, hidden, 0.7).mapv(|v| v * 0.2));
        let mut h = tape.input(m(rows, hidden, 0.1)).tanh().unwrap();
        let mut l = tape.constant(ArrayD::zeros(vec![]));
        for t in 0..steps {
            let x = tape.input(m(rows, hidden, t as f64));
            h = (&h.matmul_t(&wv).unwrap().matmul(&p).unwrap() + &x)
                .unwrap()
                .tanh()
                .unwrap();
            // Every step's state in the loss: every step's rows carry a gradient.
            l = (&l + &(&h * &h).unwrap().sum_all().unwrap()).unwrap();
        }
        let g = tape.grad(&[&l], None, &[&wv], options).unwrap();
        g[0].as_ref().unwrap().value().clone()
    };
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (deferred, per_step) =
            pool.install(|| (run(GradOptions::default()), run(GradOptions::create_graph())));
        let smallest = deferred.iter().fold(f32::INFINITY, |s, v| s.min(v.abs()));
        assert!(smallest > 1e-3, "a gradient ~0: {smallest}");
        assert!(close(&deferred, &per_step, 1e-4), "{threads} threads");
    }
}
