//! gradcheck and gradgradcheck of the reductions (sum, mean, max) and of the normalising
//! activations along an axis (softmax, log_softmax, logsumexp).

use crate::common::{any_array, array_and_axis, check, config, distinct_array_and_axis};
use eddy_ops::prelude::*;
use proptest::prelude::*;

/// `y · tanh(y)`: nonlinear, so that second derivatives flow through the op under test.
fn bend(y: Var<f64>) -> Result<Var<f64>> {
    &y * &y.tanh()?
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sum_all_and_mean_all(x in any_array()) {
        check(|_, v| bend(v[0].sum_all()?), std::slice::from_ref(&x))?;
        check(|_, v| bend(v[0].mean_all()?), &[x])?;
    }

    #[test]
    fn sum_along_an_axis((x, axis) in array_and_axis(), keepdim in any::<bool>()) {
        check(|_, v| bend(v[0].sum(axis, keepdim)?), &[x])?;
    }

    #[test]
    fn mean_along_an_axis((x, axis) in array_and_axis(), keepdim in any::<bool>()) {
        check(|_, v| bend(v[0].mean(axis, keepdim)?), &[x])?;
    }

    #[test]
    fn max_along_an_axis((x, axis) in distinct_array_and_axis(), keepdim in any::<bool>()) {
        check(|_, v| bend(v[0].max(axis, keepdim)?), &[x])?;
    }

    #[test]
    fn softmax((x, axis) in array_and_axis()) {
        check(|_, v| v[0].softmax(axis), &[x])?;
    }

    #[test]
    fn log_softmax((x, axis) in array_and_axis()) {
        check(|_, v| v[0].log_softmax(axis), &[x])?;
    }

    #[test]
    fn logsumexp((x, axis) in array_and_axis(), keepdim in any::<bool>()) {
        check(|_, v| v[0].logsumexp(axis, keepdim), &[x])?;
    }
}
