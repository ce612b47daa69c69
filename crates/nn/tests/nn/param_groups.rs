//! Parameter groups beyond the PyTorch trajectories (those are in `optim_parity`): errors,
//! the state by group, per-group schedules, and `fit` and checkpoints with groups.

use eddy_nn::optim::{
    split_decay, Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, ParamGroups, Sgd, SgdConfig,
};
use eddy_nn::schedule::{Schedule, StepLr};
use eddy_nn::sequential::{dense, gru, Loss, Model, Sequential};
use eddy_nn::{FitOptions, Module};
use eddy_tape::{Error, Grads, Param, Rng};
use ndarray::{arr1, arr2, ArrayD};

fn sgd(params: Vec<Param<f64>>, lr: f64) -> Box<dyn Optimizer<f64>> {
    Box::new(
        Sgd::new(
            params,
            SgdConfig {
                lr,
                ..SgdConfig::default()
            },
        )
        .unwrap(),
    )
}

#[test]
fn bad_groups_are_clear_errors() {
    let w = Param::new("w", arr2(&[[1.0, 2.0]]).into_dyn());
    let b = Param::new("b", arr1(&[0.5]).into_dyn());
    assert!(matches!(
        ParamGroups::<f64>::new(vec![]),
        Err(Error::Invalid { .. })
    ));
    let twice = ParamGroups::new(vec![
        sgd(vec![w.clone()], 0.1),
        sgd(vec![w.clone(), b.clone()], 0.1),
    ]);
    assert!(matches!(twice, Err(Error::Invalid { ref reason, .. }) if reason.contains("\"w\"")));
    let adam: Box<dyn Optimizer<f64>> = Box::new(Adam::new(vec![b.clone()], AdamConfig::default()).unwrap());
    let mixed = ParamGroups::new(vec![sgd(vec![w.clone()], 0.1), adam]);
    assert!(matches!(mixed, Err(Error::Invalid { ref reason, .. }) if reason.contains("SGD")));
}

#[test]
fn each_group_steps_with_its_own_rate_and_the_state_is_by_group() {
    let w = Param::new("w", arr2(&[[1.0, 2.0]]).into_dyn());
    let b = Param::new("b", arr1(&[0.5]).into_dyn());
    let (decay, no_decay) = split_decay(vec![w.clone(), b.clone()]);
    assert_eq!(decay[0].name(), "w");
    assert_eq!(no_decay[0].name(), "b");
    let mut opt = ParamGroups::new(vec![sgd(decay, 0.5), sgd(no_decay, 0.1)]).unwrap();
    assert_eq!(opt.len(), 2);
    let mut g = Grads::default();
    g.set_param(&w, arr2(&[[1.0, 1.0]]).into_dyn());
    let report = opt.step(&g).unwrap();
    assert_eq!(report.no_grad, ["b"]);
    assert_eq!(w.value().as_slice().unwrap(), &[0.5, 1.5]);
    g.set_param(&b, arr1(&[1.0]).into_dyn());
    opt.step(&g).unwrap();
    assert_eq!(b.value().as_slice().unwrap(), &[0.4]);

    let state = opt.state();
    assert_eq!(state.optimizer, "SGD[2 groups]");
    assert_eq!(state.scalars["0/lr"], 0.5);
    assert_eq!(state.scalars["1/lr"], 0.1);
    assert_eq!(state.scalars["0/0.step"], 2.0);
    assert_eq!(state.scalars["1/0.step"], 1.0);

    // A fresh pair of groups takes the state back; a state of another shape changes nothing.
    let mut fresh = ParamGroups::new(vec![sgd(vec![w.clone()], 9.0), sgd(vec![b.clone()], 9.0)]).unwrap();
    fresh.load_state(state.clone()).unwrap();
    assert_eq!(fresh.group_lrs(), [0.5, 0.1]);
    assert_eq!(fresh.state(), state);
    let mut bad = state.clone();
    bad.scalars.insert("2/lr".into(), 1.0);
    assert!(fresh.load_state(bad).is_err());
    let mut bad = state.clone();
    bad.scalars.insert("1/7.step".into(), 1.0);
    fresh.set_group_lrs(&[0.25, 0.05]);
    let before = fresh.state();
    assert!(fresh.load_state(bad).is_err());
    assert_eq!(fresh.state(), before, "a failed load changes nothing");

    // A gradient of the wrong shape for a later group changes no group.
    let mut g = Grads::default();
    g.set_param(&w, arr2(&[[1.0, 1.0]]).into_dyn());
    g.set_param(&b, arr1(&[1.0, 2.0]).into_dyn());
    let w_before = (*w.value()).clone();
    assert!(matches!(opt.step(&g), Err(Error::Shape { .. })));
    assert_eq!(*w.value(), w_before);
}

