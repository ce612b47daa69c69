//! Tests of the engine through the op catalogue: higher-order gradients, jvp, anomaly
//! detection, accumulation, detach, no-grad tapes, retain_graph, freeing and `Grads`.

use eddy_ops::prelude::*;
use ndarray::{arr1, arr2, ArrayD};
use std::sync::Arc;

fn arr(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut rng = Rng::seed(seed);
    ArrayD::from_shape_simple_fn(shape, || rng.uniform_in(-1.0, 1.0))
}

fn assert_close(a: &ArrayD<f64>, b: &ArrayD<f64>, tol: f64) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{a} vs {b}");
    }
}

/// `Σ tanh(x · W1) · W2` for a fixed `x`.
fn net(tape: &Tape<f64>, x: &ArrayD<f64>, w1: &Param<f64>, w2: &Param<f64>) -> Result<Var<f64>> {
    let x = tape.constant(x.clone());
    x.matmul(&tape.param(w1))?
        .tanh()?
        .matmul(&tape.param(w2))?
        .sum_all()
}

/// The gradient of `net` in both parameters, on a fresh tape.
fn net_grad(x: &ArrayD<f64>, w1: &ArrayD<f64>, w2: &ArrayD<f64>) -> Result<(ArrayD<f64>, ArrayD<f64>)> {
    let (p1, p2) = (Param::new("w1", w1.clone()), Param::new("w2", w2.clone()));
    let g = net(&Tape::new(), x, &p1, &p2)?.backward()?;
    Ok((g.param(&p1).unwrap().clone(), g.param(&p2).unwrap().clone()))
}

#[test]
fn hessian_vector_product_matches_finite_differences_of_the_gradient() -> Result<()> {
    let x = arr(&[5, 3], 1);
    let (w1, w2) = (arr(&[3, 4], 2), arr(&[4, 2], 3));
    let (v1, v2) = (arr(&[3, 4], 4), arr(&[4, 2], 5));
    let (p1, p2) = (Param::new("w1", w1.clone()), Param::new("w2", w2.clone()));

    // H·v = ∇(∇L · v): a first pass with create_graph, then the gradient of the dot product.
    let tape = Tape::new();
    let y = net(&tape, &x, &p1, &p2)?;
    let (b1, b2) = (tape.param(&p1), tape.param(&p2));
    let g = tape.grad(&[&y], None, &[&b1, &b2], GradOptions::create_graph())?;
    let (g1, g2) = (g[0].clone().unwrap(), g[1].clone().unwrap());
    assert!(g1.requires_grad() && g2.requires_grad());
    let dot =
        ((&g1 * &tape.constant(v1.clone()))?.sum_all()? + (&g2 * &tape.constant(v2.clone()))?.sum_all()?)?;
    let hv = tape.grad(&[&dot], None, &[&b1, &b2], GradOptions::default())?;

    // Central differences of the gradient along v.
    let eps = 1e-5;
    let (gp1, gp2) = net_grad(&x, &(&w1 + &(&v1 * eps)), &(&w2 + &(&v2 * eps)))?;
    let (gm1, gm2) = net_grad(&x, &(&w1 - &(&v1 * eps)), &(&w2 - &(&v2 * eps)))?;
    let fd1 = (&gp1 - &gm1) / (2.0 * eps);
    let fd2 = (&gp2 - &gm2) / (2.0 * eps);
    assert_close(hv[0].as_ref().unwrap().value(), &fd1, 1e-6);
    assert_close(hv[1].as_ref().unwrap().value(), &fd2, 1e-6);
    Ok(())
}

#[test]
fn jvp_matches_finite_differences_along_the_tangent() -> Result<()> {
    let (x0, w0) = (arr(&[2, 3], 6), arr(&[3, 4], 7));
    let (u, t) = (arr(&[2, 3], 8), arr(&[3, 4], 9));
    let f = |x: &Var<f64>, w: &Var<f64>| -> Result<Var<f64>> { x.matmul(w)?.tanh()?.softmax(-1) };
    let tape = Tape::new();
    let (x, w) = (tape.input(x0.clone()), tape.input(w0.clone()));
    let y = f(&x, &w)?;
    let jv = tape.jvp(
        &y,
        &[&x, &w],
        &[&tape.constant(u.clone()), &tape.constant(t.clone())],
        false,
    )?;

    let eps = 1e-6;
    let at = |s: f64| -> Result<ArrayD<f64>> {
        let tape = Tape::no_grad();
        let x = tape.constant(&x0 + &(&u * s));
        let w = tape.constant(&w0 + &(&t * s));
        Ok(f(&x, &w)?.value().clone())
    };
    let fd = (at(eps)? - at(-eps)?) / (2.0 * eps);
    assert_eq!(jv.shape(), y.shape());
    assert_close(jv.value(), &fd, 1e-7);
    Ok(())
}

