//! PyTorch parity of the schedules: every case in `fixtures/torch/schedule/schedules.json`
//! (made by `tools/torch_schedule_fixtures.py`) is rebuilt over an optimizer with two
//! parameter groups, and each group's learning rate compared at every position within 1e-12.

use eddy_nn::optim::{OptimState, Optimizer, StepReport};
use eddy_nn::schedule::{
    AnnealStrategy, CosineAnnealingLr, CosineAnnealingWarmRestarts, CyclicConfig, CyclicLr, CyclicMode,
    ExponentialLr, LambdaLr, LinearWarmup, MultiStepLr, OneCycleConfig, OneCycleLr, PlateauConfig,
    PlateauMode, PolynomialLr, ReduceLrOnPlateau, Schedule, SequentialLr, StepLr,
};
use eddy_tape::{Grads, Param, Result};
use serde_json::{Map, Value};
use std::path::Path;

const TOL: f64 = 1e-12;

/// An optimizer with no parameters and one learning rate per group: all a schedule sees.
struct Groups(Vec<f64>);

impl Optimizer<f64> for Groups {
    fn step(&mut self, _: &Grads<f64>) -> Result<StepReport> {
        Ok(StepReport::default())
    }
    fn lr(&self) -> f64 {
        self.0[0]
    }
    fn set_lr(&mut self, lr: f64) {
        self.0.iter_mut().for_each(|g| *g = lr);
    }
    fn group_lrs(&self) -> Vec<f64> {
        self.0.clone()
    }
    fn set_group_lrs(&mut self, lrs: &[f64]) {
        self.0 = lrs.to_vec();
    }
    fn params(&self) -> &[Param<f64>] {
        &[]
    }
    fn state(&self) -> OptimState {
        OptimState::default()
    }
    fn load_state(&mut self, _: OptimState) -> Result<()> {
        Ok(())
    }
}

fn f(kw: &Map<String, Value>, key: &str, default: f64) -> f64 {
    kw.get(key).map_or(default, |v| v.as_f64().unwrap())
}

fn u(kw: &Map<String, Value>, key: &str, default: usize) -> usize {
    kw.get(key).map_or(default, |v| v.as_u64().unwrap() as usize)
}

fn floats(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_f64().unwrap()).collect(),
        x => vec![x.as_f64().unwrap()],
    }
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// The eddy schedule for a torch scheduler and its keyword arguments, with PyTorch's defaults
/// for the arguments left out.
fn build(opt: &mut Groups, scheduler: &str, kw: &Map<String, Value>) -> Box<dyn Schedule> {
    match scheduler {
        "StepLR" => Box::new(StepLr::new(opt, u(kw, "step_size", 0), f(kw, "gamma", 0.1)).unwrap()),
        "MultiStepLR" => {
            Box::new(MultiStepLr::new(opt, &usizes(&kw["milestones"]), f(kw, "gamma", 0.1)).unwrap())
        }
        "ExponentialLR" => Box::new(ExponentialLr::new(opt, f(kw, "gamma", 0.0)).unwrap()),
        "CosineAnnealingLR" => {
            Box::new(CosineAnnealingLr::new(opt, u(kw, "T_max", 0), f(kw, "eta_min", 0.0)).unwrap())
        }
        "LinearLR" => {
            assert_eq!(f(kw, "end_factor", 1.0), 1.0);
            Box::new(
                LinearWarmup::new(opt, f(kw, "start_factor", 1.0 / 3.0), u(kw, "total_iters", 5)).unwrap(),
            )
        }
        "PolynomialLR" => {
            Box::new(PolynomialLr::new(opt, u(kw, "total_iters", 5), f(kw, "power", 1.0)).unwrap())
        }
        "LambdaLR" => {
            let lambda: fn(usize) -> f64 = match kw["lr_lambda"].as_str().unwrap() {
                "exp_095" => |e| 0.95f64.powf(e as f64),
                "warmup4_inv_sqrt" => |e| {
                    if e < 4 {
                        (e + 1) as f64 / 4.0
                    } else {
                        2.0 / (e as f64).powf(0.5)
                    }
                },
                other => panic!("unknown lambda {other}"),
            };
            Box::new(LambdaLr::new(opt, lambda).unwrap())
        }
        "CosineAnnealingWarmRestarts" => Box::new(
            CosineAnnealingWarmRestarts::new(opt, u(kw, "T_0", 0), u(kw, "T_mult", 1), f(kw, "eta_min", 0.0))
                .unwrap(),
        ),
        "OneCycleLR" => {
            assert_eq!(kw["cycle_momentum"], Value::Bool(false));
            let config = OneCycleConfig {
                pct_start: f(kw, "pct_start", 0.3),
                anneal_strategy: match kw.get("anneal_strategy").and_then(|v| v.as_str()) {
                    None | Some("cos") => AnnealStrategy::Cos,
                    Some("linear") => AnnealStrategy::Linear,
                    Some(other) => panic!("unknown strategy {other}"),
                },
                div_factor: f(kw, "div_factor", 25.0),
                final_div_factor: f(kw, "final_div_factor", 1e4),
                three_phase: kw.get("three_phase").is_some_and(|v| v.as_bool().unwrap()),
            };
            assert_eq!(OneCycleConfig::default().pct_start, 0.3);
            Box::new(OneCycleLr::new(opt, &floats(&kw["max_lr"]), u(kw, "total_steps", 0), config).unwrap())
        }
        "CyclicLR" => {
            assert_eq!(kw["cycle_momentum"], Value::Bool(false));
            let mode = match kw.get("mode").and_then(|v| v.as_str()) {
                None | Some("triangular") => CyclicMode::Triangular,
                Some("triangular2") => CyclicMode::Triangular2,
                Some("exp_range") => CyclicMode::ExpRange {
                    gamma: f(kw, "gamma", 1.0),
                },
                Some(other) => panic!("unknown mode {other}"),
            };
            let config = CyclicConfig {
                step_size_up: u(kw, "step_size_up", 2000),
                step_size_down: kw.get("step_size_down").map(|v| v.as_u64().unwrap() as usize),
                mode,
            };
            Box::new(CyclicLr::new(opt, &floats(&kw["base_lr"]), &floats(&kw["max_lr"]), config).unwrap())
        }
        "SequentialLR" => {
            let subs = kw["schedulers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    build(
                        opt,
                        s["scheduler"].as_str().unwrap(),
                        s["kwargs"].as_object().unwrap(),
                    )
                })
                .collect();
            Box::new(SequentialLr::new(opt, subs, &usizes(&kw["milestones"])).unwrap())
        }
        other => panic!("no eddy schedule for {other}"),
    }
}

