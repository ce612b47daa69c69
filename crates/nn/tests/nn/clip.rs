//! Gradient clipping and accumulation.

use eddy_nn::clip::{clip_grad_norm, clip_grad_value, GradAccumulator};
use eddy_nn::loss::{mse, Reduction};
use eddy_ops::VarExt;
use eddy_tape::{Error, Grads, Param, Result, Rng, Tape};
use ndarray::{arr1, ArrayD, IxDyn};

fn grads() -> (Param<f64>, Param<f64>, Grads<f64>) {
    let a = Param::new("a", ArrayD::zeros(vec![2]));
    let b = Param::new("b", ArrayD::zeros(vec![1]));
    let mut g = Grads::default();
    g.set_param(&a, arr1(&[3.0, 0.0]).into_dyn());
    g.set_param(&b, arr1(&[-4.0]).into_dyn());
    (a, b, g)
}

#[test]
fn clip_grad_norm_scales_all_gradients_together_like_pytorch() -> Result<()> {
    let (a, b, mut g) = grads();
    let norm = clip_grad_norm(&mut g, 1.0)?;
    assert_eq!(norm, 5.0);
    let coef = 1.0 / (5.0 + 1e-6);
    assert_eq!(g.param(&a).unwrap(), &arr1(&[3.0 * coef, 0.0]).into_dyn());
    assert_eq!(g.param(&b).unwrap(), &arr1(&[-4.0 * coef]).into_dyn());
    // Below the bound nothing changes.
    let (a, _, mut g) = grads();
    assert_eq!(clip_grad_norm(&mut g, 10.0)?, 5.0);
    assert_eq!(g.param(&a).unwrap(), &arr1(&[3.0, 0.0]).into_dyn());
    // Errors.
    let (_, _, mut g) = grads();
    assert!(matches!(clip_grad_norm(&mut g, -1.0), Err(Error::Invalid { .. })));
    assert!(matches!(
        clip_grad_norm(&mut g, f64::NAN),
        Err(Error::Invalid { .. })
    ));
    // No gradients: norm 0.
    assert_eq!(clip_grad_norm(&mut Grads::<f32>::default(), 1.0)?, 0.0);
    Ok(())
}

#[test]
fn clip_grad_value_clamps_each_element() -> Result<()> {
    let (a, b, mut g) = grads();
    clip_grad_value(&mut g, 3.5)?;
    assert_eq!(g.param(&a).unwrap(), &arr1(&[3.0, 0.0]).into_dyn());
    assert_eq!(g.param(&b).unwrap(), &arr1(&[-3.5]).into_dyn());
    assert!(clip_grad_value(&mut g, -1.0).is_err());
    Ok(())
}

/// The gradient of the mean squared error of a linear model `x·wᵀ + b` on rows `rows`.
fn linear_grads(w: &Param<f64>, b: &Param<f64>, x: &ArrayD<f64>, y: &ArrayD<f64>) -> Result<Grads<f64>> {
    let tape = Tape::new();
    let (wv, bv) = (tape.param(w), tape.param(b));
    let pred = tape.constant(x.clone()).linear(&wv, Some(&bv))?;
    mse(&pred, &tape.constant(y.clone()), Reduction::Mean, None)?.backward()
}

#[test]
fn accumulated_micro_batches_equal_the_full_batch() -> Result<()> {
    let mut rng = Rng::seed(3);
    let mut r = |shape: &[usize]| ArrayD::from_shape_fn(IxDyn(shape), |_| rng.normal());
    let w = Param::new("w", r(&[2, 3]));
    let b = Param::new("b", r(&[2]));
    let (x, y) = (r(&[8, 3]), r(&[8, 2]));
    let full = linear_grads(&w, &b, &x, &y)?;

    let mut acc = GradAccumulator::new();
    assert!(acc.is_empty());
    for k in 0..4 {
        let rows = ndarray::s![2 * k..2 * k + 2, ..];
        let xs = x.slice(rows).to_owned().into_dyn();
        let ys = y.slice(rows).to_owned().into_dyn();
        acc.add(&linear_grads(&w, &b, &xs, &ys)?);
    }
    assert_eq!(acc.len(), 4);
    let avg = acc.take_average().unwrap();
    assert!(acc.is_empty() && acc.take_average().is_none());
    for p in [&w, &b] {
        let (got, want) = (avg.param(p).unwrap(), full.param(p).unwrap());
        for (g, f) in got.iter().zip(want) {
            assert!((g - f).abs() < 1e-12, "{}: {g} vs {f}", p.name());
        }
    }

    // Micro-batches of 5 and 3 rows, weighted by size, give the full batch too.
    let mut acc = GradAccumulator::new();
    for (lo, hi) in [(0, 5), (5, 8)] {
        let xs = x.slice(ndarray::s![lo..hi, ..]).to_owned().into_dyn();
        let ys = y.slice(ndarray::s![lo..hi, ..]).to_owned().into_dyn();
        acc.add_weighted(&linear_grads(&w, &b, &xs, &ys)?, (hi - lo) as f64)?;
    }
    let avg = acc.take_average().unwrap();
    for (g, f) in avg.param(&w).unwrap().iter().zip(full.param(&w).unwrap()) {
        assert!((g - f).abs() < 1e-12, "{g} vs {f}");
    }
    assert!(acc.add_weighted(&full, -1.0).is_err());
    Ok(())
}