#[test]
fn jvp_of_an_output_that_does_not_depend_on_the_input_is_zero() -> Result<()> {
    let tape = Tape::<f64>::new();
    let (x, z) = (
        tape.input(arr1(&[1.0, 2.0]).into_dyn()),
        tape.input(arr1(&[3.0]).into_dyn()),
    );
    let y = z.exp()?;
    let jv = tape.jvp(&y, &[&x], &[&tape.constant(arr1(&[1.0, 1.0]).into_dyn())], false)?;
    assert_eq!(jv.value(), &arr1(&[0.0]).into_dyn());
    Ok(())
}

#[test]
fn anomaly_detection_names_the_op_whose_forward_is_not_finite() {
    let tape = Tape::<f64>::with_anomaly_detection();
    let x = tape.input(arr1(&[1.0, -1.0]).into_dyn());
    let e = x.log().unwrap_err();
    assert_eq!(
        e,
        Error::NonFinite {
            op: "log".into(),
            phase: "forward",
            shape: vec![2]
        }
    );
    assert_eq!(
        e.to_string(),
        "log: forward produced a non-finite value (NaN or infinity) in an output of shape [2]"
    );
    // Without anomaly detection the NaN goes through silently.
    let quiet = Tape::<f64>::new();
    assert!(quiet.input(arr1(&[-1.0]).into_dyn()).log().unwrap().value()[0].is_nan());
}

#[test]
fn anomaly_detection_names_the_op_whose_backward_is_not_finite() -> Result<()> {
    // √x is finite at 0, its derivative 1/(2√x) is not.
    let tape = Tape::<f64>::with_anomaly_detection();
    let x = tape.input(arr1(&[0.0, 4.0]).into_dyn());
    let y = x.sqrt()?.sum_all()?;
    let e = y.backward().unwrap_err();
    match e.root() {
        Error::NonFinite { op, phase, shape } => {
            assert_eq!(
                (op.as_str(), *phase, shape.as_slice()),
                ("sqrt", "backward", &[2][..]),
                "{e}"
            );
        }
        other => panic!("{other}"),
    }
    Ok(())
}

#[test]
fn a_var_used_many_times_accumulates_its_gradient() -> Result<()> {
    let tape = Tape::<f64>::new();
    let x = tape.input(arr1(&[0.5, -2.0]).into_dyn());
    // y = x·x + 3x + x + eˣ: dy/dx = 2x + 4 + eˣ
    let y = ((((&x * &x)? + (&x * 3.0)?)? + &x)? + x.exp()?)?.sum_all()?;
    let g = y.backward()?;
    let want = x.value().mapv(|v| 2.0 * v + 4.0 + v.exp());
    assert_close(g.var(&x).unwrap(), &want, 1e-15);
    // A parameter bound twice is one Var, so its gradient is collected in one place.
    let p = Param::new("p", arr1(&[1.5]).into_dyn());
    let tape = Tape::<f64>::new();
    let (a, b) = (tape.param(&p), tape.param(&p));
    assert_eq!(a.slot(), b.slot());
    let g = (&a * &b)?.sum_all()?.backward()?;
    assert_eq!(g.param(&p).unwrap(), &arr1(&[3.0]).into_dyn());
    Ok(())
}

#[test]
fn detach_stops_gradients() -> Result<()> {
    let tape = Tape::<f64>::new();
    let x = tape.input(arr1(&[3.0, -1.0]).into_dyn());
    let d = x.detach();
    assert!(!d.requires_grad());
    assert!(
        Arc::ptr_eq(d.value_arc(), x.value_arc()),
        "detach shares the value"
    );
    let g = (&x * &d)?.sum_all()?.backward()?;
    assert_eq!(g.var(&x).unwrap(), x.value(), "d(x·c)/dx = c, not 2x");
    assert!(g.var(&d).is_none());
    // Nothing reaches a value computed only from detached ones.
    let z = d.exp()?.sum_all()?;
    assert!(!z.requires_grad());
    assert!(z.backward()?.var(&x).is_none());
    Ok(())
}

