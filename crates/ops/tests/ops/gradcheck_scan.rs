//! The linear-recurrence scan (`eddy_ops::Scan`, `linear_scan`, `log_scan`): gradcheck and
//! gradgradcheck over random shapes, directions and lengths; the fast first-order backward
//! against the recorded rule; every thread split against the sequential form; the log-space
//! form against the linear one; and its errors.

use crate::common::{check, config};
use eddy_ops::kernels::scan::{scan_split, ScanSplit};
use eddy_ops::prelude::Rng;
use eddy_ops::prelude::*;
use eddy_ops::{linear_scan, log_scan, Scan, ScanForm};
use eddy_tape::strategies::array_of;
use ndarray::ArrayD;
use proptest::prelude::*;

/// `y · tanh(y)`: nonlinear, so that second derivatives flow through the op under test.
fn bend(y: Var<f64>) -> Result<Var<f64>> {
    &y * &y.tanh()?
}

/// `(T, B, H)`, arrays `a`, `b` `[T, B, H]` and `first` `[B, H]`, and per-sequence lengths.
#[allow(clippy::type_complexity)]
fn sequence() -> impl Strategy<Value = (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>, Vec<usize>)> {
    (1usize..=4, 1usize..=3, 1usize..=3).prop_flat_map(|(t, b, h)| {
        (
            array_of(vec![t, b, h], -1.5f64..1.5),
            array_of(vec![t, b, h], -1.5f64..1.5),
            array_of(vec![b, h], -1.5f64..1.5),
            prop::collection::vec(1..=t, b),
        )
    })
}

fn form_of(log: bool) -> ScanForm {
    if log {
        ScanForm::Log
    } else {
        ScanForm::Linear
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn scan_gradcheck_and_gradgradcheck(
        (a, b, first, lengths) in sequence(),
        log in any::<bool>(),
        reverse in any::<bool>(),
        ragged in any::<bool>(),
    ) {
        let lengths = ragged.then_some(lengths);
        check(|_, v| {
            let run = if log { log_scan } else { linear_scan };
            bend(run(&v[0], &v[1], &v[2], reverse, lengths.as_deref())?)
        }, &[a, b, first])?;
    }

    /// Every split (sequential, by lanes, chunked over time) gives the sequential result, in
    /// both forms and both directions (the backward's reverse scan runs through the same splits).
    #[test]
    fn scan_splits_agree(
        (t, n) in (1usize..=40, 1usize..=40),
        seed in any::<u64>(),
        log in any::<bool>(),
        reverse in any::<bool>(),
        parts in 2usize..=5,
    ) {
        let form = form_of(log);
        let mut rng = Rng::seed(seed);
        let mut values = |len: usize, lo: f64, hi: f64| -> Vec<f64> { (0..len).map(|_| rng.uniform_in(lo, hi)).collect() };
        let (lo, hi) = if log { (-2.0, 0.3) } else { (-1.1, 1.1) };
        let (a, b, first) = (values(t * n, lo, hi), values(t * n, -1.0, 1.0), values(n, -1.0, 1.0));
        let mut want = vec![0.0; t * n];
        scan_split(form, &a, &b, &first, &mut want, reverse, ScanSplit::Sequential);
        for split in [ScanSplit::Lanes(parts), ScanSplit::Chunks(parts)] {
            let mut got = vec![0.0; t * n];
            scan_split(form, &a, &b, &first, &mut got, reverse, split);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-11 * w.abs().max(1.0), "{split:?}: {g} vs {w}");
            }
        }
    }

    /// For a positive recurrence, `exp(log_scan(log a, log b, log h0)) = linear_scan(a, b, h0)`,
    /// ragged or not, in both directions.
    #[test]
    fn log_scan_is_the_linear_scan_in_log_space(
        (a, b, first, lengths) in sequence(),
        reverse in any::<bool>(),
        ragged in any::<bool>(),
    ) {
        let (a, b, first) = (a.mapv(|v| v.abs() + 0.05), b.mapv(|v| v.abs() + 0.05), first.mapv(|v| v.abs() + 0.05));
        let lengths = ragged.then_some(lengths);
        let tape = Tape::<f64>::new();
        let c = |x: &ArrayD<f64>| tape.constant(x.clone());
        let h = linear_scan(&c(&a), &c(&b), &c(&first), reverse, lengths.as_deref())?;
        let lh = log_scan(&c(&a.mapv(f64::ln)), &c(&b.mapv(f64::ln)), &c(&first.mapv(f64::ln)), reverse, lengths.as_deref())?;
        for (x, y) in h.value().iter().zip(lh.value()) {
            prop_assert!((x - y.exp()).abs() <= 1e-12 * x.abs().max(1.0), "{x} vs {}", y.exp());
        }
    }

    /// The scan equals a loop of `a ⊙ h + b` (and `logaddexp(α + s, β)`) steps written with
    /// tape ops, where a ragged sequence keeps its state past its length.
    #[test]
    fn scan_equals_a_loop_of_steps(
        (a, b, first, lengths) in sequence(),
        log in any::<bool>(),
        reverse in any::<bool>(),
    ) {
        let tape = Tape::<f64>::new();
        let c = |x: &ArrayD<f64>| tape.constant(x.clone());
        let run = if log { log_scan } else { linear_scan };
        let got = run(&c(&a), &c(&b), &c(&first), reverse, Some(&lengths))?;
        let steps = a.shape()[0];
        let (av, bv) = (c(&a).unstack(0)?, c(&b).unstack(0)?);
        let mut h = c(&first);
        let order: Vec<usize> = if reverse { (0..steps).rev().collect() } else { (0..steps).collect() };
        for t in order {
            let next = if log { (&av[t] + &h)?.logaddexp(&bv[t])? } else { ((&av[t] * &h)? + &bv[t])? };
            let mask = ArrayD::from_shape_fn(vec![lengths.len(), 1], |ix| t < lengths[ix[0]]);
            h = where_(&mask, &next, &h)?;
            for (x, y) in got.value().index_axis(ndarray::Axis(0), t).iter().zip(h.value()) {
                prop_assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "step {t}: {x} vs {y}");
            }
        }
    }
}

