//! PyTorch parity of the optimizers: every trajectory in `fixtures/torch/optim` (made by
//! `tools/torch_optim_fixtures.py`) is replayed and each step compared within 1e-10, including
//! two parameter groups with their own lr and weight decay (`ParamGroups`), one under a schedule.

use eddy_nn::optim::{
    Adadelta, AdadeltaConfig, Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Adamax,
    AdamaxConfig, NAdam, NAdamConfig, Optimizer, ParamGroups, RAdam, RAdamConfig, RmsProp, RmsPropConfig,
    Sgd, SgdConfig,
};
use eddy_nn::schedule::{CosineAnnealingLr, Schedule};
use eddy_tape::{Float, Grads, Param};
use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-10;

struct Fixture {
    name: String,
    optimizer: String,
    steps: usize,
    hparams: Map<String, Value>,
    /// Per-group options (w in group 0, b in group 1) over `hparams`, for the groups_* files.
    groups: Option<Vec<Map<String, Value>>>,
    /// A scheduler stepped after every optimizer step.
    schedule: Option<Map<String, Value>>,
    tensors: HashMap<String, ArrayD<f64>>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/torch/optim")
}

fn load(path: &Path) -> Fixture {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("fixture metadata");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F64, "{name}");
            let data: Vec<f64> = view
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, ArrayD::from_shape_vec(IxDyn(view.shape()), data).unwrap())
        })
        .collect();
    let Value::Object(hparams) = serde_json::from_str(&meta["hparams"]).unwrap() else {
        panic!("hparams of {path:?} is not an object")
    };
    let object = |key: &str| {
        meta.get(key).map(|v| match serde_json::from_str(v).unwrap() {
            Value::Object(m) => m,
            _ => panic!("{key} of {path:?} is not an object"),
        })
    };
    let groups = meta.get("groups").map(|v| {
        let Value::Array(gs) = serde_json::from_str(v).unwrap() else {
            panic!("groups of {path:?} is not a list")
        };
        gs.into_iter()
            .map(|g| match g {
                Value::Object(m) => m,
                _ => panic!("a group of {path:?} is not an object"),
            })
            .collect()
    });
    Fixture {
        groups,
        schedule: object("schedule"),
        name: path.file_stem().unwrap().to_string_lossy().into_owned(),
        optimizer: meta["optimizer"].clone(),
        steps: meta["steps"].parse().unwrap(),
        hparams,
        tensors,
    }
}

/// Reads the hyper-parameters, failing on any key this test does not map (so a new torch
/// option in a regenerated fixture cannot be silently ignored).
struct Hparams<'a> {
    map: &'a Map<String, Value>,
    used: Vec<&'static str>,
}

impl<'a> Hparams<'a> {
    fn f(&mut self, key: &'static str) -> f64 {
        self.used.push(key);
        self.map[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is not a number"))
    }
    fn b(&mut self, key: &'static str) -> bool {
        self.used.push(key);
        self.map[key]
            .as_bool()
            .unwrap_or_else(|| panic!("{key} is not a bool"))
    }
    fn betas(&mut self) -> (f64, f64) {
        self.used.push("betas");
        let b = self.map["betas"].as_array().unwrap();
        (b[0].as_f64().unwrap(), b[1].as_f64().unwrap())
    }
    fn finish(mut self) {
        // `foreach` picks torch's kernel, not the arithmetic.
        self.used.push("foreach");
        let unused: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.used.contains(&k.as_str()))
            .collect();
        assert!(unused.is_empty(), "unmapped hyper-parameters {unused:?}");
    }
}

/// The optimizer of a fixture: one over both parameters, or [`ParamGroups`] of one per
/// parameter with the group's options over the shared ones.
fn build<F: Float>(fx: &Fixture, params: Vec<Param<F>>) -> Box<dyn Optimizer<F>> {
    let Some(groups) = &fx.groups else {
        return build_one(fx, &fx.hparams, params);
    };
    assert_eq!(groups.len(), params.len());
    let per_group = groups
        .iter()
        .zip(params)
        .map(|(g, p)| {
            let mut map = fx.hparams.clone();
            map.extend(g.clone());
            build_one(fx, &map, vec![p])
        })
        .collect();
    Box::new(ParamGroups::new(per_group).unwrap())
}

