//! Losses: values against PyTorch's (hand-computed), gradcheck, masks, errors.

use eddy_nn::loss::{
    binary_cross_entropy_with_logits, cross_entropy, huber, l1, mse, nll, Reduction, Targets,
};
use eddy_ops::VarExt;
use eddy_tape::{gradcheck, Error, GradcheckOptions, Result, Rng, Tape, Var};
use ndarray::{arr1, arr2, arr3, ArrayD, IxDyn};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
}

fn random(shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.uniform_in(-2.0, 2.0))
}

/// Away from the kinks of |d| at 0 and of Huber at |d| = 1: every |d| in [0.1, 0.9] ∪ [1.1, 2].
fn away_from_kinks(shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        let m = if rng.uniform() < 0.5 {
            rng.uniform_in(0.1, 0.9)
        } else {
            rng.uniform_in(1.1, 2.0)
        };
        if rng.uniform() < 0.5 {
            m
        } else {
            -m
        }
    })
}

#[test]
fn regression_losses_match_pytorch_values() -> Result<()> {
    let t = Tape::<f64>::new();
    let x = t.input(arr1(&[0.5, 2.0, -3.0]).into_dyn());
    let y = t.constant(ArrayD::zeros(vec![3]));
    close(
        mse(&x, &y, Reduction::Mean, None)?.item()?,
        (0.25 + 4.0 + 9.0) / 3.0,
    );
    close(mse(&x, &y, Reduction::Sum, None)?.item()?, 13.25);
    close(l1(&x, &y, Reduction::Mean, None)?.item()?, 5.5 / 3.0);
    close(l1(&x, &y, Reduction::Sum, None)?.item()?, 5.5);
    // F.huber_loss(x, 0, delta=1) = mean(0.125, 1.5, 2.5); delta=2: (0.125, 2.0, 4.0).
    close(huber(&x, &y, 1.0, Reduction::Mean, None)?.item()?, 4.125 / 3.0);
    close(huber(&x, &y, 2.0, Reduction::Sum, None)?.item()?, 6.125);
    assert_eq!(Reduction::default(), Reduction::Mean);
    Ok(())
}

