//! gradcheck and gradgradcheck of the fused recurrent kernels (`Linear`, `LstmPointwise`,
//! `GruPointwise`, `RankOneUpdate`) and of the multi-output ops (`split`, `chunk`, `unstack`) when only some of
//! their outputs are used. gradcheck exercises each fused op's fast first-order backward;
//! gradgradcheck its recorded rule. A last test checks that the two agree in f32 and f64.

use crate::common::{check, config};
use eddy_ops::prelude::*;
use eddy_ops::{linear_add, rank_one_update, GruPointwise, LstmPointwise};
use eddy_tape::strategies::{array, shape_of_rank};
use eddy_tape::Rng;
use ndarray::ArrayD;
use proptest::prelude::*;

/// `y · tanh(y)`: nonlinear, so that second derivatives flow through the op under test.
fn bend(y: Var<f64>) -> Result<Var<f64>> {
    &y * &y.tanh()?
}

/// `(batch, hidden)` and arrays `[batch, k·hidden]`, `[batch, hidden]`.
fn gates_and_state(k: usize) -> impl Strategy<Value = (ArrayD<f64>, ArrayD<f64>)> {
    (1usize..=3, 1usize..=3).prop_flat_map(move |(b, h)| (array(vec![b, k * h]), array(vec![b, h])))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn linear_with_every_optional_part(
        (x, w, b, add) in (1usize..=3, 1usize..=3, 1usize..=3).prop_flat_map(|(rows, k, n)| {
            (array(vec![rows, k]), array(vec![n, k]), array(vec![n]), array(vec![rows, n]))
        }),
        bias in any::<bool>(),
        with_add in any::<bool>(),
    ) {
        check(|_, v| {
            let b = bias.then_some(&v[2]);
            let add = with_add.then_some(&v[3]);
            bend(linear_add(&v[0], &v[1], b, add)?)
        }, &[x, w, b, add])?;
    }

    #[test]
    fn linear_over_any_rank(
        (x, w, b, add) in (0usize..=2, 1usize..=3, 1usize..=3).prop_flat_map(|(lead, k, n)| {
            let lead: Vec<usize> = [2, 3][..lead].to_vec();
            let xs: Vec<usize> = lead.iter().copied().chain([k]).collect();
            let ys: Vec<usize> = lead.iter().copied().chain([n]).collect();
            (array(xs), array(vec![n, k]), array(vec![n]), array(ys))
        }),
    ) {
        check(|_, v| bend(linear_add(&v[0], &v[1], Some(&v[2]), Some(&v[3]))?), &[x.clone(), w.clone(), b, add])?;
        check(|_, v| bend(v[0].linear(&v[1], None)?), &[x, w])?;
    }

    #[test]
    fn rank_one_update_every_input(
        (c, f, i, v, k) in (1usize..=3, 1usize..=3, 1usize..=3).prop_flat_map(|(n, p, q)| {
            (array(vec![n, p, q]), array(vec![n]), array(vec![n]), array(vec![n, p]), array(vec![n, q]))
        }),
    ) {
        check(|_, x| bend(rank_one_update(&x[0], &x[1], &x[2], &x[3], &x[4])?), &[c, f, i, v, k])?;
    }

    #[test]
    fn lstm_pointwise_both_outputs((gates, c) in gates_and_state(4), wc in -2.0f64..2.0) {
        check(|t, v| {
            let hc = t.apply_multi(LstmPointwise, &[&v[0], &v[1]])?;
            (hc[0].sum_all()? + hc[1].scale(wc)?.sum_all()?)?.sum_all()
        }, &[gates, c])?;
    }

    #[test]
    fn lstm_pointwise_one_output_only((gates, c) in gates_and_state(4), which in 0usize..2) {
        // The other output gets no gradient (None), which the rule treats as zeros.
        check(|t, v| bend(t.apply_multi(LstmPointwise, &[&v[0], &v[1]])?.swap_remove(which)), &[gates, c])?;
    }

    #[test]
    fn gru_pointwise((xw, h) in gates_and_state(3), seed in any::<u64>()) {
        let mut rng = Rng::seed(seed);
        let hw = xw.mapv(|_| rng.uniform_in(-1.5, 1.5));
        check(|t, v| bend(t.apply(GruPointwise, &[&v[0], &v[1], &v[2]])?), &[xw, hw, h])?;
    }

    #[test]
    fn split_chunk_and_unstack_with_unused_pieces(
        (x, axis, keep) in (1usize..=3)
            .prop_flat_map(|r| shape_of_rank(r, 3))
            .prop_flat_map(|s| {
                let r = s.len();
                (array(s), 0..r, any::<prop::sample::Index>())
            })
    ) {
        let d = x.shape()[axis];
        let k = keep.index(d);
        let a = axis as isize;
        // Only piece k is used: the others' gradients are None and must count as zeros.
        check(|_, v| bend(v[0].unstack(a)?.swap_remove(k)), std::slice::from_ref(&x))?;
        check(|_, v| bend(v[0].chunk(d, a)?.swap_remove(k)), std::slice::from_ref(&x))?;
        check(|_, v| bend(v[0].split(&[k, d - k], a)?.pop().unwrap()), &[x])?;
    }
}

