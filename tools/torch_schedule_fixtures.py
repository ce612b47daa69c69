#!/usr/bin/env python3
"""Generate PyTorch learning-rate schedule fixtures for eddy.

One JSON file, fixtures/torch/schedule/schedules.json: a list of cases, each
  name        a unique name
  scheduler   the torch.optim.lr_scheduler class (SequentialLR: "SequentialLR")
  kwargs      its constructor's keyword arguments (for SequentialLR: "schedulers",
              a list of {scheduler, kwargs}, and "milestones")
  group_lrs   the learning rate of each of the optimizer's parameter groups
  metrics     (ReduceLROnPlateau only) the metric passed to each step
  lrs         lrs[e][g]: group g's learning rate at position e (e = 0 after
              construction, then after each scheduler.step()), 30 positions
              (OneCycleLR: total_steps + 1, as it raises past them)
The optimizer is SGD (momentum 0) with two parameter groups of one parameter
each; it never steps, as only the learning rates matter.

LambdaLR's function cannot be stored; the case names one of LAMBDAS below, and
eddy's test spells the same function.

Usage
  python3 tools/torch_schedule_fixtures.py [--out fixtures/torch/schedule]
  python3 tools/torch_schedule_fixtures.py --check [--out DIR]
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

POSITIONS = 30
GROUP_LRS = [0.1, 0.02]

LAMBDAS = {
    "exp_095": lambda e: 0.95 ** e,
    "warmup4_inv_sqrt": lambda e: (e + 1) / 4 if e < 4 else 2.0 / e ** 0.5,
}

METRICS = [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7,
           0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]


def cases():
    seq_a = [dict(scheduler="LinearLR", kwargs=dict(start_factor=0.1, total_iters=4)),
             dict(scheduler="CosineAnnealingLR", kwargs=dict(T_max=10))]
    seq_b = [dict(scheduler="LinearLR", kwargs=dict(start_factor=0.5, total_iters=2)),
             dict(scheduler="ExponentialLR", kwargs=dict(gamma=0.8)),
             dict(scheduler="StepLR", kwargs=dict(step_size=3, gamma=0.5))]
    return [
        ("step_lr_default_gamma", "StepLR", dict(step_size=3)),
        ("multistep_lr_default_gamma", "MultiStepLR", dict(milestones=[2, 5, 9])),
        ("multistep_lr_repeated_milestone", "MultiStepLR", dict(milestones=[6, 3, 6], gamma=0.5)),
        ("exponential_lr", "ExponentialLR", dict(gamma=0.9)),
        ("cosine_annealing_default_eta_min", "CosineAnnealingLR", dict(T_max=10)),
        ("cosine_annealing_eta_min", "CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
        ("linear_lr_defaults", "LinearLR", dict()),
        ("linear_lr_warmup", "LinearLR", dict(start_factor=0.25, total_iters=3)),
        ("polynomial_lr_defaults", "PolynomialLR", dict()),
        ("polynomial_lr_power2", "PolynomialLR", dict(total_iters=12, power=2.0)),
        ("lambda_lr_exp", "LambdaLR", dict(lr_lambda="exp_095")),
        ("lambda_lr_warmup", "LambdaLR", dict(lr_lambda="warmup4_inv_sqrt")),
        ("warm_restarts_defaults", "CosineAnnealingWarmRestarts", dict(T_0=4)),
        ("warm_restarts_t_mult", "CosineAnnealingWarmRestarts", dict(T_0=3, T_mult=2, eta_min=0.001)),
        ("one_cycle_defaults", "OneCycleLR",
         dict(max_lr=[1.0, 0.2], total_steps=POSITIONS - 1, cycle_momentum=False)),
        ("one_cycle_linear_three_phase", "OneCycleLR",
         dict(max_lr=0.5, total_steps=20, anneal_strategy="linear", three_phase=True,
              pct_start=0.25, div_factor=10.0, final_div_factor=100.0, cycle_momentum=False)),
        ("cyclic_triangular", "CyclicLR",
         dict(base_lr=[0.01, 0.001], max_lr=[0.1, 0.05], step_size_up=4, cycle_momentum=False)),
        ("cyclic_triangular2", "CyclicLR",
         dict(base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=5, mode="triangular2",
              cycle_momentum=False)),
        ("cyclic_exp_range", "CyclicLR",
         dict(base_lr=0.01, max_lr=0.1, step_size_up=2, mode="exp_range", gamma=0.9,
              cycle_momentum=False)),
        ("sequential_warmup_cosine", "SequentialLR", dict(schedulers=seq_a, milestones=[4])),
        ("sequential_three", "SequentialLR", dict(schedulers=seq_b, milestones=[1, 8])),
        ("plateau_defaults_patience2", "ReduceLROnPlateau", dict(patience=2)),
        ("plateau_max_cooldown", "ReduceLROnPlateau",
         dict(mode="max", factor=0.5, patience=1, cooldown=2, min_lr=0.004)),
    ]


def build(opt, scheduler, kwargs):
    kw = dict(kwargs)
    if scheduler == "LambdaLR":
        kw["lr_lambda"] = LAMBDAS[kw["lr_lambda"]]
    if scheduler == "SequentialLR":
        kw["schedulers"] = [build(opt, s["scheduler"], s["kwargs"]) for s in kw["schedulers"]]
    return getattr(torch.optim.lr_scheduler, scheduler)(opt, **kw)


def run(scheduler, kwargs):
    params = [torch.nn.Parameter(torch.zeros(1, dtype=torch.float64)) for _ in GROUP_LRS]
    opt = torch.optim.SGD([dict(params=[p], lr=lr) for p, lr in zip(params, GROUP_LRS)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = build(opt, scheduler, kwargs)
        lrs = [[float(g["lr"]) for g in opt.param_groups]]
        # OneCycleLR raises past total_steps
        n = min(POSITIONS, kwargs.get("total_steps", POSITIONS) + 1)
        for e in range(1, n):
            opt.step()
            if scheduler == "ReduceLROnPlateau":
                s.step(METRICS[e - 1])
            else:
                s.step()
            lrs.append([float(g["lr"]) for g in opt.param_groups])
    return lrs


def generate():
    out = []
    for name, scheduler, kwargs in cases():
        case = dict(name=name, scheduler=scheduler, kwargs=kwargs, group_lrs=GROUP_LRS,
                    lrs=run(scheduler, kwargs))
        if scheduler == "ReduceLROnPlateau":
            case["metrics"] = METRICS
        out.append(case)
    return dict(torch_version=torch.__version__.split("+")[0], positions=POSITIONS, cases=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", default="fixtures/torch/schedule")
    ap.add_argument("--check", action="store_true",
                    help="verify the committed file instead of writing it")
    args = ap.parse_args()
    path = Path(args.out) / "schedules.json"
    data = generate()
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if args.check:
        old = json.loads(path.read_text())
        bad = [c["name"] for c, d in zip(old["cases"], data["cases"]) if c != d]
        if len(old["cases"]) != len(data["cases"]):
            bad.append("number of cases")
        print(f"{len(data['cases']) - len(bad)} passed, {len(bad)} failed")
        return 1 if bad else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {len(data['cases'])} cases to {path} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
