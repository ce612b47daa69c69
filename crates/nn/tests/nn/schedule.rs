//! Learning-rate schedules against PyTorch's closed forms, and their saved positions.

use eddy_nn::optim::{Optimizer, Sgd, SgdConfig};
use eddy_nn::schedule::{
    CosineAnnealingLr, ExponentialLr, LinearWarmup, PlateauConfig, ReduceLrOnPlateau, Schedule, StepLr,
};
use eddy_tape::{Error, Param};
use std::f64::consts::PI;

fn opt(lr: f64) -> Sgd<f64> {
    Sgd::new(
        Vec::<Param<f64>>::new(),
        SgdConfig {
            lr,
            ..SgdConfig::default()
        },
    )
    .unwrap()
}

/// The learning rates at positions 0..n: the one set at construction, then after each step.
fn run<S: Schedule>(o: &mut Sgd<f64>, s: &mut S, n: usize) -> Vec<f64> {
    let mut lrs = vec![o.lr()];
    for _ in 1..n {
        s.step(o);
        lrs.push(o.lr());
    }
    lrs
}

fn close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-15, "{got:?} vs {want:?}");
    }
}

#[test]
fn step_lr() {
    let mut o = opt(0.1);
    let mut s = StepLr::new(&mut o, 2, 0.5).unwrap();
    close(&run(&mut o, &mut s, 6), &[0.1, 0.1, 0.05, 0.05, 0.025, 0.025]);
}

#[test]
fn exponential_lr() {
    let mut o = opt(0.1);
    let mut s = ExponentialLr::new(&mut o, 0.9).unwrap();
    let want: Vec<f64> = (0..5).map(|e| 0.1 * 0.9f64.powi(e)).collect();
    close(&run(&mut o, &mut s, 5), &want);
}

#[test]
fn cosine_annealing_lr() {
    let mut o = opt(0.1);
    let mut s = CosineAnnealingLr::new(&mut o, 4, 0.01).unwrap();
    let c = |e: f64| 0.01 + 0.09 * (1.0 + (PI * e / 4.0).cos()) / 2.0;
    // Down to eta_min at T_max, then back up (the closed form is periodic).
    let want = [0.1, c(1.0), 0.055, c(3.0), 0.01, c(3.0)];
    close(&run(&mut o, &mut s, 6), &want);
    assert!((c(1.0) - 0.08681980515339464).abs() < 1e-15);
}

#[test]
fn linear_warmup() {
    let mut o = opt(0.1);
    let mut s = LinearWarmup::new(&mut o, 0.25, 3).unwrap();
    // torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=3)
    close(&run(&mut o, &mut s, 6), &[0.025, 0.05, 0.075, 0.1, 0.1, 0.1]);
    let mut o = opt(0.1);
    let mut none = LinearWarmup::new(&mut o, 0.5, 0).unwrap();
    close(&run(&mut o, &mut none, 2), &[0.1, 0.1]);
}

