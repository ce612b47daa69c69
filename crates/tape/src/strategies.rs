//! proptest strategies for gradient-check property tests: shapes, broadcast-compatible shape
//! pairs, and well-conditioned values (away from zero, where kinks such as `relu` and `abs` sit).
//!
//! ```
//! use eddy_tape::strategies::{array, shape};
//! use eddy_tape::{gradcheck, GradcheckOptions, Tape, Var};
//! use proptest::prelude::*;
//!
//! proptest!(ProptestConfig::with_cases(8), |(x in shape(2, 3).prop_flat_map(|s| array(s)))| {
//!     gradcheck(|_t: &Tape<f64>, v: &[Var<f64>]| &v[0] * &v[0], &[x], &GradcheckOptions::default())?;
//! });
//! ```

use ndarray::ArrayD;
use proptest::prelude::*;

/// Shapes of rank `0..=max_rank` with dimensions `1..=max_dim`.
pub fn shape(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..=max_dim, 0..=max_rank)
}

/// Shapes of exactly rank `rank` with dimensions `1..=max_dim`.
pub fn shape_of_rank(rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..=max_dim, rank)
}

/// Two shapes that broadcast together: a full shape, and one with some leading dimensions
/// dropped and some dimensions set to 1; randomly swapped.
pub fn broadcast_pair(max_rank: usize, max_dim: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape(max_rank, max_dim).prop_flat_map(|full| {
        let n = full.len();
        (
            Just(full),
            0..=n,
            prop::collection::vec(any::<bool>(), n),
            any::<bool>(),
        )
            .prop_map(|(full, drop, ones, swap)| {
                let other: Vec<usize> = full
                    .iter()
                    .zip(&ones)
                    .skip(drop)
                    .map(|(&d, &one)| if one { 1 } else { d })
                    .collect();
                if swap {
                    (other, full)
                } else {
                    (full, other)
                }
            })
    })
}

/// Values in `±[0.1, 2]`: well conditioned for finite differences and away from kinks at 0.
pub fn value() -> impl Strategy<Value = f64> {
    (0.1f64..2.0, any::<bool>()).prop_map(|(m, neg)| if neg { -m } else { m })
}

/// Values in `[0.2, 2]`, for ops defined only on positives (`log`, `sqrt`, division).
pub fn positive() -> impl Strategy<Value = f64> {
    0.2f64..2.0
}

/// An array of the given shape with [`value`] elements.
pub fn array(shape: Vec<usize>) -> impl Strategy<Value = ArrayD<f64>> {
    array_of(shape, value())
}

/// An array of the given shape with elements from `elem`.
pub fn array_of(shape: Vec<usize>, elem: impl Strategy<Value = f64>) -> impl Strategy<Value = ArrayD<f64>> {
    let n: usize = shape.iter().product();
    prop::collection::vec(elem, n)
        .prop_map(move |v| ArrayD::from_shape_vec(shape.clone(), v).expect("length is the shape's product"))
}
