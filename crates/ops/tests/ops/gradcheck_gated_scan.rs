//! minGRU's gated scan (`eddy_ops::GatedScan`, `gated_scan`): gradcheck and gradgradcheck over
//! random shapes and directions; equal, in values and gradients, to the linear scan of its
//! coefficients (`gated_coefficients`); the fast first-order backward against the recorded
//! rule; and its errors.

use crate::common::{check, config};
use eddy_ops::prelude::Rng;
use eddy_ops::prelude::*;
use eddy_ops::{gated_coefficients, gated_scan, linear_scan};
use eddy_tape::strategies::array_of;
use ndarray::ArrayD;
use proptest::prelude::*;

/// `y · tanh(y)`: nonlinear, so that second derivatives flow through the op under test.
fn bend(y: Var<f64>) -> Result<Var<f64>> {
    &y * &y.tanh()?
}

/// A projection `[T, B, 2H]`, a first state `[B, H]` and an output weight `[T, B, H]`.
fn sequence() -> impl Strategy<Value = (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>)> {
    (1usize..=4, 1usize..=3, 1usize..=3).prop_flat_map(|(t, b, h)| {
        (
            array_of(vec![t, b, 2 * h], -2.0f64..2.0),
            array_of(vec![b, h], -1.5f64..1.5),
            array_of(vec![t, b, h], -1.5f64..1.5),
        )
    })
}

/// The value and the gradients of `Σ w ⊙ scan(kc, h0)` by `run`, first order (fast kernels).
fn value_and_grads(
    kc: &ArrayD<f64>,
    h0: &ArrayD<f64>,
    w: &ArrayD<f64>,
    run: impl Fn(&Var<f64>, &Var<f64>) -> Result<Var<f64>>,
) -> Result<Vec<ArrayD<f64>>> {
    let tape = Tape::new();
    let (kc, h0) = (tape.input(kc.clone()), tape.input(h0.clone()));
    let y = run(&kc, &h0)?;
    let loss = (&y * &tape.constant(w.clone()))?.sum_all()?;
    let grads = tape.grad(&[&loss], None, &[&kc, &h0], GradOptions::default())?;
    let mut out = vec![y.value().clone()];
    out.extend(grads.into_iter().map(|g| g.expect("a gradient").value().clone()));
    Ok(out)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gated_scan_gradcheck_and_gradgradcheck((kc, h0, _) in sequence(), reverse in any::<bool>()) {
        check(|_, v| bend(gated_scan(&v[0], &v[1], reverse)?), &[kc, h0])?;
    }

    /// The fused op is the linear scan of `a = 1 − σ(k)`, `b = σ(k) ⊙ c`: the same states and,
    /// through the fast kernels, the same gradients.
    #[test]
    fn gated_scan_is_the_linear_scan_of_its_coefficients((kc, h0, w) in sequence(), reverse in any::<bool>()) {
        let fused = value_and_grads(&kc, &h0, &w, |kc, h0| gated_scan(kc, h0, reverse))?;
        let composed = value_and_grads(&kc, &h0, &w, |kc, h0| {
            let (a, b) = gated_coefficients(kc)?;
            linear_scan(&a, &b, h0, reverse, None)
        })?;
        for (f, c) in fused.iter().zip(&composed) {
            for (x, y) in f.iter().zip(c) {
                prop_assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "{x} vs {y}");
            }
        }
    }
}

/// The gradients from a first-order pass (the fast kernel) and from a `create_graph` pass (the
/// recorded rule) agree, in f64 and f32, with enough lanes for two threads.
fn fast_and_recorded_rules_agree<F: Float>(tol: f64) -> Result<()> {
    let mut rng = Rng::seed(6);
    let mut arr = |shape: &[usize]| ArrayD::from_shape_simple_fn(shape, || F::of(rng.uniform_in(-2.0, 2.0)));
    for (t, b, h) in [(7, 3, 4), (40, 3, 300)] {
        let xs = [arr(&[t, b, 2 * h]), arr(&[b, h]), arr(&[t, b, h])];
        for reverse in [false, true] {
            let run = |options: GradOptions| -> Result<Vec<ArrayD<F>>> {
                let tape = Tape::new();
                let v: Vec<Var<F>> = xs.iter().map(|x| tape.input(x.clone())).collect();
                let loss = (&gated_scan(&v[0], &v[1], reverse)? * &v[2])?.sum_all()?;
                let gs = tape.grad(&[&loss], None, &[&v[0], &v[1]], options)?;
                Ok(gs
                    .into_iter()
                    .map(|g| g.expect("a gradient").value().clone())
                    .collect())
            };
            let (fast, recorded) = (run(GradOptions::default())?, run(GradOptions::create_graph())?);
            for (f, r) in fast.iter().zip(&recorded) {
                for (x, y) in f.iter().zip(r) {
                    let (x, y) = (x.as_f64(), y.as_f64());
                    assert!(
                        (x - y).abs() <= tol * (1.0 + y.abs()),
                        "T={t} B={b} H={h} reverse={reverse} {}: fast {x} vs recorded {y}",
                        F::NAME
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn gated_scan_fast_and_recorded_rules_agree_in_f64_and_f32() -> Result<()> {
    fast_and_recorded_rules_agree::<f64>(1e-12)?;
    fast_and_recorded_rules_agree::<f32>(1e-5)
}

#[test]
fn gated_scan_shape_errors_name_the_op() {
    let tape = Tape::<f64>::new();
    let z = |s: &[usize]| tape.input(ArrayD::zeros(s.to_vec()));
    for (kc, h0) in [
        (&[3, 2, 8][..], &[2, 3][..]),
        (&[3, 2, 7], &[2, 3]),
        (&[0, 2, 8], &[2, 4]),
        (&[3, 8], &[2, 4]),
    ] {
        let e = gated_scan(&z(kc), &z(h0), false).unwrap_err();
        assert!(
            e.to_string().contains("gated_scan") && e.to_string().contains("[T, B, 2H]"),
            "{e}"
        );
    }
    let e = gated_coefficients(&z(&[3, 2, 7])).unwrap_err();
    assert!(e.to_string().contains("even"), "{e}");
}
