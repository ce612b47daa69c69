//! gradcheck and gradgradcheck of `+ - * /`, `where_`, `maximum` and `logaddexp` under NumPy
//! broadcasting.

use crate::common::{check, config};
use eddy_ops::prelude::*;
use eddy_tape::strategies::{array, array_of, broadcast_pair, positive, value};
use ndarray::ArrayD;
use proptest::prelude::*;

/// Two arrays whose shapes broadcast together; the second with elements from `elem`.
fn pair<S>(elem: fn() -> S) -> impl Strategy<Value = (ArrayD<f64>, ArrayD<f64>)>
where
    S: Strategy<Value = f64> + 'static,
{
    broadcast_pair(3, 3).prop_flat_map(move |(a, b)| (array(a), array_of(b, elem())))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn add((a, b) in pair(value)) {
        check(|_, v| &v[0] + &v[1], &[a.clone(), b.clone()])?;
        // Through a square, so the second derivative is not zero.
        check(|_, v| { let s = (&v[0] + &v[1])?; &s * &s }, &[a, b])?;
    }

    #[test]
    fn sub((a, b) in pair(value)) {
        check(|_, v| &v[0] - &v[1], &[a.clone(), b.clone()])?;
        check(|_, v| { let s = (&v[0] - &v[1])?; &s * &s }, &[a, b])?;
    }

    #[test]
    fn mul((a, b) in pair(value)) {
        check(|_, v| &v[0] * &v[1], &[a.clone(), b.clone()])?;
        check(|_, v| v[0].mul(&v[1]), &[b, a])?;
    }

    #[test]
    fn div((a, b) in pair(positive)) {
        check(|_, v| &v[0] / &v[1], &[a, b])?;
    }

    #[test]
    fn div_by_the_larger_shape((a, b) in pair(positive)) {
        check(|_, v| &v[1] / &v[0].abs()?.shift(0.5)?, &[a, b])?;
    }

    #[test]
    fn same_input_on_both_sides(a in crate::common::any_array()) {
        check(|_, v| &v[0] * &v[0], std::slice::from_ref(&a))?;
        check(|_, v| &v[0] / &v[0].abs()?.shift(0.5)?, &[a])?;
    }

    #[test]
    fn where_selects_and_broadcasts(
        ((a, b), mask_bits) in pair(value)
            .prop_flat_map(|(a, b)| {
                let n: usize = eddy_tape::broadcast_shapes(a.shape(), b.shape()).unwrap().iter().product();
                (Just((a, b)), prop::collection::vec(any::<bool>(), n))
            })
    ) {
        let shape = eddy_tape::broadcast_shapes(a.shape(), b.shape()).unwrap();
        let mask = ArrayD::from_shape_vec(shape, mask_bits).unwrap();
        check(|_, v| &where_(&mask, &v[0], &v[1])? * &v[0], &[a, b])?;
    }

    #[test]
    fn maximum_away_from_ties((a, b) in pair(value)) {
        // Keep every pair at least 0.05 apart, far beyond the 1e-6 step, so no evaluation
        // crosses a tie; multiply by `a` so the second derivative is not zero.
        let shape = eddy_tape::broadcast_shapes(a.shape(), b.shape()).unwrap();
        let (ab, bb) = (a.broadcast(shape.clone()).unwrap(), b.broadcast(shape).unwrap());
        prop_assume!(ab.iter().zip(bb.iter()).all(|(x, y)| (x - y).abs() > 0.05));
        check(|_, v| &v[0].maximum(&v[1])? * &v[0], &[a, b])?;
    }

    #[test]
    fn logaddexp((a, b) in pair(value)) {
        check(|_, v| v[0].logaddexp(&v[1]), &[a.clone(), b.clone()])?;
        // Ties included: the gradient is smooth there.
        check(|_, v| v[0].logaddexp(&v[0]), &[a])?;
    }
}
