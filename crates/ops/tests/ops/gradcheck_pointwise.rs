//! `pointwise`: a user's gate math as one op. gradcheck proves its fast backward (dual numbers in
//! the compiled loop) and gradgradcheck its recorded rule (the same math over tape values); the
//! values and gradients equal those of the same math written with separate ops, in `f32` and
//! `f64`; bad shapes are errors.

use crate::common::{check, config};
use eddy_ops::pointwise::{pointwise, Pointwise, PointwiseOp, Real};
use eddy_ops::prelude::*;
use eddy_tape::strategies::array;
use eddy_tape::{Error, Float, GradOptions};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

/// An LSTM's gate math: `i, f, g, o, c` to `h, c`.
struct LstmGates;
impl Pointwise<5, 2> for LstmGates {
    #[inline]
    fn eval<R: Real>(&self, [i, f, g, o, c]: [R; 5]) -> [R; 2] {
        let c = f.sigmoid() * c + i.sigmoid() * g.tanh();
        [o.sigmoid() * c.tanh(), c]
    }
}

/// Every function of `Real`, a division and a blend through `step`, into one output.
struct Everything;
impl Pointwise<3, 1> for Everything {
    #[inline]
    fn eval<R: Real>(&self, [a, b, w]: [R; 3]) -> [R; 1] {
        let pos = a * a + R::of(0.25);
        let s = b.step();
        let blend = s * (b + R::of(0.5)) + (R::of(1.0) - s) * b.sigmoid();
        let y = a.tanh() * w + pos.ln() - pos.sqrt() / (R::of(1.0) + b.exp())
            + a.log_sigmoid() * b.softplus()
            + (a - b).relu() * w
            - blend * -w;
        [y]
    }
}

/// `y · tanh(y)` summed: nonlinear, so second derivatives flow through the op under test.
fn bend(y: &Var<f64>) -> Result<Var<f64>> {
    (y * &y.tanh()?)?.sum_all()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn lstm_gates_both_outputs_and_either_alone(
        (gates, c) in (1usize..=3, 1usize..=3).prop_flat_map(|(b, h)| (array(vec![b, 4 * h]), array(vec![b, h]))),
        used in 0usize..3,
    ) {
        check(|_, v| {
            let [h, c] = pointwise(LstmGates, &[(&v[0], 4), (&v[1], 1)])?;
            match used {
                0 => bend(&h),
                1 => bend(&c),
                _ => bend(&h)? + bend(&c)?,
            }
        }, &[gates, c])?;
    }

    #[test]
    fn every_function_with_a_broadcast_input_and_any_rank(
        (ab, w) in (0usize..=2, 1usize..=3).prop_flat_map(|(lead, n)| {
            let shape: Vec<usize> = [2, 3][..lead].iter().copied().chain([2 * n]).collect();
            (array(shape), array(vec![n]))
        }),
    ) {
        check(|_, v| {
            let [y] = pointwise(Everything, &[(&v[0], 2), (&v[1], 1)])?;
            bend(&y)
        }, &[ab, w])?;
    }
}

/// The same LSTM math as separate ops.
fn composed<F: Float + Real>(gates: &Var<F>, c: &Var<F>) -> Result<(Var<F>, Var<F>)> {
    let [i, f, g, o]: [Var<F>; 4] = gates.chunk(4, -1)?.try_into().expect("four");
    let c = ((&f.sigmoid()? * c)? + (&i.sigmoid()? * &g.tanh()?)?)?;
    Ok(((&o.sigmoid()? * &c.tanh()?)?, c))
}

/// The outputs of `f` at `inputs` and the gradients of `Σ y·y + Σ y₀·y₋₁` for the inputs, from a
/// backward with `options`.
fn outputs_and_grads<F: Float + Real>(
    inputs: &[ArrayD<F>],
    options: GradOptions,
    f: impl Fn(&[Var<F>]) -> Result<Vec<Var<F>>>,
) -> Result<Vec<ArrayD<F>>> {
    let tape = Tape::<F>::new();
    let vars: Vec<Var<F>> = inputs.iter().map(|x| tape.input(x.clone())).collect();
    let ys = f(&vars)?;
    let mut loss = (&ys[0] * &ys[ys.len() - 1])?.sum_all()?;
    for y in &ys {
        loss = (loss + (y * y)?.sum_all()?)?;
    }
    let grads = loss.backward_with(options)?;
    let mut out: Vec<ArrayD<F>> = ys.iter().map(|y| y.value().clone()).collect();
    out.extend(vars.iter().map(|v| grads.var(v).expect("a gradient").clone()));
    Ok(out)
}

fn assert_close<F: Float>(what: &str, a: &[ArrayD<F>], b: &[ArrayD<F>], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (k, (a, b)) in a.iter().zip(b).enumerate() {
        assert_eq!(a.shape(), b.shape(), "{what}, array {k}");
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x - *y).abs().as_f64() / (1.0 + y.abs().as_f64()))
            .fold(0.0, f64::max);
        assert!(
            worst <= tol,
            "{what}, array {k}: relative difference {worst:e} > {tol:e}"
        );
    }
}

