//! Initializers. Each takes an explicit seeded [`Rng`]: eddy has no global RNG.

use eddy_tape::{checked_len, Error, Float, Result, Rng};
use ndarray::{Array2, ArrayD, IxDyn};

/// Whether a parameter of `shape` can be made: its size fits in `isize` bytes and, above
/// 1 GiB, the allocator grants it (a probe, freed at once). The fallible constructors
/// ([`RecurrentConfig::try_build`](crate::RecurrentConfig::try_build), `Sequential::build`)
/// check their weights with it, so that a size too large for the machine is an error, not a
/// panic in ndarray or an abort in the allocator.
///
/// # Errors
/// [`Error::Shape`] naming `what` and the shape.
pub fn check_size<F: Float>(what: &str, shape: &[usize]) -> Result<()> {
    let fits = checked_len(shape, std::mem::size_of::<F>()).is_some_and(|len| {
        len.saturating_mul(std::mem::size_of::<F>()) <= 1 << 30
            || Vec::<F>::new().try_reserve_exact(len).is_ok()
    });
    if fits {
        Ok(())
    } else {
        Err(Error::shape(
            what,
            &[shape],
            "a parameter of this shape has more elements than memory can hold",
        ))
    }
}

/// Panics with [`check_size`]'s message if a parameter of `shape` cannot be made (the
/// infallible initialisers; ndarray would panic with a less clear one, the allocator abort).
fn assert_size<F: Float>(what: &str, shape: &[usize]) {
    if let Err(e) = check_size::<F>(what, shape) {
        panic!("{e}");
    }
}

/// `U(-bound, bound)` in the given shape.
///
/// # Panics
/// If an array of `shape` cannot be allocated ([`check_size`]).
pub fn uniform<F: Float>(shape: &[usize], bound: f64, rng: &mut Rng) -> ArrayD<F> {
    assert_size::<F>("init::uniform", shape);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || F::of(rng.uniform_in(-bound, bound)))
}

/// `N(0, std²)` in the given shape.
///
/// # Panics
/// If an array of `shape` cannot be allocated ([`check_size`]).
pub fn normal<F: Float>(shape: &[usize], std: f64, rng: &mut Rng) -> ArrayD<F> {
    assert_size::<F>("init::normal", shape);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || F::of(std * rng.normal()))
}

/// PyTorch's default for recurrent layers (and `Linear`'s bias): `U(-1/√fan, 1/√fan)`.
pub fn pytorch_default<F: Float>(shape: &[usize], fan: usize, rng: &mut Rng) -> ArrayD<F> {
    uniform(shape, 1.0 / (fan.max(1) as f64).sqrt(), rng)
}

/// `(fan_in, fan_out)` of a `[out, in, …]` weight (a scalar shape `[]` counts as one), in
/// `f64` so no product overflows. Both are at least 1, so the bounds stay finite for empty
/// shapes (whose arrays have no elements to fill anyway).
fn fans(shape: &[usize]) -> (f64, f64) {
    let (i, o) = match shape {
        [] => (1.0, 1.0),
        [n] => (*n as f64, *n as f64),
        [out, inp] => (*inp as f64, *out as f64),
        [out, inp, rest @ ..] => {
            let receptive: f64 = rest.iter().map(|&d| d as f64).product();
            (*inp as f64 * receptive, *out as f64 * receptive)
        }
    };
    (i.max(1.0), o.max(1.0))
}

/// Xavier/Glorot uniform: `U(-a, a)` with `a = gain·√(6/(fan_in + fan_out))`.
pub fn xavier_uniform<F: Float>(shape: &[usize], gain: f64, rng: &mut Rng) -> ArrayD<F> {
    let (i, o) = fans(shape);
    uniform(shape, gain * (6.0 / (i + o)).sqrt(), rng)
}

/// Xavier/Glorot normal: `N(0, σ²)` with `σ = gain·√(2/(fan_in + fan_out))`.
pub fn xavier_normal<F: Float>(shape: &[usize], gain: f64, rng: &mut Rng) -> ArrayD<F> {
    let (i, o) = fans(shape);
    normal(shape, gain * (2.0 / (i + o)).sqrt(), rng)
}