/// The fixture's scheduler over `opt`, if it has one.
fn schedule<F: Float>(fx: &Fixture, opt: &mut dyn Optimizer<F>) -> Option<CosineAnnealingLr> {
    let s = fx.schedule.as_ref()?;
    assert_eq!(s["name"], "CosineAnnealingLR", "{}", fx.name);
    let t_max = s["T_max"].as_u64().unwrap() as usize;
    Some(CosineAnnealingLr::new(opt, t_max, s["eta_min"].as_f64().unwrap()).unwrap())
}

fn build_one<F: Float>(
    fx: &Fixture,
    map: &Map<String, Value>,
    params: Vec<Param<F>>,
) -> Box<dyn Optimizer<F>> {
    let mut h = Hparams {
        map,
        used: Vec::new(),
    };
    let opt: Box<dyn Optimizer<F>> = match fx.optimizer.as_str() {
        "SGD" => Box::new(
            Sgd::new(
                params,
                SgdConfig {
                    lr: h.f("lr"),
                    momentum: h.f("momentum"),
                    dampening: h.f("dampening"),
                    weight_decay: h.f("weight_decay"),
                    nesterov: h.b("nesterov"),
                    maximize: h.b("maximize"),
                },
            )
            .unwrap(),
        ),
        "Adam" => Box::new(
            Adam::new(
                params,
                AdamConfig {
                    lr: h.f("lr"),
                    betas: h.betas(),
                    eps: h.f("eps"),
                    weight_decay: h.f("weight_decay"),
                    amsgrad: h.b("amsgrad"),
                    decoupled_weight_decay: h.b("decoupled_weight_decay"),
                    maximize: h.b("maximize"),
                },
            )
            .unwrap(),
        ),
        "AdamW" => Box::new(
            AdamW::new(
                params,
                AdamWConfig {
                    lr: h.f("lr"),
                    betas: h.betas(),
                    eps: h.f("eps"),
                    weight_decay: h.f("weight_decay"),
                    amsgrad: h.b("amsgrad"),
                    maximize: h.b("maximize"),
                },
            )
            .unwrap(),
        ),
        "RMSprop" => Box::new(
            RmsProp::new(
                params,
                RmsPropConfig {
                    lr: h.f("lr"),
                    alpha: h.f("alpha"),
                    eps: h.f("eps"),
                    weight_decay: h.f("weight_decay"),
                    momentum: h.f("momentum"),
                    centered: h.b("centered"),
                    maximize: h.b("maximize"),
                },
            )
            .unwrap(),
        ),
        "Adagrad" => Box::new(
            Adagrad::new(
                params,
                AdagradConfig {
                    lr: h.f("lr"),
                    lr_decay: h.f("lr_decay"),
                    weight_decay: h.f("weight_decay"),
                    initial_accumulator_value: h.f("initial_accumulator_value"),
                    eps: h.f("eps"),
                    maximize: h.b("maximize"),
                },
            )
            .unwrap(),
        ),
        "NAdam" => Box::new(
            NAdam::new(
                params,
                NAdamConfig {
                    lr: h.f("lr"),
                    betas: h.betas(),
                    eps: h.f("eps"),
                    weight_decay: h.f("weight_decay"),
                    momentum_decay: h.f("momentum_decay"),
                    decoupled_weight_decay: h.b("decoupled_weight_decay"),
                    maximize: h.b("maximize"),
                },
            )
            .unwrap(),
        ),
        "RAdam" => Box::new(
            RAdam::new(
                params,
                RAdamConfig {
                    lr: h.f("lr"),
                    betas: h.betas(),
                    eps: h.f("eps"),
                    weight_decay: h.f("weight_decay"),
                    decoupled_weight_decay: h.b("decoupled_weight_decay"),
                    maximize: h.b("maximize"),
                },
            )
            .unwrap(),
        ),
        "Adamax" => Box::new(
            Adamax::new(
                params,
                AdamaxConfig {
                    lr: h.f("lr"),
                    betas: h.betas(),
                    eps: h.f("eps"),
                    weight_decay: h.f("weight_decay"),
                    maximize: h.b("maximize"),
                },
            )
            .unwrap(),
        ),
        "Adadelta" => Box::new(
            Adadelta::new(
                params,
                AdadeltaConfig {
                    lr: h.f("lr"),
                    rho: h.f("rho"),
                    eps: h.f("eps"),
                    weight_decay: h.f("weight_decay"),
                    maximize: h.b("maximize"),
                },
            )
            .unwrap(),
        ),
        other => panic!("{}: unknown optimizer {other}", fx.name),
    };
    h.finish();
    opt
}

fn params(fx: &Fixture) -> Vec<Param<f64>> {
    ["w", "b"]
        .iter()
        .map(|k| Param::new(*k, fx.tensors[&format!("param.{k}")].clone()))
        .collect()
}

