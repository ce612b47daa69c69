//! Optimizer behaviour beyond the PyTorch trajectories: missing gradients, errors, state.

use eddy_nn::optim::{
    Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, OptimState, Optimizer, RmsProp,
    RmsPropConfig, Sgd, SgdConfig,
};
use eddy_tape::{Error, Grads, Param};
use ndarray::{arr1, ArrayD};

fn two_params() -> (Param<f64>, Param<f64>) {
    (
        Param::new("layer.w", arr1(&[1.0, 2.0, 3.0]).into_dyn()),
        Param::new("layer.b", arr1(&[0.5]).into_dyn()),
    )
}

fn all(w: &Param<f64>, b: &Param<f64>) -> Vec<Box<dyn Optimizer<f64>>> {
    let ps = || vec![w.clone(), b.clone()];
    vec![
        Box::new(
            Sgd::new(
                ps(),
                SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    ..SgdConfig::default()
                },
            )
            .unwrap(),
        ),
        Box::new(
            Adam::new(
                ps(),
                AdamConfig {
                    amsgrad: true,
                    ..AdamConfig::default()
                },
            )
            .unwrap(),
        ),
        Box::new(AdamW::new(ps(), AdamWConfig::default()).unwrap()),
        Box::new(
            RmsProp::new(
                ps(),
                RmsPropConfig {
                    centered: true,
                    momentum: 0.5,
                    ..RmsPropConfig::default()
                },
            )
            .unwrap(),
        ),
        Box::new(Adagrad::new(ps(), AdagradConfig::default()).unwrap()),
    ]
}

#[test]
fn parameters_without_a_gradient_are_reported_and_left_alone() {
    let (w, b) = two_params();
    for mut opt in all(&w, &b) {
        let (w0, b0) = ((*w.value()).clone(), (*b.value()).clone());
        let mut g = Grads::default();
        g.set_param(&w, arr1(&[1.0, -1.0, 0.5]).into_dyn());
        let report = opt.step(&g).unwrap();
        assert_eq!(report.no_grad, vec!["layer.b".to_string()]);
        assert_ne!(*w.value(), w0);
        assert_eq!(*b.value(), b0);
        // No state was made for the skipped parameter.
        let state = opt.state();
        assert!(
            state.buffers.keys().all(|k| k.starts_with("0.")),
            "{:?}",
            state.buffers.keys()
        );
        assert_eq!(state.scalars["1.step"], 0.0);
        assert_eq!(state.scalars["0.step"], 1.0);
    }
}

#[test]
fn a_gradient_of_the_wrong_shape_is_an_error_and_changes_nothing() {
    let (w, b) = two_params();
    for mut opt in all(&w, &b) {
        let before = opt.state();
        let (w0, b0) = ((*w.value()).clone(), (*b.value()).clone());
        let mut g = Grads::default();
        g.set_param(&w, arr1(&[1.0, -1.0, 0.5]).into_dyn());
        g.set_param(&b, arr1(&[1.0, 2.0]).into_dyn());
        let e = opt.step(&g).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{e}");
        assert!(e.to_string().contains("layer.b"), "{e}");
        assert_eq!(*w.value(), w0);
        assert_eq!(*b.value(), b0);
        assert_eq!(opt.state(), before);
    }
}

#[test]
fn a_parameter_reshaped_after_its_state_was_made_is_an_error() {
    let (w, b) = two_params();
    let mut opt = Adam::new(vec![w.clone(), b.clone()], AdamConfig::default()).unwrap();
    let mut g = Grads::default();
    g.set_param(&w, arr1(&[1.0, 1.0, 1.0]).into_dyn());
    opt.step(&g).unwrap();
    w.set(arr1(&[1.0, 2.0]).into_dyn());
    g.set_param(&w, arr1(&[1.0, 1.0]).into_dyn());
    let e = opt.step(&g).unwrap_err();
    assert!(e.to_string().contains("changed shape since its exp_avg"), "{e}");
}

