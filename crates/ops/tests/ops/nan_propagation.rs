//! Max- and clamp-style ops propagate NaN as PyTorch does, so that a NaN is never hidden (and
//! anomaly detection sees the op that made it): `relu`, `maximum` (either side, broadcast),
//! `max` over an axis (and its gradient goes to the NaN), `softplus`, `abs`, `logaddexp`,
//! `logsumexp`, `softmax`.

use eddy_ops::prelude::*;
use ndarray::{arr1, arr2, ArrayD};

fn input(t: &Tape<f64>, v: &[f64]) -> Var<f64> {
    t.input(arr1(v).into_dyn())
}

fn vals(v: &Var<f64>) -> Vec<f64> {
    v.value().iter().copied().collect()
}

const NAN: f64 = f64::NAN;

#[test]
fn maximum_returns_the_nan_of_either_side() {
    let t = Tape::<f64>::new();
    let a = input(&t, &[NAN, 1.0, 3.0, NAN]);
    let b = input(&t, &[2.0, NAN, 1.0, NAN]);
    let m = vals(&a.maximum(&b).unwrap());
    assert!(m[0].is_nan() && m[1].is_nan() && m[3].is_nan(), "{m:?}");
    assert_eq!(m[2], 3.0);
    // Broadcast: a NaN scalar against a vector, both ways round.
    let s = t.input(ArrayD::from_elem(vec![1], NAN));
    let v = input(&t, &[-1.0, 5.0]);
    assert!(vals(&s.maximum(&v).unwrap()).iter().all(|x| x.is_nan()));
    assert!(vals(&v.maximum(&s).unwrap()).iter().all(|x| x.is_nan()));
    // Infinities are ordinary values.
    let i = input(&t, &[f64::NEG_INFINITY, f64::INFINITY]);
    assert_eq!(
        vals(&i.maximum(&input(&t, &[0.0, 0.0])).unwrap()),
        [0.0, f64::INFINITY]
    );
}

#[test]
fn maximum_under_anomaly_detection_is_named() {
    // A NaN parameter reaching maximum, on either side: maximum's output holds it, so anomaly
    // detection names maximum (before, `maximum(NaN, 0)` was 0 and nothing was seen).
    let t = Tape::<f64>::with_anomaly_detection();
    let p = Param::new("p", arr1(&[NAN, 1.0]).into_dyn());
    let q = t.input(arr1(&[0.0, 0.0]).into_dyn());
    for e in [q.maximum(&t.param(&p)), t.param(&p).maximum(&q)] {
        let e = e.unwrap_err().to_string();
        assert!(
            e.starts_with("maximum: forward produced a non-finite value"),
            "{e}"
        );
    }
}

#[test]
fn max_over_an_axis_is_nan_if_the_lane_holds_one_and_routes_the_gradient_there() {
    let t = Tape::<f64>::new();
    let x = t.input(arr2(&[[1.0, NAN, 5.0], [2.0, 3.0, 1.0], [NAN, 9.0, NAN]]).into_dyn());
    let m = x.max(1, false).unwrap();
    let v = vals(&m);
    assert!(v[0].is_nan() && v[2].is_nan(), "{v:?}");
    assert_eq!(v[1], 3.0);
    let g = m.sum_all().unwrap().backward().unwrap();
    let gx = g.var(&x).unwrap();
    // The gradient goes to the first NaN of each lane (PyTorch's max(dim) index), else the max.
    assert_eq!(
        gx.iter().copied().collect::<Vec<_>>(),
        [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    );
}

#[test]
fn other_max_style_ops_keep_nan() {
    let t = Tape::<f64>::new();
    let x = input(&t, &[NAN, -1.0, 2.0]);
    for (name, y) in [
        ("relu", x.relu().unwrap()),
        ("softplus", x.softplus().unwrap()),
        ("abs", x.abs().unwrap()),
        ("logaddexp", x.logaddexp(&input(&t, &[0.0, 0.0, 0.0])).unwrap()),
        (
            "logaddexp (other side)",
            input(&t, &[0.0, 0.0, 0.0]).logaddexp(&x).unwrap(),
        ),
    ] {
        assert!(vals(&y)[0].is_nan(), "{name}: {:?}", vals(&y));
        assert!(vals(&y)[1..].iter().all(|v| v.is_finite()), "{name}");
    }
    for (name, y) in [
        ("logsumexp", x.logsumexp(0, false).unwrap()),
        ("softmax", x.softmax(0).unwrap()),
        ("max", x.max(0, false).unwrap()),
    ] {
        assert!(vals(&y).iter().all(|v| v.is_nan()), "{name}: {:?}", vals(&y));
    }
}