fn grads(fx: &Fixture, params: &[Param<f64>], step: usize) -> Grads<f64> {
    let mut g = Grads::default();
    for p in params {
        g.set_param(p, fx.tensors[&format!("grad.{step}.{}", p.name())].clone());
    }
    g
}

fn check(fx: &Fixture, params: &[Param<f64>], step: usize) {
    for p in params {
        let want = &fx.tensors[&format!("expected.{step}.{}", p.name())];
        let got = p.value();
        let err = (&*got - want).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
        assert!(
            err <= TOL,
            "{}: step {step}, param {}: max error {err:e}",
            fx.name,
            p.name()
        );
    }
}

fn fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load(p)).collect()
}

#[test]
fn every_optimizer_fixture_matches_pytorch() {
    let all = fixtures();
    assert_eq!(all.len(), 30, "expected the 30 committed fixtures");
    assert_eq!(all.iter().filter(|fx| fx.groups.is_some()).count(), 4);
    for kind in ["NAdam", "RAdam", "Adamax", "Adadelta"] {
        assert!(
            all.iter().filter(|fx| fx.optimizer == kind).count() >= 2,
            "{kind}"
        );
    }
    for fx in &all {
        let params = params(fx);
        let mut opt = build(fx, params.clone());
        let mut sched = schedule(fx, opt.as_mut());
        for k in 0..fx.steps {
            let report = opt.step(&grads(fx, &params, k)).unwrap();
            assert!(report.no_grad.is_empty());
            if let Some(s) = sched.as_mut() {
                s.step(opt.as_mut());
            }
            check(fx, &params, k);
        }
    }
}

#[test]
fn a_restored_state_continues_bit_identically() {
    for fx in &fixtures() {
        let params = params(fx);
        let mut opt = build(fx, params.clone());
        let mut sched = schedule(fx, opt.as_mut());
        let half = fx.steps / 2;
        for k in 0..half {
            opt.step(&grads(fx, &params, k)).unwrap();
            if let Some(s) = sched.as_mut() {
                s.step(opt.as_mut());
            }
        }
        // A fresh optimizer over copies of the parameters, restored from the saved state.
        let copies: Vec<Param<f64>> = params
            .iter()
            .map(|p| Param::new(p.name(), (*p.value()).clone()))
            .collect();
        let mut fresh = build(fx, copies.clone());
        fresh.set_lr(123.0);
        fresh.load_state(opt.state()).unwrap();
        assert_eq!(fresh.group_lrs(), opt.group_lrs());
        assert_eq!(fresh.state(), opt.state());
        let mut fresh_sched = schedule(fx, fresh.as_mut());
        if let (Some(a), Some(b)) = (&sched, &mut fresh_sched) {
            b.load_state(&a.state()).unwrap();
        }
        for k in half..fx.steps {
            opt.step(&grads(fx, &params, k)).unwrap();
            fresh.step(&grads(fx, &copies, k)).unwrap();
            if let (Some(a), Some(b)) = (&mut sched, &mut fresh_sched) {
                a.step(opt.as_mut());
                b.step(fresh.as_mut());
            }
            for (a, b) in params.iter().zip(&copies) {
                assert_eq!(a.value(), b.value(), "{}: step {k}, param {}", fx.name, a.name());
            }
        }
        check(fx, &copies, fx.steps - 1);
    }
}

#[test]
fn f32_parameters_follow_the_f64_trajectory() {
    for fx in &fixtures() {
        let params32: Vec<Param<f32>> = ["w", "b"]
            .iter()
            .map(|k| Param::new(*k, fx.tensors[&format!("param.{k}")].mapv(|v| v as f32)))
            .collect();
        let mut opt32 = build(fx, params32.clone());
        let mut sched = schedule(fx, opt32.as_mut());
        for k in 0..fx.steps {
            let mut g = Grads::default();
            for p in &params32 {
                g.set_param(
                    p,
                    fx.tensors[&format!("grad.{k}.{}", p.name())].mapv(|v| v as f32),
                );
            }
            opt32.step(&g).unwrap();
            if let Some(s) = sched.as_mut() {
                s.step(opt32.as_mut());
            }
            for p in &params32 {
                let want = &fx.tensors[&format!("expected.{k}.{}", p.name())];
                for (a, b) in p.value().iter().zip(want) {
                    assert!(
                        (*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()),
                        "{}: f32 step {k}: {a} vs {b}",
                        fx.name
                    );
                }
            }
        }
    }
}