#[test]
fn classification_losses_match_pytorch_values() -> Result<()> {
    let t = Tape::<f64>::new();
    let logits = t.input(arr2(&[[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]).into_dyn());
    // F.cross_entropy(tensor([[1,2,3],[1,1,1]]), tensor([2,0])) = (0.40760596 + ln 3)/2
    close(
        cross_entropy(&logits, &[2, 0], Reduction::Mean, None)?.item()?,
        0.753109126556245,
    );
    close(
        cross_entropy(&logits, &vec![2, 0], Reduction::Sum, None)?.item()?,
        0.40760596444438013 + 3f64.ln(),
    );
    // Probability targets: −Σ p log_softmax.
    let row = t.input(arr2(&[[1.0, 2.0, 3.0]]).into_dyn());
    let p = t.constant(arr2(&[[0.2, 0.3, 0.5]]).into_dyn());
    close(
        cross_entropy(&row, &p, Reduction::Mean, None)?.item()?,
        1.10760596444438,
    );
    // Unbatched [C] logits.
    let flat = t.input(arr1(&[1.0, 2.0, 3.0]).into_dyn());
    close(
        cross_entropy(&flat, Targets::Classes(&[2]), Reduction::Mean, None)?.item()?,
        0.40760596444438013,
    );
    // nll of log-probabilities: (2 + 0.5)/2.
    let logp = t.input(arr2(&[[-1.0, -2.0], [-0.5, -3.0]]).into_dyn());
    close(nll(&logp, &[1, 0], Reduction::Mean, None)?.item()?, 1.25);
    // nll(log_softmax(x)) = cross_entropy(x).
    let ls = logits.log_softmax(1)?;
    close(
        nll(&ls, &[2, 0], Reduction::Mean, None)?.item()?,
        0.753109126556245,
    );
    // BCE with logits: [ln 2, softplus(2), 0] against targets [1, 0, 0].
    let x = t.input(arr1(&[0.0, 2.0, -1000.0]).into_dyn());
    let y = t.constant(arr1(&[1.0, 0.0, 0.0]).into_dyn());
    close(
        binary_cross_entropy_with_logits(&x, &y, Reduction::Sum, None)?.item()?,
        2f64.ln() + 2.1269280110429727,
    );
    Ok(())
}

#[test]
fn stable_at_extreme_logits() -> Result<()> {
    let t = Tape::<f32>::new();
    let x = t.input(arr1(&[1000.0f32, -1000.0]).into_dyn());
    let y = t.constant(arr1(&[1.0f32, 1.0]).into_dyn());
    let bce = binary_cross_entropy_with_logits(&x, &y, Reduction::Sum, None)?;
    assert_eq!(bce.item()?, 1000.0);
    let g = bce.backward()?;
    assert_eq!(g.var(&x).unwrap().as_slice().unwrap(), &[0.0, -1.0]);
    let logits = t.input(arr2(&[[1000.0f32, -1000.0, 0.0]]).into_dyn());
    let ce = cross_entropy(&logits, &[1], Reduction::Mean, None)?;
    assert_eq!(ce.item()?, 2000.0);
    let g = ce.backward()?;
    assert!(g.var(&logits).unwrap().iter().all(|v| v.is_finite()));
    Ok(())
}

#[test]
fn class_axis_is_axis_one_for_sequences() -> Result<()> {
    // [N=1, C=3, T=2]: per-step losses equal those of the [N·T, C] rows.
    let t = Tape::<f64>::new();
    let x = t.input(arr3(&[[[1.0, -1.0], [2.0, 0.5], [3.0, 0.0]]]).into_dyn());
    let seq = cross_entropy(&x, &[2, 0], Reduction::Sum, None)?.item()?;
    let rows = t.input(arr2(&[[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]).into_dyn());
    let flat = cross_entropy(&rows, &[2, 0], Reduction::Sum, None)?.item()?;
    close(seq, flat);
    Ok(())
}

#[test]
fn every_loss_passes_gradcheck() -> Result<()> {
    let mut rng = Rng::seed(7);
    let opts = GradcheckOptions::default();
    let (a, b) = (random(&[3, 4], &mut rng), random(&[3, 4], &mut rng));
    let d = away_from_kinks(&[3, 4], &mut rng);
    let target = &a - &d; // so that a − target = d
    let mask = arr2(&[[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]).into_dyn();
    for reduction in [Reduction::Mean, Reduction::Sum] {
        for m in [None, Some(&mask)] {
            gradcheck(
                |_, x| mse(&x[0], &x[1], reduction, m),
                &[a.clone(), b.clone()],
                &opts,
            )?;
            gradcheck(
                |_, x| l1(&x[0], &x[1], reduction, m),
                &[a.clone(), target.clone()],
                &opts,
            )?;
            gradcheck(
                |_, x| huber(&x[0], &x[1], 1.0, reduction, m),
                &[a.clone(), target.clone()],
                &opts,
            )?;
            let probs = b.mapv(f64::abs) + 0.1;
            gradcheck(
                |_, x| binary_cross_entropy_with_logits(&x[0], &x[1], reduction, m),
                &[a.clone(), probs.mapv(|v| v / 3.0)],
                &opts,
            )?;
            let row_mask = arr1(&[1.0, 0.0, 1.0]).into_dyn();
            let rm = m.map(|_| &row_mask);
            gradcheck(
                |_, x| cross_entropy(&x[0], &[3, 0, 1], reduction, rm),
                std::slice::from_ref(&a),
                &opts,
            )?;
            // Probability targets: both the logits and the probabilities get gradients.
            let p = b.mapv(f64::exp);
            let p = &p / &p.sum_axis(ndarray::Axis(1)).insert_axis(ndarray::Axis(1));
            gradcheck(
                |_, x| cross_entropy(&x[0], &x[1], reduction, rm),
                &[a.clone(), p.clone()],
                &opts,
            )?;
            gradcheck(
                |_, x| nll(&x[0], &[3, 0, 1], reduction, rm),
                std::slice::from_ref(&a),
                &opts,
            )?;
        }
    }
    // A sequence [N, C, T] with a [N, T] mask.
    let x = random(&[2, 3, 4], &mut rng);
    let seq_mask = arr2(&[[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]).into_dyn();
    gradcheck(
        |_, x| cross_entropy(&x[0], &[0, 1, 2, 0, 2, 2, 1, 1], Reduction::Mean, Some(&seq_mask)),
        &[x],
        &opts,
    )?;
    Ok(())
}

#[test]
fn a_mask_averages_over_the_kept_elements_only() -> Result<()> {
    let t = Tape::<f64>::new();
    // A padded step whose square overflows: a select keeps infinity out of value and gradient.
    let x = t.input(arr2(&[[1.0, 2.0, 3.0], [4.0, 5.0, 1e200]]).into_dyn());
    let y = t.constant(ArrayD::zeros(vec![2, 3]));
    let mask = arr2(&[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]).into_dyn();
    let loss = mse(&x, &y, Reduction::Mean, Some(&mask))?;
    close(loss.item()?, (1.0 + 4.0 + 16.0) / 3.0);
    // Masked elements get no gradient.
    let g = loss.backward()?;
    let gx = g.var(&x).unwrap();
    assert_eq!(
        gx,
        &arr2(&[[2.0 / 3.0, 4.0 / 3.0, 0.0], [8.0 / 3.0, 0.0, 0.0]]).into_dyn()
    );
    close(mse(&x, &y, Reduction::Sum, Some(&mask))?.item()?, 21.0);
    let nan = t.input(arr2(&[[1.0, 2.0, 3.0], [4.0, 5.0, f64::NAN]]).into_dyn());
    close(mse(&nan, &y, Reduction::Sum, Some(&mask))?.item()?, 21.0);

    // A mask that broadcasts: [2, 1] keeps whole rows; the count is of broadcast elements.
    let x = t.input(arr2(&[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).into_dyn());
    let rows = arr2(&[[0.0], [1.0]]).into_dyn();
    close(l1(&x, &y, Reduction::Mean, Some(&rows))?.item()?, 5.0);

    // Per-step losses of a sequence: a [N, T] mask on [N, C, T] logits.
    let logits = t.input(arr3(&[[[1.0, -1.0], [2.0, 0.5], [3.0, 0.0]]]).into_dyn());
    let first = arr2(&[[1.0, 0.0]]).into_dyn();
    close(
        cross_entropy(&logits, &[2, 0], Reduction::Mean, Some(&first))?.item()?,
        0.40760596444438013,
    );

    // Everything masked: the mean is 0 with a zero gradient, not NaN.
    let none = ArrayD::zeros(vec![2, 3]);
    let loss = mse(&x, &y, Reduction::Mean, Some(&none))?;
    assert_eq!(loss.item()?, 0.0);
    assert!(loss.backward()?.var(&x).unwrap().iter().all(|&v| v == 0.0));
    Ok(())
}

fn shape_err(r: Result<Var<f64>>) {
    assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
}

fn invalid_err(r: Result<Var<f64>>) {
    assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
}

#[test]
fn user_mistakes_are_errors() {
    let t = Tape::<f64>::new();
    let a = t.input(ArrayD::zeros(vec![2, 3]));
    let b = t.input(ArrayD::zeros(vec![3, 2]));
    shape_err(mse(&a, &b, Reduction::Mean, None));
    shape_err(l1(&a, &b, Reduction::Mean, None));
    shape_err(huber(&a, &b, 1.0, Reduction::Mean, None));
    shape_err(binary_cross_entropy_with_logits(&a, &b, Reduction::Mean, None));
    shape_err(cross_entropy(&a, &b, Reduction::Mean, None));
    invalid_err(huber(&a, &a, 0.0, Reduction::Mean, None));
    invalid_err(huber(&a, &a, f64::NAN, Reduction::Mean, None));

    // Class indices: out of range, wrong count, no class axis.
    let e = cross_entropy(&a, &[0, 3], Reduction::Mean, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cross_entropy: class index 3 at position 1 is out of range for 3 classes"
    );
    invalid_err(nll(&a, &[5, 0], Reduction::Mean, None));
    shape_err(cross_entropy(&a, &[0, 1, 2], Reduction::Mean, None));
    shape_err(nll(&a, &[0], Reduction::Mean, None));
    let s = t.input(ArrayD::zeros(vec![]));
    shape_err(cross_entropy(&s, &[0], Reduction::Mean, None));

    // Masks: not broadcastable to the loss, larger than it, or not 0/1.
    let wrong = ArrayD::ones(vec![2]);
    shape_err(mse(&a, &a, Reduction::Mean, Some(&wrong)));
    let larger = ArrayD::ones(vec![4, 2, 3]);
    shape_err(mse(&a, &a, Reduction::Mean, Some(&larger)));
    let ce_mask = ArrayD::ones(vec![2, 3]); // the per-element loss of [2, 3] logits is [2]
    shape_err(cross_entropy(&a, &[0, 1], Reduction::Mean, Some(&ce_mask)));
    let half = ArrayD::from_elem(vec![2, 3], 0.5);
    invalid_err(mse(&a, &a, Reduction::Mean, Some(&half)));
}
