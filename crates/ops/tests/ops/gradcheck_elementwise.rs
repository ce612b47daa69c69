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
