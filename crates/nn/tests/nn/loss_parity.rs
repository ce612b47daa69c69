//! PyTorch parity of the losses with options: every case in `fixtures/torch/loss/losses.json`
//! (made by `tools/torch_loss_fixtures.py`) is recomputed, its value and input gradient compared
//! within 1e-12; and gradcheck for the new gradients.

use eddy_nn::loss::{
    binary_cross_entropy_with_logits_with, cross_entropy, cross_entropy_with, huber, smooth_l1,
    BceWithLogitsOptions, CrossEntropyOptions, Reduction,
};
use eddy_tape::{gradcheck, Error, GradcheckOptions, Result, Rng, Tape, Var};
use ndarray::{arr1, ArrayD, IxDyn};
use serde_json::{Map, Value};
use std::path::Path;

const TOL: f64 = 1e-12;

fn array(v: &Value) -> ArrayD<f64> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), data).unwrap()
}

fn reduction(o: &Map<String, Value>) -> Reduction {
    match o["reduction"].as_str().unwrap() {
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        other => panic!("unknown reduction {other}"),
    }
}

/// The eddy loss of a case, over the input `x` on `tape`.
fn loss(case: &Value, tape: &Tape<f64>, x: &Var<f64>) -> Result<Var<f64>> {
    let o = case["options"].as_object().unwrap();
    let target = &case["target"];
    let red = reduction(o);
    match case["loss"].as_str().unwrap() {
        "cross_entropy" => {
            let weight = o
                .get("weight")
                .map(|w| array(w).iter().copied().collect::<Vec<f64>>());
            let options = CrossEntropyOptions {
                weight: weight.as_deref(),
                ignore_index: o.get("ignore_index").map(|i| i.as_u64().unwrap() as usize),
                label_smoothing: o.get("label_smoothing").map_or(0.0, |v| v.as_f64().unwrap()),
                reduction: red,
            };
            match target {
                Value::Array(classes) => {
                    let classes: Vec<usize> = classes.iter().map(|c| c.as_u64().unwrap() as usize).collect();
                    cross_entropy_with(x, &classes, &options, None)
                }
                probs => cross_entropy_with(x, &tape.constant(array(probs)), &options, None),
            }
        }
        "smooth_l1" => {
            let beta = o.get("beta").map_or(1.0, |v| v.as_f64().unwrap());
            smooth_l1(x, &tape.constant(array(target)), beta, red, None)
        }
        "huber" => {
            let delta = o.get("delta").map_or(1.0, |v| v.as_f64().unwrap());
            huber(x, &tape.constant(array(target)), delta, red, None)
        }
        "bce_with_logits" => {
            let pw = o.get("pos_weight").map(array);
            let w = o.get("weight").map(array);
            let options = BceWithLogitsOptions {
                weight: w.as_ref(),
                pos_weight: pw.as_ref(),
                reduction: red,
            };
            binary_cross_entropy_with_logits_with(x, &tape.constant(array(target)), &options, None)
        }
        other => panic!("unknown loss {other}"),
    }
}

fn cases() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/torch/loss/losses.json");
    let data: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    data["cases"].as_array().unwrap().clone()
}

#[test]
fn every_loss_matches_pytorch_value_and_gradient() -> Result<()> {
    let cases = cases();
    assert_eq!(cases.len(), 22);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let tape = Tape::<f64>::new();
        let x = tape.input(array(&case["input"]));
        let l = loss(case, &tape, &x)?;
        let want = case["value"].as_f64().unwrap();
        assert!(
            (l.item()? - want).abs() <= TOL * want.abs().max(1.0),
            "{name}: {} vs {want}",
            l.item()?
        );
        let grads = l.backward()?;
        let got = grads.var(&x).expect("a gradient");
        let want = array(&case["grad"]);
        assert_eq!(got.shape(), want.shape(), "{name}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= TOL, "{name}: gradient {g} vs {w}");
        }
    }
    Ok(())
}

