//! Helpers shared by the gradient-check property tests.
#![allow(dead_code)]

use eddy_ops::VarExt;
use eddy_tape::strategies::{array, array_of, shape, shape_of_rank};
use eddy_tape::{gradcheck, gradgradcheck, Float, GradOptions, GradcheckOptions, Result, Tape, Var};
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

/// `y · tanh(y)`: nonlinear, so that second derivatives flow through the op under test.
pub fn bend<F: Float>(y: &Var<F>) -> Result<Var<F>> {
    y * &y.tanh()?
}

/// The value of `f` at `xs`, then the gradient of `loss(f(xs))` with respect to each input
/// (first order, or under `create_graph`), as plain arrays.
pub fn values_and_grads<F: Float>(
    xs: &[ArrayD<F>],
    f: impl Fn(&[Var<F>]) -> Result<Var<F>>,
    loss: impl Fn(&Var<F>) -> Result<Var<F>>,
    options: GradOptions,
) -> Result<Vec<ArrayD<F>>> {
    let tape = Tape::new();
    let vars: Vec<Var<F>> = xs.iter().map(|x| tape.input(x.clone())).collect();
    let y = f(&vars)?;
    let loss = loss(&y)?;
    let refs: Vec<&Var<F>> = vars.iter().collect();
    let gs = tape.grad(&[&loss], None, &refs, options)?;
    let mut out = vec![y.value().clone()];
    out.extend(gs.into_iter().map(|g| g.expect("a gradient").value().clone()));
    Ok(out)
}

/// Asserts that `got` and `want` hold as many arrays, of the same shapes, whose elements agree
/// to `tol` relative to `1 + |want|`; `what` names the case in the message.
pub fn assert_close<F: Float>(got: &[ArrayD<F>], want: &[ArrayD<F>], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: how many arrays");
    for (k, (x, y)) in got.iter().zip(want).enumerate() {
        assert_eq!(x.shape(), y.shape(), "{what}: array {k}");
        for (p, q) in x.iter().zip(y) {
            let (p, q) = (p.as_f64(), q.as_f64());
            assert!(
                (p - q).abs() <= tol * (1.0 + q.abs()),
                "{what}: array {k}: {p} vs {q}"
            );
        }
    }
}

/// Asserts that the op under test (`op`) and a reference for it (`reference`, such as the loop
/// of per-step ops it replaces) give the same value and the same gradient of `Σ loss(·)` for
/// every input, to `1e-12`, both first order (the op's fast backward) and under `create_graph`
/// (its recorded rule); `what` names the case.
pub fn assert_same_as_reference(
    xs: &[ArrayD<f64>],
    op: impl Fn(&[Var<f64>]) -> Result<Var<f64>>,
    reference: impl Fn(&[Var<f64>]) -> Result<Var<f64>>,
    loss: impl Fn(&Var<f64>) -> Result<Var<f64>>,
    what: &str,
) -> Result<()> {
    for (options, order) in [
        (GradOptions::default(), "first order"),
        (GradOptions::create_graph(), "create_graph"),
    ] {
        let want = values_and_grads(xs, &reference, &loss, options)?;
        let got = values_and_grads(xs, &op, &loss, options)?;
        assert_close(&got, &want, 1e-12, &format!("{what}, {order}"));
    }
    Ok(())
}
