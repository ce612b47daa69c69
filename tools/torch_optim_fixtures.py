#!/usr/bin/env python3
"""Generate PyTorch optimizer parity fixtures for eddy.

One .safetensors file per optimizer configuration, all tensors float64:
  param.w [3,4], param.b [4]             initial parameters
  grad.<k>.w, grad.<k>.b                 gradient fed to step k (k = 0..steps-1)
  expected.<k>.w, expected.<k>.b         parameters after step k
Metadata (strings): optimizer (SGD|Adam|AdamW|RMSprop|Adagrad|NAdam|RAdam|Adamax|
Adadelta), steps (5, or 10 for RAdam, whose rectified branch starts at step 7), name,
seed, torch_version, hparams = JSON of the exact constructor kwargs used
(every hyper-parameter spelled out, defaults included, plus maximize/foreach).
Both parameters are in one param group, except in the groups_* files, whose
metadata adds groups = JSON list of two dicts of per-group options (w is in
group 0, b in group 1; the rest of each group's options are hparams), and
optionally schedule = JSON {"name": "CosineAnnealingLR", ...kwargs}, a
scheduler stepped after every optimizer step. All configurations share the
same initial parameters and gradients for a given seed.

Usage
  python3 tools/torch_optim_fixtures.py [--seed 0] [--out fixtures/torch/optim]
  python3 tools/torch_optim_fixtures.py --check [--out DIR]

--check reloads every file, replays it with torch.optim, and also with an
independent float64 NumPy implementation of the update rules below.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from st_util import save_deterministic  # noqa: E402

torch.set_default_dtype(torch.float64)

STEPS = 5
# per-step gradient scale: step 3 is small so Adam's second moment shrinks and
# amsgrad's running max makes a difference. The last five serve only the longer
# (RAdam) trajectories; the first five gradients are the same either way.
GRAD_SCALE = [1.0, 0.5, 2.0, 0.1, 1.0, 0.3, 1.5, 0.05, 1.0, 0.7]

ADAM_DEFAULTS = dict(betas=[0.9, 0.999], eps=1e-8, maximize=False, foreach=False)


def configs():
    sgd = lambda **kw: dict(dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0,  # noqa: E731
                                 nesterov=False, maximize=False, foreach=False), **kw)
    adam = lambda **kw: dict(dict(lr=0.01, **ADAM_DEFAULTS, weight_decay=0.0,  # noqa: E731
                                  amsgrad=False, decoupled_weight_decay=False), **kw)
    adamw = lambda **kw: dict(dict(lr=0.01, **ADAM_DEFAULTS, weight_decay=0.01,  # noqa: E731
                                   amsgrad=False), **kw)
    rms = lambda **kw: dict(dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0,  # noqa: E731
                                 momentum=0.0, centered=False, maximize=False,
                                 foreach=False), **kw)
    ada = lambda **kw: dict(dict(lr=0.01, lr_decay=0.0, weight_decay=0.0,  # noqa: E731
                                 initial_accumulator_value=0.0, eps=1e-10,
                                 maximize=False, foreach=False), **kw)
    nadam = lambda **kw: dict(dict(lr=2e-3, **ADAM_DEFAULTS, weight_decay=0.0,  # noqa: E731
                                   momentum_decay=4e-3, decoupled_weight_decay=False), **kw)
    radam = lambda **kw: dict(dict(lr=1e-3, **ADAM_DEFAULTS, weight_decay=0.0,  # noqa: E731
                                   decoupled_weight_decay=False), **kw)
    adamax = lambda **kw: dict(dict(lr=2e-3, **ADAM_DEFAULTS, weight_decay=0.0), **kw)  # noqa: E731
    adadelta = lambda **kw: dict(dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0,  # noqa: E731
                                      maximize=False, foreach=False), **kw)
    return [
        ("groups_sgd_momentum", "SGD", sgd(momentum=0.9)),
        ("groups_adam", "Adam", adam()),
        ("groups_adamw", "AdamW", adamw()),
        ("groups_adamw_cosine", "AdamW", adamw()),
        ("nadam_default", "NAdam", nadam()),
        ("nadam_weight_decay", "NAdam", nadam(lr=0.01, weight_decay=0.01)),
        ("nadam_decoupled_weight_decay", "NAdam",
         nadam(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, momentum_decay=0.01)),
        ("radam_default", "RAdam", radam()),
        ("radam_weight_decay", "RAdam", radam(lr=0.01, weight_decay=0.01)),
        ("radam_decoupled_weight_decay_maximize", "RAdam",
         radam(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
        ("adamax_default", "Adamax", adamax()),
        ("adamax_weight_decay", "Adamax", adamax(lr=0.01, betas=[0.8, 0.99], weight_decay=0.01)),
        ("adadelta_default", "Adadelta", adadelta()),
        ("adadelta_rho_weight_decay_maximize", "Adadelta",
         adadelta(lr=0.5, rho=0.5, eps=1e-4, weight_decay=0.01, maximize=True)),
        ("sgd_plain", "SGD", sgd()),
        ("sgd_momentum", "SGD", sgd(momentum=0.9)),
        ("sgd_momentum_dampening", "SGD", sgd(momentum=0.9, dampening=0.1)),
        ("sgd_nesterov", "SGD", sgd(momentum=0.9, nesterov=True)),
        ("sgd_momentum_weight_decay", "SGD", sgd(momentum=0.9, weight_decay=0.01)),
        ("adam_default", "Adam", adam()),
        ("adam_weight_decay", "Adam", adam(weight_decay=0.01)),
        ("adam_amsgrad", "Adam", adam(amsgrad=True)),
        ("adamw_default", "AdamW", adamw()),
        ("adamw_amsgrad", "AdamW", adamw(amsgrad=True)),
        ("rmsprop_default", "RMSprop", rms()),
        ("rmsprop_centered", "RMSprop", rms(centered=True)),
        ("rmsprop_momentum", "RMSprop", rms(momentum=0.9)),
        ("rmsprop_centered_momentum_weight_decay", "RMSprop",
         rms(centered=True, momentum=0.9, weight_decay=0.01)),
        ("adagrad_default", "Adagrad", ada()),
        ("adagrad_lr_decay_weight_decay_init_acc", "Adagrad",
         ada(lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    ]


def make_opt(optimizer, params, hparams):
    kw = dict(hparams)
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    return getattr(torch.optim, optimizer)(params, **kw)


GROUPS = {
    "groups_sgd_momentum": [dict(lr=0.1, weight_decay=0.01), dict(lr=0.02, weight_decay=0.0)],
    "groups_adam": [dict(lr=0.01, weight_decay=0.1), dict(lr=0.002, weight_decay=0.0)],
    "groups_adamw": [dict(lr=0.01, weight_decay=0.1), dict(lr=0.003, weight_decay=0.0, betas=[0.8, 0.99])],
    "groups_adamw_cosine": [dict(lr=0.01, weight_decay=0.1), dict(lr=0.003, weight_decay=0.0)],
}
SCHEDULES = {"groups_adamw_cosine": dict(name="CosineAnnealingLR", T_max=4, eta_min=0.0005)}


def run_torch(optimizer, hparams, init, grads, groups=None, schedule=None):
    """init: {'w','b'}; grads: list of {'w','b'}; returns list of {'w','b'}."""
    params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
    if groups is None:
        opt = make_opt(optimizer, [params["w"], params["b"]], hparams)
    else:
        gs = [dict(params=[params[x]], **{k: tuple(v) if k == "betas" else v for k, v in g.items()})
              for x, g in zip("wb", groups)]
        opt = make_opt(optimizer, gs, hparams)
    sched = None
    if schedule is not None:
        kw = {k: v for k, v in schedule.items() if k != "name"}
        sched = getattr(torch.optim.lr_scheduler, schedule["name"])(opt, **kw)
    out = []
    for g in grads:
        opt.zero_grad(set_to_none=True)
        for k in ("w", "b"):
            params[k].grad = g[k].clone()
        opt.step()
        if sched is not None:
            sched.step()
        out.append({k: p.detach().clone() for k, p in params.items()})
    return out


def make_inputs(seed):
    gen = torch.Generator().manual_seed(seed)
    init = {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(4, generator=gen)}
    grads = [{"w": s * torch.randn(3, 4, generator=gen), "b": s * torch.randn(4, generator=gen)}
             for s in GRAD_SCALE]
    return init, grads


# ----------------------------------------------------------------------------
# independent NumPy reference of the update rules (torch's single-tensor paths)
# ----------------------------------------------------------------------------

def ref_steps(optimizer, h, p, grads):
    p = p.copy()
    st = {}
    out = []
    for t, g0 in enumerate(grads, start=1):
        g = -g0 if h.get("maximize") else g0.copy()
        if optimizer == "SGD":
            if h["weight_decay"]:
                g = g + h["weight_decay"] * p
            if h["momentum"]:
                if "buf" not in st:
                    st["buf"] = g.copy()          # first step: no dampening
                else:
                    st["buf"] = h["momentum"] * st["buf"] + (1 - h["dampening"]) * g
                g = g + h["momentum"] * st["buf"] if h["nesterov"] else st["buf"]
            p = p - h["lr"] * g
        elif optimizer in ("Adam", "AdamW"):
            b1, b2 = h["betas"]
            if optimizer == "AdamW" or h.get("decoupled_weight_decay"):
                p = p * (1 - h["lr"] * h["weight_decay"])
            elif h["weight_decay"]:
                g = g + h["weight_decay"] * p
            m = st.get("m", np.zeros_like(p))
            v = st.get("v", np.zeros_like(p))
            m = m + (g - m) * (1 - b1)
            v = b2 * v + (1 - b2) * g * g
            st["m"], st["v"] = m, v
            bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
            if h["amsgrad"]:
                st["vmax"] = np.maximum(st.get("vmax", np.zeros_like(p)), v)
                vv = st["vmax"]
            else:
                vv = v
            denom = np.sqrt(vv) / np.sqrt(bc2) + h["eps"]
            p = p - (h["lr"] / bc1) * m / denom
        elif optimizer == "RMSprop":
            a = h["alpha"]
            if h["weight_decay"]:
                g = g + h["weight_decay"] * p
            sq = a * st.get("sq", np.zeros_like(p)) + (1 - a) * g * g
            st["sq"] = sq
            if h["centered"]:
                ga = st.get("ga", np.zeros_like(p))
                ga = ga + (g - ga) * (1 - a)
                st["ga"] = ga
                avg = np.sqrt(sq - ga * ga) + h["eps"]
            else:
                avg = np.sqrt(sq) + h["eps"]
            if h["momentum"] > 0:
                st["buf"] = h["momentum"] * st.get("buf", np.zeros_like(p)) + g / avg
                p = p - h["lr"] * st["buf"]
            else:
                p = p - h["lr"] * g / avg
        elif optimizer in ("NAdam", "RAdam"):
            b1, b2 = h["betas"]
            if h["weight_decay"] and h["decoupled_weight_decay"]:
                p = p * (1 - h["lr"] * h["weight_decay"])
            elif h["weight_decay"]:
                g = g + h["weight_decay"] * p
            m = st.get("m", np.zeros_like(p)) * b1 + (1 - b1) * g
            v = st.get("v", np.zeros_like(p)) * b2 + (1 - b2) * g * g
            st["m"], st["v"] = m, v
            bc2 = 1 - b2 ** t
            if optimizer == "NAdam":
                mu = lambda s: b1 * (1 - 0.5 * 0.96 ** (s * h["momentum_decay"]))  # noqa: E731
                prod = np.prod([mu(s) for s in range(1, t + 1)])
                denom = np.sqrt(v / bc2) + h["eps"]
                p = (p - h["lr"] * (1 - mu(t)) / (1 - prod) * g / denom
                     - h["lr"] * mu(t + 1) / (1 - prod * mu(t + 1)) * m / denom)
            else:
                mhat = m / (1 - b1 ** t)
                rho_inf = 2 / (1 - b2) - 1
                rho = rho_inf - 2 * t * b2 ** t / bc2
                if rho > 5:
                    r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                    p = p - h["lr"] * mhat * r * np.sqrt(bc2) / (np.sqrt(v) + h["eps"])
                else:
                    p = p - h["lr"] * mhat
        elif optimizer == "Adamax":
            b1, b2 = h["betas"]
            if h["weight_decay"]:
                g = g + h["weight_decay"] * p
            m = st.get("m", np.zeros_like(p)) * b1 + (1 - b1) * g
            u = np.maximum(st.get("u", np.zeros_like(p)) * b2, np.abs(g) + h["eps"])
            st["m"], st["u"] = m, u
            p = p - h["lr"] / (1 - b1 ** t) * m / u
        elif optimizer == "Adadelta":
            rho, eps = h["rho"], h["eps"]
            if h["weight_decay"]:
                g = g + h["weight_decay"] * p
            v = st.get("v", np.zeros_like(p)) * rho + (1 - rho) * g * g
            a = st.get("a", np.zeros_like(p))
            delta = np.sqrt(a + eps) / np.sqrt(v + eps) * g
            st["v"], st["a"] = v, rho * a + (1 - rho) * delta * delta
            p = p - h["lr"] * delta
        elif optimizer == "Adagrad":
            if h["weight_decay"]:
                g = g + h["weight_decay"] * p
            clr = h["lr"] / (1 + (t - 1) * h["lr_decay"])
            s = st.get("sum", np.full_like(p, h["initial_accumulator_value"])) + g * g
            st["sum"] = s
            p = p - clr * g / (np.sqrt(s) + h["eps"])
        else:
            raise ValueError(optimizer)
        out.append(p.copy())
    return out


def check_file(path, tol=1e-12):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    n = int(meta["steps"])
    h = json.loads(meta["hparams"])
    groups = json.loads(meta["groups"]) if "groups" in meta else None
    schedule = json.loads(meta["schedule"]) if "schedule" in meta else None
    opt = meta["optimizer"]
    problems = []
    want_keys = {"param.w", "param.b"} | {f"{p}.{k}.{x}" for p in ("grad", "expected")
                                         for k in range(n) for x in "wb"}
    if set(t) != want_keys:
        problems.append(f"keys differ: {sorted(set(t) ^ want_keys)}")
        return problems
    for k, v in t.items():
        if v.dtype != torch.float64:
            problems.append(f"{k} dtype {v.dtype}")
    init = {x: t[f"param.{x}"] for x in "wb"}
    grads = [{x: t[f"grad.{k}.{x}"] for x in "wb"} for k in range(n)]
    got = run_torch(opt, h, init, grads, groups, schedule)
    for i, x in enumerate("wb"):
        hx = dict(h, **groups[i]) if groups else h
        # the reference has no schedules; torch's replay still checks those files
        ref = None if schedule else ref_steps(opt, hx, init[x].numpy(), [g[x].numpy() for g in grads])
        for k in range(n):
            want = t[f"expected.{k}.{x}"]
            e1 = (got[k][x] - want).abs().max().item()
            if e1 > 0:
                problems.append(f"torch replay expected.{k}.{x} err {e1:.3g}")
            if ref is not None:
                e2 = np.abs(ref[k] - want.numpy()).max()
                if e2 > tol * max(1.0, want.abs().max().item()):
                    problems.append(f"numpy ref expected.{k}.{x} err {e2:.3g}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="fixtures/torch/optim")
    ap.add_argument("--check", action="store_true",
                    help="verify the files in --out instead of generating")
    args = ap.parse_args()
    out = Path(args.out)

    if args.check:
        files = sorted(out.glob("*.safetensors"))
        if not files:
            print(f"no fixtures in {out}")
            return 1
        bad = 0
        for p in files:
            probs = check_file(p)
            if probs:
                bad += 1
                print(f"FAIL {p.name}: " + "; ".join(probs))
        print(f"{len(files) - bad} passed, {bad} failed")
        return 1 if bad else 0

    out.mkdir(parents=True, exist_ok=True)
    init, grads = make_inputs(args.seed)
    total = 0
    results = {}
    for name, optimizer, hparams in configs():
        steps = 2 * STEPS if optimizer == "RAdam" else STEPS
        groups, schedule = GROUPS.get(name), SCHEDULES.get(name)
        traj = run_torch(optimizer, hparams, init, grads[:steps], groups, schedule)
        results[name] = traj
        tensors = {"param.w": init["w"], "param.b": init["b"]}
        for k in range(steps):
            for x in "wb":
                tensors[f"grad.{k}.{x}"] = grads[k][x]
                tensors[f"expected.{k}.{x}"] = traj[k][x]
        meta = {
            "optimizer": optimizer,
            "steps": str(steps),
            "hparams": json.dumps(hparams, sort_keys=True),
            "name": name,
            "seed": str(args.seed),
            "torch_version": torch.__version__.split("+")[0],
        }
        if groups is not None:
            meta["groups"] = json.dumps(groups, sort_keys=True)
        if schedule is not None:
            meta["schedule"] = json.dumps(schedule, sort_keys=True)
        path = out / f"{name}.safetensors"
        save_deterministic(tensors, path, meta)
        total += path.stat().st_size
    # sanity: variants must actually differ from their base configuration
    for a, b in [("adam_amsgrad", "adam_default"), ("adamw_amsgrad", "adamw_default"),
                 ("adamw_default", "adam_default"), ("adam_weight_decay", "adam_default"),
                 ("sgd_momentum_dampening", "sgd_momentum"), ("sgd_nesterov", "sgd_momentum"),
                 ("rmsprop_centered", "rmsprop_default"),
                 ("adagrad_lr_decay_weight_decay_init_acc", "adagrad_default"),
                 ("groups_adam", "adam_default"), ("groups_adamw", "adamw_default"),
                 ("groups_adamw_cosine", "groups_adamw"),
                 ("nadam_weight_decay", "nadam_default"), ("radam_weight_decay", "radam_default"),
                 ("adamax_weight_decay", "adamax_default"),
                 ("adadelta_rho_weight_decay_maximize", "adadelta_default")]:
        assert not torch.equal(results[a][-1]["w"], results[b][-1]["w"]), (a, b)
    print(f"wrote {len(results)} files to {out} ({total} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