/// A (semi-)orthogonal `[rows, cols]` matrix times `gain`: Gram–Schmidt on a Gaussian matrix,
/// with signs fixed as in the QR method of Saxe et al. (what PyTorch and Keras do).
///
/// # Panics
/// If a `[rows, cols]` array cannot be allocated ([`check_size`]).
pub fn orthogonal<F: Float>(rows: usize, cols: usize, gain: f64, rng: &mut Rng) -> ArrayD<F> {
    assert_size::<f64>("init::orthogonal", &[rows, cols]);
    // Orthonormalise the columns of a tall matrix, transposing back when rows < cols.
    let (r, c) = if rows >= cols { (rows, cols) } else { (cols, rows) };
    let mut a = Array2::<f64>::from_shape_simple_fn((r, c), || rng.normal());
    for j in 0..c {
        for k in 0..j {
            let dot: f64 = (0..r).map(|i| a[[i, j]] * a[[i, k]]).sum();
            for i in 0..r {
                a[[i, j]] -= dot * a[[i, k]];
            }
        }
        let norm = (0..r)
            .map(|i| a[[i, j]] * a[[i, j]])
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        for i in 0..r {
            a[[i, j]] /= norm;
        }
    }
    let a = if rows >= cols { a } else { a.reversed_axes() };
    a.mapv(|v| F::of(gain * v))
        .into_dyn()
        .as_standard_layout()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_rows_or_columns_are_orthonormal() {
        let mut rng = Rng::seed(1);
        for (r, c) in [(6, 4), (4, 6), (5, 5)] {
            let q = orthogonal::<f64>(r, c, 1.0, &mut rng)
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap();
            let g = if r >= c { q.t().dot(&q) } else { q.dot(&q.t()) };
            for ((i, j), v) in g.indexed_iter() {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-10, "({r},{c}) [{i},{j}] = {v}");
            }
        }
    }

    #[test]
    fn bounds_and_spreads_match_their_formulas() {
        let mut rng = Rng::seed(2);
        let w = xavier_uniform::<f64>(&[30, 20], 1.0, &mut rng);
        let a = (6.0f64 / 50.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= a));
        let n = xavier_normal::<f64>(&[300, 200], 1.0, &mut rng);
        let std = (n.iter().map(|v| v * v).sum::<f64>() / n.len() as f64).sqrt();
        assert!((std - (2.0f64 / 500.0).sqrt()).abs() < 0.003, "{std}");
        let p = pytorch_default::<f32>(&[8, 4], 16, &mut rng);
        assert!(p.iter().all(|v| v.abs() <= 0.25));
    }
}

/// Keras's `LSTM` initialisation applied to an eddy LSTM cell: the input kernel Glorot-uniform,
/// the recurrent kernel orthogonal (per gate block, as Keras's `[H, 4H]` recurrent kernel is one
/// orthogonal matrix seen transposed), `bias_ih` zero except a forget-gate bias of 1
/// (`unit_forget_bias`), and `bias_hh` zero (Keras has one bias; eddy's two are summed).
pub fn keras_lstm<F: Float>(cell: &crate::LstmCell<F>, rng: &mut Rng) {
    let w_ih = cell.weight_ih.shape();
    cell.weight_ih.set(xavier_uniform(&w_ih, 1.0, rng));
    let w_hh = cell.weight_hh.shape();
    // Keras: recurrent_kernel [units, 4·units] orthogonal; eddy/PyTorch store its transpose.
    let q: ArrayD<F> = orthogonal(w_hh[1], w_hh[0], 1.0, rng);
    cell.weight_hh
        .set(q.reversed_axes().as_standard_layout().into_owned());
    if let Some((b_ih, b_hh)) = &cell.biases {
        let h = cell.hidden_size();
        let mut b = ArrayD::<F>::zeros(vec![4 * h]);
        b.slice_mut(ndarray::s![h..2 * h]).fill(F::one());
        b_ih.set(b);
        b_hh.set(ArrayD::zeros(vec![4 * h]));
    }
}

#[cfg(test)]
mod keras_tests {
    use super::*;

    #[test]
    fn keras_lstm_preset_has_unit_forget_bias_and_an_orthogonal_recurrent_kernel() {
        let mut rng = Rng::seed(4);
        let cell = crate::LstmCell::<f64>::new(3, 5, true, &mut rng);
        keras_lstm(&cell, &mut rng);
        let (b_ih, b_hh) = cell.biases.as_ref().unwrap();
        let b = b_ih.value();
        assert!(b
            .iter()
            .enumerate()
            .all(|(i, &v)| v == if (5..10).contains(&i) { 1.0 } else { 0.0 }));
        assert!(b_hh.value().iter().all(|&v| v == 0.0));
        // weight_hh is [4H, H]: its columns are orthonormal (it is the transpose of Keras's kernel).
        let w = (*cell.weight_hh.value())
            .clone()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let g = w.t().dot(&w);
        for ((i, j), v) in g.indexed_iter() {
            assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-10);
        }
        let bound = (6.0f64 / (3.0 + 20.0)).sqrt();
        assert!(cell.weight_ih.value().iter().all(|v| v.abs() <= bound));
    }
}