/// The gradients of every input, from the fast kernel and from the recorded rule.
type FastAndRecorded<F> = (Vec<ArrayD<F>>, Vec<ArrayD<F>>);

/// The gradients of every input from a first-order pass (the fast kernel) and from a
/// `create_graph` pass (the recorded rule).
fn fast_and_recorded<F: Float>(
    form: ScanForm,
    reverse: bool,
    xs: &[ArrayD<F>],
) -> Result<FastAndRecorded<F>> {
    let run = |options: GradOptions| -> Result<Vec<ArrayD<F>>> {
        let tape = Tape::new();
        let v: Vec<Var<F>> = xs.iter().map(|x| tape.input(x.clone())).collect();
        let y = tape.apply(Scan { form, reverse }, &[&v[0], &v[1], &v[2]])?;
        let loss = (&y * &v[3])?.sum_all()?;
        let refs: Vec<&Var<F>> = v[..3].iter().collect();
        let gs = tape.grad(&[&loss], None, &refs, options)?;
        Ok(gs
            .into_iter()
            .map(|g| g.expect("a gradient").value().clone())
            .collect())
    };
    Ok((run(GradOptions::default())?, run(GradOptions::create_graph())?))
}

fn scan_fast_and_recorded_rules_agree<F: Float>(tol: f64) -> Result<()> {
    let mut rng = Rng::seed(5);
    let mut arr = |shape: &[usize], lo: f64, hi: f64| {
        ArrayD::from_shape_simple_fn(shape, || F::of(rng.uniform_in(lo, hi)))
    };
    let (t, b, h) = (7, 3, 4);
    for form in [ScanForm::Linear, ScanForm::Log] {
        for reverse in [false, true] {
            let xs = [
                arr(&[t, b, h], -1.0, 1.0),
                arr(&[t, b, h], -1.0, 1.0),
                arr(&[b, h], -1.0, 1.0),
                arr(&[t, b, h], -1.0, 1.0),
            ];
            let (fast, recorded) = fast_and_recorded(form, reverse, &xs)?;
            for (f, r) in fast.iter().zip(&recorded) {
                for (x, y) in f.iter().zip(r) {
                    let (x, y) = (x.as_f64(), y.as_f64());
                    assert!(
                        (x - y).abs() <= tol * (1.0 + y.abs()),
                        "{form:?} reverse={reverse} {}: fast {x} vs recorded {y}",
                        F::NAME
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn scan_fast_and_recorded_rules_agree_in_f64_and_f32() -> Result<()> {
    scan_fast_and_recorded_rules_agree::<f64>(1e-12)?;
    scan_fast_and_recorded_rules_agree::<f32>(1e-5)
}

#[test]
fn scan_shape_and_length_errors_name_the_op() {
    let tape = Tape::<f64>::new();
    let z = |s: &[usize]| tape.input(ArrayD::zeros(s.to_vec()));
    let e = linear_scan(&z(&[3, 2, 4]), &z(&[3, 2, 5]), &z(&[2, 4]), false, None).unwrap_err();
    assert!(
        e.to_string().contains("linear_scan") && e.to_string().contains("[3, 2, 5]"),
        "{e}"
    );
    let e = log_scan(&z(&[3, 2, 4]), &z(&[3, 2, 4]), &z(&[3, 4]), false, None).unwrap_err();
    assert!(e.to_string().contains("log_scan"), "{e}");
    let e = linear_scan(&z(&[0, 2, 4]), &z(&[0, 2, 4]), &z(&[2, 4]), false, None).unwrap_err();
    assert!(e.to_string().contains("T ≥ 1"), "{e}");
    let e = linear_scan(&z(&[3, 2, 4]), &z(&[3, 2, 4]), &z(&[2, 4]), false, Some(&[3])).unwrap_err();
    assert!(e.to_string().contains("one length per sequence"), "{e}");
    let e = linear_scan(&z(&[3, 2, 4]), &z(&[3, 2, 4]), &z(&[2, 4]), false, Some(&[3, 4])).unwrap_err();
    assert!(e.to_string().contains("length 4 of sequence 1"), "{e}");
}
