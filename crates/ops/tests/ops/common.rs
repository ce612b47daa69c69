//! Helpers shared by the gradient-check property tests.
#![allow(dead_code)]

use eddy_tape::strategies::{array, array_of, shape, shape_of_rank};
use eddy_tape::{gradcheck, gradgradcheck, GradcheckOptions, Result, Tape, Var};
use ndarray::ArrayD;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Cases per property: enough to vary shapes, few enough that the suite stays fast.
pub fn config() -> ProptestConfig {
    ProptestConfig::with_cases(16)
}

/// Runs `gradcheck` and `gradgradcheck` of `f` at `inputs`, naming the check that failed.
pub fn check<Fun>(f: Fun, inputs: &[ArrayD<f64>]) -> std::result::Result<(), TestCaseError>
where
    Fun: Fn(&Tape<f64>, &[Var<f64>]) -> Result<Var<f64>>,
{
    let o = GradcheckOptions::default();
    gradcheck(&f, inputs, &o).map_err(|e| TestCaseError::fail(format!("first order: {e}")))?;
    gradgradcheck(&f, inputs, &o)
        .map_err(|e| TestCaseError::fail(format!("second order (gradgradcheck): {e}")))?;
    Ok(())
}

/// An array of a random shape (rank `0..=3`, dimensions `1..=3`) with values in `±[0.1, 2]`.
pub fn any_array() -> impl Strategy<Value = ArrayD<f64>> {
    shape(3, 3).prop_flat_map(array)
}

/// An array of a random shape with elements from `elem`.
/// `elem` makes the element strategy (eddy's value strategies are not `Clone`).
pub fn any_array_of<S>(elem: fn() -> S) -> impl Strategy<Value = ArrayD<f64>>
where
    S: Strategy<Value = f64> + 'static,
{
    shape(3, 3).prop_flat_map(move |s| array_of(s, elem()))
}

/// An array of rank `1..=3` and a valid axis of it, possibly negative.
pub fn array_and_axis() -> impl Strategy<Value = (ArrayD<f64>, isize)> {
    (1usize..=3)
        .prop_flat_map(|r| shape_of_rank(r, 3))
        .prop_flat_map(|s| {
            let r = s.len() as isize;
            (array(s), -r..r)
        })
}

/// An array with distinct elements (at least 0.25 apart), so `max` has no ties; and an axis.
pub fn distinct_array_and_axis() -> impl Strategy<Value = (ArrayD<f64>, isize)> {
    (1usize..=3)
        .prop_flat_map(|r| shape_of_rank(r, 3))
        .prop_flat_map(|s| {
            let n: usize = s.iter().product();
            let r = s.len() as isize;
            let values: Vec<f64> = (0..n).map(|k| k as f64 * 0.25 - n as f64 / 8.0).collect();
            (Just(s), Just(values).prop_shuffle(), -r..r)
        })
        .prop_map(|(s, v, axis)| (ArrayD::from_shape_vec(s, v).expect("product"), axis))
}