#[test]
fn a_no_grad_tape_records_nothing_but_computes_values() -> Result<()> {
    let tape = Tape::<f64>::no_grad();
    assert!(!tape.is_recording());
    let w = Param::new("w", arr2(&[[1.0, 2.0], [3.0, 4.0]]).into_dyn());
    let x = tape.input(arr2(&[[1.0, 1.0]]).into_dyn());
    let y = x.matmul(&tape.param(&w))?.tanh()?;
    assert_eq!(tape.len(), 0);
    assert!(tape.is_empty());
    assert!(!y.requires_grad());
    assert_close(y.value(), &arr2(&[[4f64.tanh(), 6f64.tanh()]]).into_dyn(), 1e-15);
    let g = y.sum_all()?.backward()?;
    assert!(g.param(&w).is_none());
    Ok(())
}

#[test]
fn retain_graph_runs_backward_twice_and_without_it_the_graph_is_freed() -> Result<()> {
    let tape = Tape::<f64>::new();
    let w = Param::new("w", arr(&[3, 2], 10));
    let x = tape.input(arr(&[4, 3], 11));
    let y = x.matmul(&tape.param(&w))?.sigmoid()?.sum_all()?;
    let first = y.backward_with(GradOptions::retain_graph())?;
    let second = y.backward_with(GradOptions::retain_graph())?;
    assert_eq!(first.param(&w), second.param(&w));
    assert_eq!(first.var(&x), second.var(&x));
    let third = y.backward()?;
    assert_eq!(first.param(&w), third.param(&w));
    let e = y.backward().unwrap_err();
    assert_eq!(e, Error::GraphFreed { op: "sum_to".into() });
    assert_eq!(
        e.to_string(),
        "sum_to: its saved values were freed by an earlier backward pass; pass retain_graph to run backward twice"
    );
    Ok(())
}

#[test]
fn saved_values_are_freed_after_backward() -> Result<()> {
    let tape = Tape::<f64>::new();
    let x = tape.input(arr(&[3, 3], 12));
    let h = x.tanh()?;
    let y = (&h * &h)?.sum_all()?;
    // x is held by x alone (tanh's rule reads its output, not its input); h by h, the tanh
    // node's output and twice by mul.
    assert_eq!(Arc::strong_count(x.value_arc()), 1);
    assert_eq!(Arc::strong_count(h.value_arc()), 4);
    y.backward_with(GradOptions::retain_graph())?;
    assert_eq!(Arc::strong_count(h.value_arc()), 4, "retain_graph keeps them");
    y.backward()?;
    assert_eq!(Arc::strong_count(h.value_arc()), 1);
    Ok(())
}

#[test]
fn a_value_no_backward_rule_reads_is_not_kept() -> Result<()> {
    // A cell step's shape: (xw + h·W) split in gates, each through an activation, multiplied.
    let tape = Tape::<f64>::new();
    let w = Param::new("w", arr(&[4, 8], 20));
    let (xw, h) = (tape.input(arr(&[2, 8], 21)), tape.input(arr(&[2, 4], 22)));
    let product = h.matmul(&tape.param(&w))?;
    let gates = (&xw + &product)?;
    let parts = gates.chunk(2, 1)?;
    let (a, b) = (parts[0].sigmoid()?, parts[1].tanh()?);
    let y = (&a * &b)?.sum_all()?;
    // matmul keeps its inputs, not its output; add and split keep shapes; sigmoid and tanh
    // their outputs: the product, the sum and the parts are held by the program alone.
    for v in [&product, &gates, &parts[0], &parts[1]] {
        assert_eq!(Arc::strong_count(v.value_arc()), 1);
    }
    assert_eq!(Arc::strong_count(h.value_arc()), 2, "matmul reads h");
    assert_eq!(
        Arc::strong_count(a.value_arc()),
        3,
        "sigmoid's output, read by mul"
    );
    let grads = y.backward()?;
    for g in [grads.var(&xw), grads.var(&h), grads.param(&w)] {
        assert!(g.expect("a gradient").iter().all(|v| v.is_finite()));
    }
    Ok(())
}

