//! Windowing, time-ordered splits, scaling and padding.

use eddy_nn::data::{pad_sequences, split, window, Scaler, Targets, Window};
use ndarray::{arr2, Array1, ArrayD};

fn series(n: usize, f: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(vec![n, f], |ix| (ix[0] * 10 + ix[1]) as f64)
}

#[test]
fn windows_and_targets() {
    let s = series(10, 2);
    let w = Window {
        input_len: 3,
        horizon: 2,
        targets: Targets::Next,
    };
    let (x, y) = window(&s, &w).unwrap();
    assert_eq!(x.shape(), &[6, 3, 2]);
    assert_eq!(y.shape(), &[6, 2]);
    assert_eq!(x[[0, 2, 1]], 21.0);
    assert_eq!(y[[0, 0]], 40.0); // two steps after row 2
    assert_eq!(y[[5, 1]], 91.0);
    let (xs, ys) = window(
        &s,
        &Window {
            targets: Targets::Sequence,
            ..w.clone()
        },
    )
    .unwrap();
    assert_eq!(xs, x);
    assert_eq!(ys.shape(), &[6, 3, 2]);
    for m in 0..6 {
        for t in 0..3 {
            assert_eq!(ys[[m, t, 0]], x[[m, t, 0]] + 20.0);
        }
    }
    // 1-D series: one feature.
    let one = Array1::range(0.0, 5.0, 1.0).into_dyn();
    let (x1, y1) = window(
        &one,
        &Window {
            input_len: 4,
            horizon: 1,
            targets: Targets::Next,
        },
    )
    .unwrap();
    assert_eq!((x1.shape(), y1.shape()), (&[1, 4, 1][..], &[1, 1][..]));
    assert_eq!(y1[[0, 0]], 4.0);
}

#[test]
fn window_errors() {
    let s = series(4, 1);
    let e = window(
        &s,
        &Window {
            input_len: 4,
            horizon: 1,
            targets: Targets::Next,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("too short"), "{e}");
    assert!(window(
        &s,
        &Window {
            input_len: 0,
            horizon: 1,
            targets: Targets::Next
        }
    )
    .is_err());
    assert!(window(
        &s,
        &Window {
            input_len: 1,
            horizon: 0,
            targets: Targets::Next
        }
    )
    .is_err());
    let cube = ArrayD::<f64>::zeros(vec![4, 2, 2]);
    assert!(window(
        &cube,
        &Window {
            input_len: 1,
            horizon: 1,
            targets: Targets::Next
        }
    )
    .is_err());
}

#[test]
fn splits_keep_time_order() {
    let s = series(10, 1);
    let (a, b, c) = split(&s, 0.6, 0.2).unwrap();
    assert_eq!((a.shape()[0], b.shape()[0], c.shape()[0]), (6, 2, 2));
    assert_eq!(a[[5, 0]], 50.0);
    assert_eq!(b[[0, 0]], 60.0);
    assert_eq!(c[[1, 0]], 90.0);
    let (_, b, c) = split(&s, 1.0, 0.0).unwrap();
    assert_eq!((b.shape()[0], c.shape()[0]), (0, 0));
    assert!(split(&s, 0.7, 0.5).is_err());
    assert!(split(&s, -0.1, 0.5).is_err());
    assert!(split(&s, 0.0, 0.5).is_err());
}

#[test]
fn scalers_fit_on_train_and_invert() {
    let train = arr2(&[[0.0, 5.0], [10.0, 5.0], [5.0, 5.0]]).into_dyn();
    let mm = Scaler::min_max(&train).unwrap();
    let t = mm.transform(&train).unwrap();
    assert_eq!(t, arr2(&[[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]]).into_dyn()); // constant column → 0
                                                                           // Test data outside the train range is not clipped: fitted on train only.
    let test = arr2(&[[20.0, 6.0]]).into_dyn();
    assert_eq!(mm.transform(&test).unwrap()[[0, 0]], 2.0);
    assert_eq!(mm.inverse_transform(&mm.transform(&test).unwrap()).unwrap(), test);
    let st = Scaler::standard(&train).unwrap();
    let z = st.transform(&train).unwrap();
    let col0: Vec<f64> = (0..3).map(|i| z[[i, 0]]).collect();
    assert!(col0.iter().sum::<f64>().abs() < 1e-12);
    assert!((col0.iter().map(|v| v * v).sum::<f64>() / 3.0 - 1.0).abs() < 1e-12);
    // Windows [M, T, F] scale on their last axis; a column subset inverts predictions.
    let windows = ArrayD::from_shape_fn(vec![2, 3, 2], |ix| ix[0] as f64 * 10.0 + ix[2] as f64 * 5.0);
    let back = st.inverse_transform(&st.transform(&windows).unwrap()).unwrap();
    assert!((&back - &windows).iter().all(|d| d.abs() < 1e-12));
    let y = arr2(&[[0.5], [1.0]]).into_dyn();
    assert_eq!(
        mm.columns(&[0]).unwrap().inverse_transform(&y).unwrap(),
        arr2(&[[5.0], [10.0]]).into_dyn()
    );
    // Errors.
    assert!(mm.transform(&ArrayD::<f64>::zeros(vec![2, 3])).is_err());
    assert!(mm.columns(&[2]).is_err());
    assert!(Scaler::min_max(&ArrayD::<f64>::zeros(vec![0, 2])).is_err());
    assert!(Scaler::standard(&arr2(&[[f64::NAN]]).into_dyn()).is_err());
}

#[test]
fn padding_ragged_sequences() {
    let seqs: Vec<ArrayD<f32>> = [2usize, 4, 1]
        .iter()
        .map(|&t| ArrayD::from_elem(vec![t, 3], t as f32))
        .collect();
    let p = pad_sequences(&seqs).unwrap();
    assert_eq!(p.x.shape(), &[3, 4, 3]);
    assert_eq!(p.lengths, [2, 4, 1]);
    assert_eq!(p.mask.shape(), &[3, 4, 1]);
    assert_eq!(p.x[[0, 1, 2]], 2.0);
    assert_eq!(p.x[[0, 2, 2]], 0.0);
    assert_eq!(p.mask.iter().sum::<f32>(), 7.0);
    assert!(pad_sequences::<f32>(&[]).is_err());
    assert!(pad_sequences(&[ArrayD::<f32>::zeros(vec![2, 3]), ArrayD::zeros(vec![2, 2])]).is_err());
    assert!(pad_sequences(&[ArrayD::<f32>::zeros(vec![0, 3])]).is_err());
    assert!(pad_sequences(&[ArrayD::<f32>::zeros(vec![3])]).is_err());
}