#[test]
fn a_schedule_moves_each_group_from_its_own_rate() {
    let w = Param::new("w", arr1(&[1.0]).into_dyn());
    let b = Param::new("b", arr1(&[1.0]).into_dyn());
    let mut opt = ParamGroups::new(vec![sgd(vec![w], 0.4), sgd(vec![b], 0.1)]).unwrap();
    let mut s = StepLr::new(&mut opt, 1, 0.5).unwrap();
    s.step(&mut opt);
    assert_eq!(opt.group_lrs(), [0.2, 0.05]);
    assert_eq!(s.state(), [1.0, 0.4, 0.1]);
}

fn data(n: usize, t: usize) -> (ArrayD<f64>, ArrayD<f64>) {
    let mut rng = Rng::seed(1);
    let x = ArrayD::from_shape_fn(vec![n, t, 2], |_| rng.uniform_in(-1.0, 1.0));
    let y = ArrayD::from_shape_fn(vec![n, 1], |ix| x[[ix[0], t - 1, 0]] - x[[ix[0], t - 1, 1]]);
    (x, y)
}

/// A model compiled with AdamW in two groups: decay on the matrices, none on the biases.
fn grouped_model() -> Model<f64> {
    let mut m = Sequential::new()
        .add(gru(4))
        .add(dense(1))
        .build::<f64>(2, &mut Rng::seed(2))
        .unwrap();
    let (decay, no_decay) = split_decay(m.param_list());
    let cfg = AdamWConfig {
        lr: 0.02,
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let groups = ParamGroups::new(vec![
        Box::new(AdamW::new(decay, cfg).unwrap()) as Box<dyn Optimizer<f64>>,
        Box::new(
            AdamW::new(
                no_decay,
                AdamWConfig {
                    lr: 0.01,
                    weight_decay: 0.0,
                    ..cfg
                },
            )
            .unwrap(),
        ),
    ])
    .unwrap();
    m.compile_with(Box::new(groups), Loss::Mse).unwrap();
    m.set_schedule(|opt| StepLr::new(opt, 1, 0.5)).unwrap();
    m
}

#[test]
fn fit_and_checkpoints_work_with_groups() {
    let (x, y) = data(12, 3);
    let quiet = || FitOptions {
        progress: false,
        batch_size: 4,
        epochs: 2,
        ..FitOptions::default()
    };
    let mut m = grouped_model();
    let h = m.fit(&x, &y, quiet()).unwrap();
    assert_eq!(h.lr, [0.02, 0.01]);
    assert_eq!(m.optimizer().unwrap().group_lrs(), [0.005, 0.0025]);

    let dir = std::env::temp_dir().join(format!("eddy-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("groups.safetensors");
    m.save_checkpoint(&path).unwrap();
    let mut resumed = grouped_model();
    resumed.load_checkpoint(&path).unwrap();
    assert_eq!(
        resumed.optimizer().unwrap().state(),
        m.optimizer().unwrap().state()
    );
    assert_eq!(resumed.optimizer().unwrap().group_lrs(), [0.005, 0.0025]);
    // Training on from the checkpoint matches training on without one.
    let a = m.fit(&x, &y, quiet()).unwrap();
    let b = resumed.fit(&x, &y, quiet()).unwrap();
    assert_eq!(a.loss, b.loss);
    std::fs::remove_dir_all(&dir).unwrap();
}