fn plateau(kw: &Map<String, Value>) -> ReduceLrOnPlateau {
    let d = PlateauConfig::default();
    ReduceLrOnPlateau::new(PlateauConfig {
        mode: match kw.get("mode").and_then(|v| v.as_str()) {
            None | Some("min") => PlateauMode::Min,
            Some("max") => PlateauMode::Max,
            Some(other) => panic!("unknown mode {other}"),
        },
        factor: f(kw, "factor", d.factor),
        patience: u(kw, "patience", d.patience),
        threshold: f(kw, "threshold", d.threshold),
        cooldown: u(kw, "cooldown", d.cooldown),
        min_lr: f(kw, "min_lr", d.min_lr),
        eps: f(kw, "eps", d.eps),
    })
    .unwrap()
}

fn check(name: &str, e: usize, got: &[f64], want: &Value) {
    let want = floats(want);
    assert_eq!(got.len(), want.len(), "{name}");
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= TOL,
            "{name}: position {e}: {got:?} vs PyTorch's {want:?}"
        );
    }
}

fn cases() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/torch/schedule/schedules.json");
    let data: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    data["cases"].as_array().unwrap().clone()
}

#[test]
fn every_schedule_matches_pytorch_per_group() {
    let cases = cases();
    assert_eq!(cases.len(), 23);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let scheduler = case["scheduler"].as_str().unwrap();
        let kw = case["kwargs"].as_object().unwrap();
        let lrs = case["lrs"].as_array().unwrap();
        let mut opt = Groups(floats(&case["group_lrs"]));
        if scheduler == "ReduceLROnPlateau" {
            let mut s = plateau(kw);
            check(name, 0, &opt.group_lrs(), &lrs[0]);
            let metrics = floats(&case["metrics"]);
            for (e, want) in lrs.iter().enumerate().skip(1) {
                s.step(metrics[e - 1], &mut opt);
                check(name, e, &opt.group_lrs(), want);
            }
            continue;
        }
        let mut s = build(&mut opt, scheduler, kw);
        check(name, 0, &opt.group_lrs(), &lrs[0]);
        for (e, want) in lrs.iter().enumerate().skip(1) {
            s.step(&mut opt);
            assert_eq!(s.position(), e);
            check(name, e, &opt.group_lrs(), want);
        }
    }
}

#[test]
fn every_schedule_restores_from_its_state() {
    for case in &cases() {
        let name = case["name"].as_str().unwrap();
        let scheduler = case["scheduler"].as_str().unwrap();
        if scheduler == "ReduceLROnPlateau" {
            continue;
        }
        let kw = case["kwargs"].as_object().unwrap();
        let lrs = case["lrs"].as_array().unwrap();
        let mut opt = Groups(floats(&case["group_lrs"]));
        let mut s = build(&mut opt, scheduler, kw);
        let half = lrs.len() / 2;
        for _ in 0..half {
            s.step(&mut opt);
        }
        // A schedule built over an optimizer whose rates have moved takes everything from the state.
        let mut opt2 = Groups(vec![7.0, 9.0]);
        let mut s2 = build(&mut opt2, scheduler, kw);
        s2.load_state(&s.state()).unwrap();
        assert_eq!(s2.state(), s.state(), "{name}");
        assert_eq!(s2.position(), half, "{name}");
        for (e, want) in lrs.iter().enumerate().skip(half + 1) {
            s2.step(&mut opt2);
            check(name, e, &opt2.group_lrs(), want);
        }
        let mut short = s.state();
        short.pop();
        assert!(s2.load_state(&short).is_err(), "{name}");
        assert_eq!(
            s2.position(),
            lrs.len() - 1,
            "{name}: a failed load changed nothing"
        );
    }
}