#[test]
fn the_new_losses_pass_gradcheck() -> Result<()> {
    let mut rng = Rng::seed(3);
    let opts = GradcheckOptions::default();
    let logits = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |_| rng.uniform_in(-2.0, 2.0));
    let classes = [0, 2, 9, 1, 1, 9, 0, 2];
    let weight = [0.5, 2.0, 1.0];
    let mask = arr1(&[1.0, 0.0, 1.0, 1.0]).into_dyn();
    for reduction in [Reduction::Mean, Reduction::Sum] {
        for m in [None, Some(&mask)] {
            let options = CrossEntropyOptions {
                weight: Some(&weight),
                ignore_index: Some(9),
                label_smoothing: 0.1,
                reduction,
            };
            gradcheck(
                |_, x| cross_entropy_with(&x[0], &classes, &options, m),
                std::slice::from_ref(&logits),
                &opts,
            )?;
        }
    }
    let probs = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |_| rng.uniform_in(0.0, 1.0));
    let x = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |_| rng.uniform_in(-2.0, 2.0));
    let pw = arr1(&[0.5, 1.0, 2.0, 4.0]).into_dyn();
    let w = ArrayD::from_shape_fn(IxDyn(&[3, 1]), |_| rng.uniform_in(0.5, 1.5));
    let options = BceWithLogitsOptions {
        weight: Some(&w),
        pos_weight: Some(&pw),
        reduction: Reduction::Mean,
    };
    // With respect to the logits and the (soft) targets.
    gradcheck(
        |_, v| binary_cross_entropy_with_logits_with(&v[0], &v[1], &options, None),
        &[x.clone(), probs.clone()],
        &opts,
    )?;
    // Away from smooth_l1's kinks: |d| in [0.1, 0.4] ∪ [0.6, 2] for β = 0.5.
    let d = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |_| {
        let m = if rng.uniform() < 0.5 {
            rng.uniform_in(0.1, 0.4)
        } else {
            rng.uniform_in(0.6, 2.0)
        };
        if rng.uniform() < 0.5 {
            m
        } else {
            -m
        }
    });
    let target = &x - &d;
    gradcheck(
        |_, v| smooth_l1(&v[0], &v[1], 0.5, Reduction::Mean, None),
        &[x.clone(), target],
        &opts,
    )?;
    Ok(())
}

#[test]
fn default_options_are_plain_cross_entropy() -> Result<()> {
    let tape = Tape::<f64>::new();
    let x = tape.input(ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| {
        (i[0] * 4 + i[1]) as f64 * 0.3
    }));
    let a = cross_entropy(&x, &[1, 3, 0], Reduction::Mean, None)?.item()?;
    let b = cross_entropy_with(&x, &[1, 3, 0], &CrossEntropyOptions::default(), None)?.item()?;
    assert!((a - b).abs() < 1e-15);
    // Everything ignored: a mean of nothing is 0 (PyTorch: NaN).
    let opts = CrossEntropyOptions {
        ignore_index: Some(2),
        ..Default::default()
    };
    assert_eq!(cross_entropy_with(&x, &[2, 2, 2], &opts, None)?.item()?, 0.0);
    Ok(())
}

#[test]
fn bad_options_are_clear_errors() {
    let tape = Tape::<f64>::new();
    let x = tape.input(ArrayD::zeros(vec![2, 3]));
    let ce = |o: CrossEntropyOptions, classes: &[usize]| cross_entropy_with(&x, classes, &o, None);
    let e = ce(
        CrossEntropyOptions {
            weight: Some(&[1.0, 2.0]),
            ..Default::default()
        },
        &[0, 1],
    );
    assert!(matches!(e, Err(Error::Shape { .. })), "{e:?}");
    let e = ce(
        CrossEntropyOptions {
            label_smoothing: 1.5,
            ..Default::default()
        },
        &[0, 1],
    );
    assert!(matches!(e, Err(Error::Invalid { .. })), "{e:?}");
    // An out-of-range index is an error unless it is the ignored one.
    assert!(matches!(
        ce(CrossEntropyOptions::default(), &[0, 5]),
        Err(Error::Invalid { .. })
    ));
    let ignore5 = CrossEntropyOptions {
        ignore_index: Some(5),
        ..Default::default()
    };
    assert!(ce(ignore5, &[0, 5]).is_ok());
    let probs = tape.constant(ArrayD::from_elem(vec![2, 3], 1.0 / 3.0));
    assert!(matches!(
        cross_entropy_with(&x, &probs, &ignore5, None),
        Err(Error::Invalid { .. })
    ));
    let y = tape.constant(ArrayD::zeros(vec![2, 3]));
    let bad_pw = arr1(&[1.0, 2.0]).into_dyn();
    let o = BceWithLogitsOptions {
        pos_weight: Some(&bad_pw),
        ..Default::default()
    };
    let e = binary_cross_entropy_with_logits_with(&x, &y, &o, None);
    assert!(matches!(e, Err(Error::Shape { .. })), "{e:?}");
    assert!(smooth_l1(&x, &y, -1.0, Reduction::Mean, None).is_err());
}
