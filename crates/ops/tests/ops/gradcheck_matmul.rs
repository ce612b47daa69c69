//! gradcheck and gradgradcheck of the matrix product: 2-D, batched 3-D × 3-D, 3-D × 2-D and
//! 2-D × 3-D, under every transpose flag.

use crate::common::{check, config};
use eddy_ops::matmul_t;
use eddy_ops::prelude::*;
use eddy_tape::strategies::array;
use eddy_tape::Rng;
use ndarray::ArrayD;
use proptest::prelude::*;

/// The shape of an operand of `rows × cols` (before its transpose flag), with an optional batch.
fn operand(batch: Option<usize>, rows: usize, cols: usize, t: bool) -> Vec<usize> {
    let (r, c) = if t { (cols, rows) } else { (rows, cols) };
    batch.into_iter().chain([r, c]).collect()
}

/// Operands for `op(a) · op(b)`: `(a, b, ta, tb)`, with a batch on neither, both or one side.
fn operands() -> impl Strategy<Value = (ArrayD<f64>, ArrayD<f64>, bool, bool)> {
    (
        1usize..=3,
        1usize..=3,
        1usize..=3,
        1usize..=3,
        0u8..4,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(m, k, n, batch, layout, ta, tb)| {
            let (ba, bb) = match layout {
                0 => (None, None),
                1 => (Some(batch), Some(batch)),
                2 => (Some(batch), None),
                _ => (None, Some(batch)),
            };
            (
                array(operand(ba, m, k, ta)),
                array(operand(bb, k, n, tb)),
                Just(ta),
                Just(tb),
            )
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn matmul_every_layout_and_flag((a, b, ta, tb) in operands()) {
        // matmul is bilinear: its second derivatives in (a, b) jointly are not zero.
        check(|_, v| matmul_t(&v[0], &v[1], ta, tb), &[a, b])?;
    }

    #[test]
    fn matmul_methods((a, b, _, _) in operands().prop_filter("no transposes", |o| !o.2 && !o.3)) {
        check(|_, v| v[0].matmul(&v[1]), &[a.clone(), b.clone()])?;
        // `a · bᵀᵀ`, through matmul_t of a transposed copy.
        check(|_, v| v[0].matmul_t(&v[1].transpose(-1, -2)?), &[a, b])?;
    }

    #[test]
    fn matmul_with_a_shared_input((a, _, _, _) in operands()) {
        // `a · aᵀ`: one input on both sides.
        check(|_, v| matmul_t(&v[0], &v[0], false, true), std::slice::from_ref(&a))?;
        check(|_, v| v[0].matmul_t(&v[0])?.tanh(), &[a])?;
    }

    #[test]
    fn linear(x in (1usize..=3).prop_flat_map(|r| eddy_tape::strategies::shape_of_rank(r, 3)).prop_flat_map(array),
              out in 1usize..=3, seed in any::<u64>()) {
        let inp = *x.shape().last().unwrap();
        let mut rng = Rng::seed(seed);
        let w = ArrayD::from_shape_simple_fn(vec![out, inp], || rng.uniform_in(-1.0, 1.0));
        let b = ArrayD::from_shape_simple_fn(vec![out], || rng.uniform_in(-1.0, 1.0));
        check(|_, v| v[0].linear(&v[1], Some(&v[2]))?.tanh(), &[x, w, b])?;
    }
}