#[test]
fn invalid_hyper_parameters_are_errors() {
    let (w, b) = two_params();
    let ps = || vec![w.clone(), b.clone()];
    let invalid = |r: Result<(), Error>| assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
    invalid(
        Sgd::new(
            ps(),
            SgdConfig {
                lr: -1.0,
                ..SgdConfig::default()
            },
        )
        .map(drop),
    );
    invalid(
        Sgd::new(
            ps(),
            SgdConfig {
                lr: f64::NAN,
                ..SgdConfig::default()
            },
        )
        .map(drop),
    );
    invalid(
        Sgd::new(
            ps(),
            SgdConfig {
                nesterov: true,
                ..SgdConfig::default()
            },
        )
        .map(drop),
    );
    invalid(
        Adam::new(
            ps(),
            AdamConfig {
                betas: (1.0, 0.999),
                ..AdamConfig::default()
            },
        )
        .map(drop),
    );
    invalid(
        AdamW::new(
            ps(),
            AdamWConfig {
                eps: -1.0,
                ..AdamWConfig::default()
            },
        )
        .map(drop),
    );
    invalid(
        RmsProp::new(
            ps(),
            RmsPropConfig {
                momentum: -0.1,
                ..RmsPropConfig::default()
            },
        )
        .map(drop),
    );
    invalid(
        Adagrad::new(
            ps(),
            AdagradConfig {
                lr_decay: -0.1,
                ..AdagradConfig::default()
            },
        )
        .map(drop),
    );
    let e = Sgd::new(vec![w.clone(), w.clone()], SgdConfig::default()).unwrap_err();
    assert!(e.to_string().contains("listed more than once"), "{e}");
}

#[test]
fn load_state_checks_what_it_is_given() {
    let (w, b) = two_params();
    let mut adam = Adam::new(vec![w.clone(), b.clone()], AdamConfig::default()).unwrap();
    let mut g = Grads::default();
    g.set_param(&w, arr1(&[1.0, 1.0, 1.0]).into_dyn());
    g.set_param(&b, arr1(&[1.0]).into_dyn());
    adam.step(&g).unwrap();
    let good = adam.state();
    assert_eq!(good.optimizer, "Adam");
    assert_eq!(good.buffers["1.exp_avg"].shape(), &[1]);

    let mut fresh = Adam::new(vec![w.clone(), b.clone()], AdamConfig::default()).unwrap();
    let invalid = |fresh: &mut Adam<f64>, s: OptimState| {
        let e = fresh.load_state(s).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. } | Error::Shape { .. }), "{e}");
    };
    let mut sgd = good.clone();
    sgd.optimizer = "SGD".into();
    invalid(&mut fresh, sgd);
    let mut no_lr = good.clone();
    no_lr.scalars.remove("lr");
    invalid(&mut fresh, no_lr);
    let mut unknown = good.clone();
    unknown
        .buffers
        .insert("0.momentum_buffer".into(), ArrayD::zeros(vec![3]));
    invalid(&mut fresh, unknown);
    let mut out_of_range = good.clone();
    out_of_range.scalars.insert("2.step".into(), 1.0);
    invalid(&mut fresh, out_of_range);
    let mut wrong_shape = good.clone();
    wrong_shape
        .buffers
        .insert("0.exp_avg".into(), ArrayD::zeros(vec![4]));
    let e = fresh.load_state(wrong_shape).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let mut fractional = good.clone();
    fractional.scalars.insert("0.step".into(), 1.5);
    invalid(&mut fresh, fractional);
    // Nothing was changed by the failures; the good state loads.
    assert_eq!(fresh.state().buffers.len(), 0);
    fresh.load_state(good.clone()).unwrap();
    assert_eq!(fresh.state(), good);
    // AdamW's state is not Adam's.
    let mut adamw = AdamW::new(vec![w, b], AdamWConfig::default()).unwrap();
    assert!(adamw.load_state(good).is_err());
}

#[test]
fn set_lr_changes_the_step() {
    let w = Param::new("w", arr1(&[1.0f32]).into_dyn());
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::default()).unwrap();
    assert_eq!(opt.lr(), 1e-3);
    opt.set_lr(0.5);
    assert_eq!(opt.config().lr, 0.5);
    let mut g = Grads::default();
    g.set_param(&w, arr1(&[1.0f32]).into_dyn());
    opt.step(&g).unwrap();
    assert_eq!(w.value()[[0]], 0.5);
    assert_eq!(opt.state().scalars["lr"], 0.5);
}
