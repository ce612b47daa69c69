//! gradcheck and gradgradcheck of the shape ops: transpose, permute, reshape, unsqueeze,
//! concat, stack, split, chunk, narrow, select and index_select.
//!
//! Shape ops are linear, so their second derivative is zero; each check multiplies the result
//! by a nonlinear function of itself so that gradgradcheck exercises the recorded backward rule.

use crate::common::{array_and_axis, check, config};
use eddy_ops::prelude::*;
use eddy_tape::strategies::{array, shape_of_rank};
use ndarray::{ArrayD, Dimension};
use proptest::prelude::*;

/// `y · tanh(y)`: nonlinear, so that second derivatives flow through the op under test.
fn bend(y: Var<f64>) -> Result<Var<f64>> {
    &y * &y.tanh()?
}

/// An array of rank 1..=3 and a permutation of its axes.
fn array_and_permutation() -> impl Strategy<Value = (ArrayD<f64>, Vec<usize>)> {
    (1usize..=3)
        .prop_flat_map(|r| shape_of_rank(r, 3))
        .prop_flat_map(|s| {
            let axes: Vec<usize> = (0..s.len()).collect();
            (array(s), Just(axes).prop_shuffle())
        })
}

/// An array of rank 1..=3, an axis, and a `(start, len)` range of that axis.
fn array_axis_range() -> impl Strategy<Value = (ArrayD<f64>, isize, usize, usize)> {
    array_and_axis().prop_flat_map(|(x, axis)| {
        let d = x.shape()[axis.rem_euclid(x.ndim() as isize) as usize];
        (0..d).prop_flat_map(move |start| {
            let x = x.clone();
            (1..=d - start).prop_map(move |len| (x.clone(), axis, start, len))
        })
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn permute((x, axes) in array_and_permutation()) {
        check(|_, v| bend(v[0].permute(&axes)?), &[x])?;
    }

    #[test]
    fn transpose((x, a) in array_and_axis(), b in any::<prop::sample::Index>()) {
        let b = b.index(x.ndim()) as isize;
        check(|_, v| bend(v[0].transpose(a, b)?), &[x])?;
    }

    #[test]
    fn reshape((x, axes) in array_and_permutation()) {
        // Reshape to the shape permuted (same count, different layout), and to a flat vector.
        let target: Vec<usize> = axes.iter().map(|&a| x.shape()[a]).collect();
        check(|_, v| bend(v[0].reshape(&target)?), std::slice::from_ref(&x))?;
        let n = x.len();
        check(|_, v| bend(v[0].reshape(&[n])?), std::slice::from_ref(&x))?;
        check(|_, v| bend(v[0].unsqueeze(-1)?), &[x])?;
    }

    #[test]
    fn reshape_of_a_permuted_value((x, axes) in array_and_permutation()) {
        // The permuted value is in standard layout, but reshape must read it in logical order.
        let n = x.len();
        check(|_, v| bend(v[0].permute(&axes)?.reshape(&[n])?), &[x])?;
    }

    #[test]
    fn concat_along_an_axis(
        (shape, axis, sizes) in (1usize..=3)
            .prop_flat_map(|r| shape_of_rank(r, 3))
            .prop_flat_map(|s| {
                let r = s.len() as isize;
                (Just(s), -r..r, prop::collection::vec(1usize..=3, 1..=3))
            })
    ) {
        let a = axis.rem_euclid(shape.len() as isize) as usize;
        let xs: Vec<ArrayD<f64>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &d)| {
                let mut s = shape.clone();
                s[a] = d;
                ArrayD::from_shape_fn(s, |i| 0.3 + 0.1 * k as f64 + 0.05 * i.as_array_view().sum() as f64)
            })
            .collect();
        check(|_, v| bend(concat(&v.iter().collect::<Vec<_>>(), axis)?), &xs)?;
    }

    #[test]
    fn stack_along_a_new_axis((x, axis) in array_and_axis(), k in 1usize..=3, last in any::<bool>()) {
        let axis = if last { x.ndim() as isize } else { axis };
        let xs: Vec<ArrayD<f64>> = (0..k).map(|i| x.mapv(|e| e + 0.2 * i as f64)).collect();
        check(|_, v| bend(stack(&v.iter().collect::<Vec<_>>(), axis)?), &xs)?;
    }

    #[test]
    fn split_and_rejoin_reversed((x, axis, start, _len) in array_axis_range()) {
        let a = axis.rem_euclid(x.ndim() as isize) as usize;
        let d = x.shape()[a];
        // Two pieces (the first possibly empty), rejoined in reverse order.
        let sizes = [start, d - start];
        check(|_, v| {
            let mut pieces = v[0].split(&sizes, axis)?;
            pieces.reverse();
            bend(concat(&pieces.iter().collect::<Vec<_>>(), axis)?)
        }, &[x])?;
    }

    #[test]
    fn chunk_and_restack((x, axis) in array_and_axis()) {
        let a = axis.rem_euclid(x.ndim() as isize) as usize;
        let n = x.shape()[a];
        check(|_, v| {
            let mut pieces = v[0].chunk(n, axis)?;
            pieces.reverse();
            bend(stack(&pieces.iter().collect::<Vec<_>>(), 0)?)
        }, &[x])?;
    }

    #[test]
    fn narrow((x, axis, start, len) in array_axis_range()) {
        check(|_, v| bend(v[0].narrow(axis, start, len)?), &[x])?;
    }

    #[test]
    fn select((x, axis, start, _len) in array_axis_range()) {
        check(|_, v| bend(v[0].select(axis, start)?), &[x])?;
    }

    #[test]
    fn index_select_with_repeats(
        (x, axis, indices) in array_and_axis().prop_flat_map(|(x, axis)| {
            let d = x.shape()[axis.rem_euclid(x.ndim() as isize) as usize];
            (Just(x), Just(axis), prop::collection::vec(0..d, 1..=5))
        })
    ) {
        check(|_, v| bend(v[0].index_select(axis, &indices)?), std::slice::from_ref(&x))?;
        // Every index repeated: gradients of repeats must add up.
        let twice: Vec<usize> = indices.iter().chain(&indices).copied().collect();
        check(|_, v| bend(v[0].index_select(axis, &twice)?), &[x])?;
    }
}