/// The gradients of every input, from the fast kernels and from the recorded rules.
type FastAndRecorded<F> = (Vec<ArrayD<F>>, Vec<ArrayD<F>>);

/// The gradients of `loss` in `xs` from a first-order pass (the fused ops' fast kernels) and
/// from a `create_graph` pass (their recorded rules).
fn both_ways<F: Float>(
    xs: &[ArrayD<F>],
    loss: impl Fn(&[Var<F>]) -> Result<Var<F>>,
) -> Result<FastAndRecorded<F>> {
    let run = |options: GradOptions| -> Result<Vec<ArrayD<F>>> {
        let tape = Tape::new();
        let vars: Vec<Var<F>> = xs.iter().map(|x| tape.input(x.clone())).collect();
        let y = loss(&vars)?;
        let refs: Vec<&Var<F>> = vars.iter().collect();
        let gs = tape.grad(&[&y], None, &refs, options)?;
        Ok(gs.into_iter().map(|g| g.unwrap().value().clone()).collect())
    };
    Ok((run(GradOptions::default())?, run(GradOptions::create_graph())?))
}

fn fused_fast_and_recorded_rules_agree<F: Float>(tol: f64) -> Result<()> {
    let mut rng = Rng::seed(3);
    let mut arr = |shape: &[usize]| ArrayD::from_shape_simple_fn(shape, || F::of(rng.uniform_in(-3.0, 3.0)));
    let (b, h) = (4, 5);
    let lstm = [arr(&[b, 4 * h]), arr(&[b, h]), arr(&[b, h]), arr(&[b, h])];
    let (fast, recorded) = both_ways(&lstm, |v| {
        let hc = v[0].tape().apply_multi(LstmPointwise, &[&v[0], &v[1]])?;
        ((&hc[0] * &v[2])?.sum_all()? + (&hc[1] * &v[3])?.sum_all()?)?.sum_all()
    })?;
    let gru = [arr(&[b, 3 * h]), arr(&[b, 3 * h]), arr(&[b, h]), arr(&[b, h])];
    let (fast2, recorded2) = both_ways(&gru, |v| {
        let y = v[0].tape().apply(GruPointwise, &[&v[0], &v[1], &v[2]])?;
        (&y * &v[3])?.sum_all()
    })?;
    let lin = [arr(&[b, h]), arr(&[3, h]), arr(&[3]), arr(&[b, 3])];
    let (fast3, recorded3) = both_ways(&lin, |v| {
        (linear_add(&v[0], &v[1], Some(&v[2]), Some(&v[3]))?.tanh()?).sum_all()
    })?;
    for (f, r) in fast
        .iter()
        .chain(&fast2)
        .chain(&fast3)
        .zip(recorded.iter().chain(&recorded2).chain(&recorded3))
    {
        for (a, b) in f.iter().zip(r) {
            let (a, b) = (a.as_f64(), b.as_f64());
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{} fast {a} vs recorded {b}",
                F::NAME
            );
        }
    }
    Ok(())
}

#[test]
fn fused_fast_and_recorded_rules_agree_in_f64_and_f32() -> Result<()> {
    fused_fast_and_recorded_rules_agree::<f64>(1e-12)?;
    // f32's fast tanh/sigmoid are a rational approximation (< 1e-6) in the fast kernels.
    fused_fast_and_recorded_rules_agree::<f32>(1e-5)
}