/// Values and first-order gradients three ways — the fused op's fast rule, its recorded rule
/// (`create_graph`), and the same math as separate ops — in `F`, to `tol`.
fn three_ways<F: Float + Real>(tol: f64) -> Result<()> {
    let (b, h) = (5, 37);
    let val = |k: usize, s: f64| <F as Float>::of(((k as f64) * 0.37 + s).sin() * 3.0);
    let gates = ArrayD::from_shape_fn(IxDyn(&[b, 4 * h]), |ix| val(ix[0] * 4 * h + ix[1], 0.1));
    let c = ArrayD::from_shape_fn(IxDyn(&[b, h]), |ix| val(ix[0] * h + ix[1], 1.7));
    let fused = |v: &[Var<F>]| Ok(pointwise(LstmGates, &[(&v[0], 4), (&v[1], 1)])?.to_vec());
    let inputs = [gates, c];
    let fast = outputs_and_grads(&inputs, GradOptions::default(), fused)?;
    let recorded = outputs_and_grads(&inputs, GradOptions::create_graph(), fused)?;
    let plain = outputs_and_grads(&inputs, GradOptions::default(), |v| {
        let (h, c) = composed(&v[0], &v[1])?;
        Ok(vec![h, c])
    })?;
    assert_close("lstm: fast against separate ops", &fast, &plain, tol);
    assert_close("lstm: recorded against fast", &recorded, &fast, tol);
    // Every function, a broadcast input, three axes.
    let ab = ArrayD::from_shape_fn(IxDyn(&[2, 3, 2 * h]), |ix| {
        val(ix[0] * 97 + ix[1] * 13 + ix[2], 0.4)
    });
    let w = ArrayD::from_shape_fn(IxDyn(&[h]), |ix| val(ix[0], 2.2));
    let every = |v: &[Var<F>]| Ok(pointwise(Everything, &[(&v[0], 2), (&v[1], 1)])?.to_vec());
    let inputs = [ab, w];
    let fast = outputs_and_grads(&inputs, GradOptions::default(), every)?;
    let recorded = outputs_and_grads(&inputs, GradOptions::create_graph(), every)?;
    assert_close("every function: recorded against fast", &recorded, &fast, tol);
    Ok(())
}

#[test]
fn fast_and_recorded_rules_and_separate_ops_agree() -> Result<()> {
    three_ways::<f64>(1e-13)?;
    // The f32 activations are within a few ulp of each other's formulas.
    three_ways::<f32>(1e-5)
}

#[test]
fn bad_shapes_are_errors_that_name_the_op() {
    let tape = Tape::<f64>::new();
    let a = tape.input(ArrayD::zeros(IxDyn(&[2, 8])));
    let c = tape.input(ArrayD::zeros(IxDyn(&[2, 2])));
    let c3 = tape.input(ArrayD::zeros(IxDyn(&[3, 2])));
    let cases: Vec<(&str, Result<[Var<f64>; 2]>)> = vec![
        ("parts add to 4, not 5", pointwise(LstmGates, &[(&a, 3), (&c, 1)])),
        (
            "widths 2 and 4",
            pointwise(LstmGates, &[(&a, 2), (&a, 2), (&c, 1)]),
        ),
        ("rows 2 and 3", pointwise(LstmGates, &[(&a, 4), (&c3, 1)])),
        ("8 does not split in 3", pointwise(LstmGates, &[(&a, 3), (&c, 2)])),
        ("no inputs", pointwise(LstmGates, &[])),
    ];
    for (what, r) in cases {
        match r {
            Err(e @ (Error::Shape { .. } | Error::Arity { .. })) => {
                assert!(e.to_string().contains("pointwise"), "{what}: {e}")
            }
            Err(e) => panic!("{what}: unexpected error {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
}

/// Split over two threads (enough rows and elements for it), the values and gradients are the
/// same bits as on one: every element is computed alone.
#[test]
fn two_threads_give_the_bits_of_one() -> Result<()> {
    let (b, h) = (8, 1024);
    let val = |k: usize, s: f64| ((k as f64) * 0.37 + s).sin() as f32 * 3.0;
    let gates = ArrayD::from_shape_fn(IxDyn(&[b, 4 * h]), |ix| val(ix[0] * 4 * h + ix[1], 0.1));
    let c = ArrayD::from_shape_fn(IxDyn(&[b, h]), |ix| val(ix[0] * h + ix[1], 1.7));
    let inputs = [gates, c];
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a pool");
        pool.install(|| {
            outputs_and_grads(&inputs, GradOptions::default(), |v| {
                Ok(pointwise(LstmGates, &[(&v[0], 4), (&v[1], 1)])?.to_vec())
            })
        })
    };
    assert_eq!(run(1)?, run(2)?);
    Ok(())
}

/// The op built with `save: false` (as on a tape where nothing needed a gradient) still gives
/// the same gradients, bit for bit: its backward computes the function values it did not save.
#[test]
fn a_forward_that_saved_nothing_still_has_its_gradients() -> Result<()> {
    let val = |k: usize, s: f64| ((k as f64) * 0.53 + s).sin() * 2.0;
    let gates = ArrayD::from_shape_fn(IxDyn(&[3, 4 * 21]), |ix| val(ix[0] * 84 + ix[1], 0.3));
    let c = ArrayD::from_shape_fn(IxDyn(&[3, 21]), |ix| val(ix[0] * 21 + ix[1], 2.1));
    let inputs = [gates, c];
    let saved = outputs_and_grads(&inputs, GradOptions::default(), |v| {
        Ok(pointwise(LstmGates, &[(&v[0], 4), (&v[1], 1)])?.to_vec())
    })?;
    let unsaved = outputs_and_grads(&inputs, GradOptions::default(), |v| {
        let op = PointwiseOp::<_, 5, 2> {
            p: LstmGates,
            parts: vec![4, 1],
            save: false,
        };
        let outs = v[0].tape().apply_multi(op, &[&v[0], &v[1]])?;
        assert_eq!(outs[2].shape(), [3, 0], "nothing saved");
        Ok(outs[..2].to_vec())
    })?;
    assert_eq!(saved, unsaved);
    Ok(())
}