/// Joins, slices and stacks along an inner axis return row-major arrays with the right values,
/// so the ops (and gradients) downstream keep their contiguous paths.
#[test]
fn joins_slices_and_stacks_along_an_inner_axis_are_row_major() -> Result<()> {
    let t = Tape::<f64>::new();
    let seq = |r: usize, c: usize, from: f64| {
        ArrayD::from_shape_fn(vec![r, c], |i| from + (i[0] * c + i[1]) as f64)
    };
    let (a, b) = (t.constant(seq(2, 3, 0.0)), t.constant(seq(2, 2, 10.0)));
    let joined = concat(&[&a, &b], 1)?;
    assert!(joined.value().is_standard_layout());
    assert_eq!(
        joined.value().as_slice().unwrap(),
        &[0., 1., 2., 10., 11., 3., 4., 5., 12., 13.]
    );
    let stacked = stack(&[&a, &a], 1)?;
    assert!(stacked.value().is_standard_layout());
    assert_eq!(
        stacked.value().as_slice().unwrap(),
        &[0., 1., 2., 0., 1., 2., 3., 4., 5., 3., 4., 5.]
    );
    // From a column-major value too.
    let cols = t.constant(seq(3, 2, 0.0).reversed_axes()); // [[0, 2, 4], [1, 3, 5]]
    for piece in joined.chunk(5, 1)?.iter().chain(&cols.split(&[1, 2], 1)?) {
        assert!(piece.value().is_standard_layout());
    }
    let narrow = cols.narrow(1, 1, 2)?;
    assert!(narrow.value().is_standard_layout());
    assert_eq!(narrow.value().as_slice().unwrap(), &[2., 4., 3., 5.]);
    Ok(())
}
