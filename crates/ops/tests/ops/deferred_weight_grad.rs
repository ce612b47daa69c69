//! Weights used at every step of a recurrence (`h · Wᵀ` and `h · U`, the packed path in `f32`):
//! their gradients, which a plain reverse pass sums in one product over all the steps' rows
//! (`Tape::defer_outer`), equal the per-step products of a recorded (`create_graph`) pass, to
//! 1e-12 in `f64`, and central differences of the loss.

use eddy_ops::prelude::*;
use eddy_tape::{Float, GradOptions, Param, Result, Tape, Var};
use ndarray::{Array2, ArrayD};

fn m<F: Float>(r: usize, c: usize, seed: f64) -> ArrayD<F> {
    Array2::from_shape_fn((r, c), |(i, j)| {
        F::of(0.5 * ((i * 7 + j * 3) as f64 * 0.37 + seed).sin())
    })
    .into_dyn()
}

/// `h ← tanh(x_t + h · Wᵀ + h · U)` over five steps of `rows` rows, `Σ h²` at the end.
fn loss<F: Float>(tape: &Tape<F>, w: &Param<F>, u: &Param<F>, rows: usize) -> Result<Var<F>> {
    let (wv, uv) = (tape.param(w), tape.param(u));
    let mut h = tape.input(m(rows, 6, 0.9)).tanh()?;
    for t in 0..5 {
        let x = tape.input(m(rows, 6, t as f64));
        h = ((&x + &h.matmul_t(&wv)?)? + h.matmul(&uv)?)?.tanh()?;
    }
    (&h * &h)?.sum_all()
}

/// The gradients of `W` and `U` from a plain pass (deferred) and a recorded pass (per step).
fn both<F: Float>(rows: usize) -> [[ArrayD<F>; 2]; 2] {
    let w = Param::new("w", m::<F>(6, 6, 0.2));
    let u = Param::new("u", m::<F>(6, 6, 0.4));
    [GradOptions::default(), GradOptions::create_graph()].map(|options| {
        let tape = Tape::new();
        let l = loss(&tape, &w, &u, rows).unwrap();
        let (wv, uv) = (tape.param(&w), tape.param(&u));
        let g = tape.grad(&[&l], None, &[&wv, &uv], options).unwrap();
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
    let [[dw, du], _] = both::<f64>(3);
    let u = Param::new("u", m::<f64>(6, 6, 0.4));
    let w = Param::new("w", m::<f64>(6, 6, 0.2));
    let at = |w: &Param<f64>, u: &Param<f64>| loss(&Tape::new(), w, u, 3).unwrap().item().unwrap();
    let eps = 1e-6;
    for (which, grad) in [(0, &dw), (1, &du)] {
        for idx in [[0, 0], [2, 5], [5, 1], [3, 3]] {
            let nudged = |d: f64| {
                let base = if which == 0 {
                    m::<f64>(6, 6, 0.2)
                } else {
                    m::<f64>(6, 6, 0.4)
                };
                let mut v = base;
                v[&idx[..]] += d;
                let p = Param::new("p", v);
                if which == 0 {
                    at(&p, &u)
                } else {
                    at(&w, &p)
                }
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