#[test]
fn a_rule_that_reads_a_value_it_did_not_declare_gets_nan() -> Result<()> {
    /// `x²`, whose rule reads `x` while declaring that it reads shapes only: a broken op.
    struct Square;
    impl Op<f64> for Square {
        fn name(&self) -> &str {
            "square"
        }
        fn shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
            Ok(inputs[0].to_vec())
        }
        fn forward(&self, inputs: &[&ArrayD<f64>]) -> Result<ArrayD<f64>> {
            Ok(inputs[0].mapv(|x| x * x))
        }
        fn backward(&self, inputs: &[Var<f64>], _: &Var<f64>, g: &Var<f64>) -> Result<Vec<Option<Var<f64>>>> {
            Ok(vec![Some((&inputs[0].scale(2.0)? * g)?)])
        }
        fn saves(&self) -> Saves {
            Saves::SHAPES
        }
    }
    let tape = Tape::<f64>::new();
    let x = tape.input(arr(&[3], 23));
    let grads = tape.apply(Square, &[&x])?.sum_all()?.backward()?;
    let dx = grads.var(&x).expect("a gradient");
    assert_eq!(dx.shape(), &[3]);
    assert!(dx.iter().all(|v| v.is_nan()), "NaN, not a plausible number: {dx}");
    Ok(())
}

#[test]
fn grads_are_send_and_sum_parameter_gradients() -> Result<()> {
    fn assert_send<T: Send>(_: &T) {}
    let w = Param::new("w", arr(&[2, 2], 13));
    let shard = |seed: u64| -> Result<Grads<f64>> {
        let tape = Tape::new();
        let x = tape.constant(arr(&[3, 2], seed));
        x.matmul(&tape.param(&w))?.tanh()?.sum_all()?.backward()
    };
    // Shards on other threads, summed in order.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| shard(1));
        let b = s.spawn(|| shard(2));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, b) = (a?, b?);
    assert_send(&a);
    let mut total = Grads::default();
    total += &a;
    total += &b;
    let want = a.param(&w).unwrap() + b.param(&w).unwrap();
    assert_eq!(total.param(&w).unwrap(), &want);
    // The full batch gives the same gradient as the sum of its shards.
    let tape = Tape::new();
    let x = ndarray::concatenate(
        ndarray::Axis(0),
        &[arr(&[3, 2], 1).view(), arr(&[3, 2], 2).view()],
    )
    .unwrap();
    let full = tape
        .constant(x)
        .matmul(&tape.param(&w))?
        .tanh()?
        .sum_all()?
        .backward()?;
    assert_close(full.param(&w).unwrap(), &want, 1e-14);
    total.scale(0.5);
    assert_close(total.param(&w).unwrap(), &(&want * 0.5), 1e-15);
    Ok(())
}

#[test]
fn grad_of_a_var_that_is_not_a_leaf_and_of_an_unused_input() -> Result<()> {
    let tape = Tape::<f64>::new();
    let x = tape.input(arr1(&[0.3, 0.7]).into_dyn());
    let unused = tape.input(arr1(&[1.0]).into_dyn());
    let h = x.exp()?;
    let y = (&h * &h)?.sum_all()?;
    let g = tape.grad(&[&y], None, &[&h, &x, &unused], GradOptions::retain_graph())?;
    assert_close(g[0].as_ref().unwrap().value(), &(h.value() * 2.0), 1e-15);
    assert_close(
        g[1].as_ref().unwrap().value(),
        &(h.value() * h.value() * 2.0),
        1e-14,
    );
    assert!(g[2].is_none());
    Ok(())
}

#[test]
fn grad_rejects_vars_of_another_tape() -> Result<()> {
    let (t1, t2) = (Tape::<f64>::new(), Tape::<f64>::new());
    let x1 = t1.input(arr1(&[1.0, 2.0]).into_dyn());
    let x2 = t2.input(arr1(&[5.0, 6.0]).into_dyn());
    let y1 = x1.exp()?.sum_all()?;
    let e = t1
        .grad(&[&y1], None, &[&x2], GradOptions::retain_graph())
        .unwrap_err();
    assert_eq!(e, Error::TapeMismatch { op: "grad".into() });
    let y2 = x2.exp()?.sum_all()?;
    assert!(matches!(
        t1.grad(&[&y2], None, &[&x1], GradOptions::default()),
        Err(Error::TapeMismatch { .. })
    ));
    let seed = t2.scalar(1.0);
    assert!(matches!(
        t1.grad(&[&y1], Some(&[&seed]), &[&x1], GradOptions::default()),
        Err(Error::TapeMismatch { .. })
    ));
    // Grads of one tape know nothing of another tape's Vars.
    let g = y1.backward()?;
    assert!(g.var(&x2).is_none());
    Ok(())
}
