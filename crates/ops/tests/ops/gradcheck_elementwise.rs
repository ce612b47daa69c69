//! gradcheck and gradgradcheck of every elementwise op, negation, the scalar arithmetic and
//! dropout, over random shapes and values.

use crate::common::{any_array, any_array_of, check, config};
use eddy_ops::prelude::*;
use eddy_tape::strategies::positive;
use eddy_tape::Rng;
use proptest::prelude::*;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn neg(x in any_array()) {
        check(|_, v| v[0].neg(), std::slice::from_ref(&x))?;
        check(|_, v| -&v[0], &[x])?;
    }

    #[test]
    fn scale_shift_affine(x in any_array(), s in -2.0f64..2.0, t in -2.0f64..2.0) {
        check(|_, v| v[0].scale(s), std::slice::from_ref(&x))?;
        check(|_, v| v[0].shift(t), std::slice::from_ref(&x))?;
        check(|_, v| v[0].affine(s, t, "affine"), &[x])?;
    }

    #[test]
    fn scalar_operators(x in any_array(), s in 0.5f64..2.0) {
        check(|_, v| &v[0] * 2.0, std::slice::from_ref(&x))?;
        check(|_, v| &v[0] + s, std::slice::from_ref(&x))?;
        check(|_, v| &v[0] - s, std::slice::from_ref(&x))?;
        check(|_, v| &v[0] / s, std::slice::from_ref(&x))?;
        // A scalar chain, squared so that the second derivative is not zero.
        check(|_, v| ((&v[0] * s)? + 1.0)? * &v[0], &[x])?;
    }

    #[test]
    fn tanh(x in any_array()) {
        check(|_, v| v[0].tanh(), &[x])?;
    }

    #[test]
    fn sigmoid(x in any_array_of(|| -6.0f64..6.0)) {
        check(|_, v| v[0].sigmoid(), &[x])?;
    }

    #[test]
    fn relu_away_from_zero(x in any_array()) {
        check(|_, v| v[0].relu(), std::slice::from_ref(&x))?;
        // relu's second derivative is zero; multiply by x so gradgradcheck sees a non-zero one.
        check(|_, v| &v[0].relu()? * &v[0], &[x])?;
    }

    #[test]
    fn exp(x in any_array()) {
        check(|_, v| v[0].exp(), &[x])?;
    }

    #[test]
    fn log(x in any_array_of(positive)) {
        check(|_, v| v[0].log(), &[x])?;
    }

    #[test]
    fn sqrt(x in any_array_of(positive)) {
        check(|_, v| v[0].sqrt(), &[x])?;
    }

    #[test]
    fn powi(x in any_array(), p in any_array_of(positive), n in 0i32..=4, m in -3i32..0) {
        check(|_, v| v[0].powi(n), &[x])?;
        check(|_, v| v[0].powi(m), &[p])?;
    }

    #[test]
    fn softplus(x in any_array_of(|| -6.0f64..6.0)) {
        check(|_, v| v[0].softplus(), &[x])?;
    }

    #[test]
    fn log_sigmoid(x in any_array_of(|| -6.0f64..6.0)) {
        check(|_, v| v[0].log_sigmoid(), &[x])?;
    }

    #[test]
    fn expm1(x in any_array()) {
        check(|_, v| v[0].expm1(), &[x])?;
    }

    #[test]
    fn abs_away_from_zero(x in any_array()) {
        check(|_, v| v[0].abs(), std::slice::from_ref(&x))?;
        check(|_, v| &v[0].abs()? * &v[0], &[x])?;
    }

    #[test]
    fn dropout_with_a_fixed_mask(x in any_array(), p in 0.0f64..0.9, seed in any::<u64>()) {
        // The same seed each call: the mask is the same in every evaluation gradcheck makes.
        let f = |_: &Tape<f64>, v: &[Var<f64>]| {
            let mut rng = Rng::seed(seed);
            &v[0].dropout(p, true, &mut rng)? * &v[0]
        };
        check(f, &[x])?;
    }
}

/// On an array large enough to be split across the rayon pool (`eddy_tape::split`), the
/// elementwise ops, the engine's arithmetic and the reverse pass's gradient sums give the same
/// values and gradients, bit for bit, in pools of 1, 2 and 3 threads; and the split values are
/// the per-element functions' (checked against `f32`'s own at a sample of elements).
#[test]
fn large_elementwise_ops_are_the_same_at_every_thread_count() -> eddy_tape::Result<()> {
    use ndarray::{ArrayD, IxDyn};
    let shape = [60, 1000];
    let x = ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
        ((ix[0] * 1000 + ix[1]) as f32 * 0.37).sin() * 3.0
    });
    let run = |threads: usize| -> eddy_tape::Result<Vec<ArrayD<f32>>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a pool");
        pool.install(|| {
            let tape = Tape::<f32>::new();
            let v = tape.input(x.clone());
            let s = v.sigmoid()?;
            let t = v.tanh()?;
            let e = v.scale(0.5)?.exp()?;
            // `v` reaches the loss along four paths, so its gradient is a sum of four terms.
            let y = (&(&s * &t)? + &(&e / &s.shift(1.0)?)?)?;
            let y = (&y - &v)?;
            let grads = y.sum_all()?.backward()?;
            Ok(vec![
                s.value().clone(),
                t.value().clone(),
                y.value().clone(),
                grads.var(&v).expect("a gradient").clone(),
            ])
        })
    };
    let one = run(1)?;
    assert_eq!(one, run(2)?, "2 threads");
    assert_eq!(one, run(3)?, "3 threads");
    for k in (0..x.len()).step_by(997) {
        let (xv, y) = (x.as_slice().unwrap()[k], one[2].as_slice().unwrap()[k]);
        let (s, t, e) = (1.0 / (1.0 + (-xv).exp()), xv.tanh(), (0.5 * xv).exp());
        let expected = s * t + e / (s + 1.0) - xv;
        assert!(
            (y - expected).abs() <= 1e-5 * (1.0 + expected.abs()),
            "element {k}: {y} against {expected}"
        );
    }
    Ok(())
}