#[test]
fn a_saved_position_restores_the_schedule() {
    let mut o = opt(0.1);
    let mut s = CosineAnnealingLr::new(&mut o, 10, 0.0).unwrap();
    for _ in 0..3 {
        s.step(&mut o);
    }
    let state = s.state();
    assert_eq!(state, vec![3.0, 0.1]);
    // A schedule built after the optimizer's lr changed takes its base from the state.
    let mut o2 = opt(o.lr());
    let mut s2 = CosineAnnealingLr::new(&mut o2, 10, 0.0).unwrap();
    s2.load_state(&state).unwrap();
    for _ in 0..4 {
        s.step(&mut o);
        s2.step(&mut o2);
        assert_eq!(o.lr(), o2.lr());
    }
    for bad in [&[1.0][..], &[1.5, 0.1], &[-1.0, 0.1], &[1.0, f64::NAN]] {
        assert!(
            matches!(s2.load_state(bad), Err(Error::Invalid { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn schedules_work_as_trait_objects() {
    let mut o = opt(1.0);
    let mut schedules: Vec<Box<dyn Schedule>> = vec![
        Box::new(StepLr::new(&mut o, 1, 0.5).unwrap()),
        Box::new(ExponentialLr::new(&mut o, 0.5).unwrap()),
    ];
    for s in &mut schedules {
        s.seek(2);
        o.set_lr(s.lr());
        assert_eq!(o.lr(), 0.25);
        assert_eq!(s.position(), 2);
    }
}

#[test]
fn a_boxed_schedule_steps_the_optimizer() {
    let mut o = opt(1.0);
    let mut boxed: Box<dyn Schedule> = Box::new(StepLr::new(&mut o, 1, 0.5).unwrap());
    boxed.step(&mut o);
    boxed.step(&mut o);
    assert_eq!(o.lr(), 0.25);
    assert_eq!(boxed.position(), 2);
}

#[test]
fn invalid_schedules_are_errors() {
    let mut o = opt(0.1);
    assert!(StepLr::new(&mut o, 0, 0.5).is_err());
    assert!(ExponentialLr::new(&mut o, f64::INFINITY).is_err());
    assert!(CosineAnnealingLr::new(&mut o, 0, 0.0).is_err());
    assert!(LinearWarmup::new(&mut o, 0.0, 5).is_err());
    assert!(LinearWarmup::new(&mut o, 1.5, 5).is_err());
    let bad = |c: PlateauConfig| assert!(ReduceLrOnPlateau::new(c).is_err());
    bad(PlateauConfig {
        factor: 1.0,
        ..PlateauConfig::default()
    });
    bad(PlateauConfig {
        threshold: -1.0,
        ..PlateauConfig::default()
    });
    assert_eq!(o.lr(), 0.1);
}

#[test]
fn reduce_on_plateau_follows_pytorch() {
    // ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2, cooldown=1), lr 1.0:
    // best 1.0, 0.9; then three epochs at 0.9 (not better by 1e-4 relative) reduce at epoch 5;
    // epoch 6 is cooldown; epochs 7, 8, 9 bad again reduce at epoch 9.
    let mut o = opt(1.0);
    let config = PlateauConfig {
        factor: 0.5,
        patience: 2,
        cooldown: 1,
        ..PlateauConfig::default()
    };
    let mut s = ReduceLrOnPlateau::new(config).unwrap();
    let metrics = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9];
    let mut lrs = Vec::new();
    let mut reduced = Vec::new();
    for (epoch, m) in metrics.iter().enumerate() {
        if s.step(*m, &mut o) {
            reduced.push(epoch + 1);
        }
        lrs.push(o.lr());
    }
    assert_eq!(reduced, vec![5, 9]);
    assert_eq!(lrs, vec![1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]);
    assert_eq!(s.best(), 0.9);

    // min_lr bounds it, and a reduction smaller than eps is skipped.
    let mut o = opt(0.1);
    let mut s = ReduceLrOnPlateau::new(PlateauConfig {
        patience: 0,
        min_lr: 0.05,
        ..PlateauConfig::default()
    })
    .unwrap();
    s.step(1.0, &mut o);
    assert!(s.step(1.0, &mut o));
    assert_eq!(o.lr(), 0.05);
    assert!(!s.step(1.0, &mut o));
    assert_eq!(o.lr(), 0.05);

    // The saved position continues identically; a NaN metric is no improvement.
    let mut a = ReduceLrOnPlateau::new(config).unwrap();
    let (mut oa, mut ob) = (opt(1.0), opt(1.0));
    for m in [3.0, 2.0, 2.0] {
        a.step(m, &mut oa);
    }
    let mut b = ReduceLrOnPlateau::new(config).unwrap();
    b.load_state(&a.state()).unwrap();
    for m in [f64::NAN, 2.0, 1.0, 1.0, 1.0, 1.0] {
        assert_eq!(a.step(m, &mut oa), b.step(m, &mut ob));
    }
    assert_eq!(a, b);
    assert!(b.load_state(&[1.0, 2.0]).is_err());
}
