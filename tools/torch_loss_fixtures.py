#!/usr/bin/env python3
"""Generate PyTorch loss fixtures for eddy: values and input gradients.

One JSON file, fixtures/torch/loss/losses.json: a list of cases, each
  name      a unique name
  loss      cross_entropy | smooth_l1 | huber | bce_with_logits
  input     {"shape": [...], "data": [... row-major float64]}
  target    class indices (list of ints, row-major over the input's shape less
            axis 1) or {"shape", "data"} like input
  options   the functional's keyword arguments (weight / pos_weight as
            {"shape", "data"}, reduction "mean" | "sum")
  value     the loss
  grad      d loss / d input, {"shape", "data"}
Everything is float64; the inputs come from torch.Generator seed 0.

Usage
  python3 tools/torch_loss_fixtures.py [--out fixtures/torch/loss]
  python3 tools/torch_loss_fixtures.py --check [--out DIR]
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def t(x):
    return {"shape": list(x.shape), "data": x.flatten().tolist()}


def from_json(v):
    return torch.tensor(v["data"]).reshape(v["shape"])


def cases(gen):
    r = lambda *s: torch.randn(*s, generator=gen) * 2  # noqa: E731
    out = []
    x2 = r(6, 4)
    y2 = [0, 3, 1, 3, 2, 1]
    w = torch.tensor([0.2, 1.0, 2.0, 0.5])
    x3 = r(2, 3, 5)
    y3 = [0, 2, 2, 1, 7, 1, 0, 7, 2, 2]   # 7 is the ignored index
    w3 = torch.tensor([1.5, 0.5, 1.0])
    probs = torch.softmax(r(6, 4), dim=1)
    for red in ("mean", "sum"):
        out += [
            (f"ce_weight_{red}", "cross_entropy", x2, y2, dict(weight=w, reduction=red)),
            (f"ce_ignore_index_{red}", "cross_entropy", x2, y2, dict(ignore_index=1, reduction=red)),
            (f"ce_label_smoothing_{red}", "cross_entropy", x2, y2,
             dict(label_smoothing=0.1, reduction=red)),
            (f"ce_all_three_{red}", "cross_entropy", x2, y2,
             dict(weight=w, ignore_index=3, label_smoothing=0.2, reduction=red)),
            (f"ce_3d_all_three_{red}", "cross_entropy", x3, y3,
             dict(weight=w3, ignore_index=7, label_smoothing=0.15, reduction=red)),
            (f"ce_probs_weight_smoothing_{red}", "cross_entropy", x2, probs,
             dict(weight=w, label_smoothing=0.1, reduction=red)),
        ]
    a, b = r(3, 5), r(3, 5)
    pw = torch.tensor([0.5, 1.0, 2.0, 3.0, 10.0])
    ew = torch.rand(3, 1, generator=gen) + 0.5
    yb = (torch.rand(3, 5, generator=gen) > 0.5).to(torch.float64)
    ys = torch.rand(3, 5, generator=gen)
    for red in ("mean", "sum"):
        out += [
            (f"smooth_l1_default_{red}", "smooth_l1", a, b, dict(reduction=red)),
            (f"smooth_l1_beta_{red}", "smooth_l1", a, b, dict(beta=0.5, reduction=red)),
            (f"huber_delta_{red}", "huber", a, b, dict(delta=2.0, reduction=red)),
            (f"bce_pos_weight_{red}", "bce_with_logits", a, yb, dict(pos_weight=pw, reduction=red)),
            (f"bce_pos_weight_weight_soft_{red}", "bce_with_logits", a, ys,
             dict(pos_weight=pw, weight=ew, reduction=red)),
        ]
    return out


FUNCS = {
    "cross_entropy": F.cross_entropy,
    "smooth_l1": F.smooth_l1_loss,
    "huber": F.huber_loss,
    "bce_with_logits": F.binary_cross_entropy_with_logits,
}


def evaluate(loss, x, target, options):
    x = x.clone().requires_grad_(True)
    if isinstance(target, list):   # class indices, row-major over the input less axis 1
        tgt = torch.tensor(target).reshape(x.shape[:1] + x.shape[2:])
    else:
        tgt = target
    value = FUNCS[loss](x, tgt, **options)
    value.backward()
    return value.item(), x.grad


def generate():
    gen = torch.Generator().manual_seed(0)
    out = []
    for name, loss, x, target, options in cases(gen):
        value, grad = evaluate(loss, x, target, options)
        out.append(dict(
            name=name, loss=loss, input=t(x),
            target=target if isinstance(target, list) else t(target),
            options={k: t(v) if isinstance(v, torch.Tensor) else v for k, v in options.items()},
            value=value, grad=t(grad)))
    return dict(torch_version=torch.__version__.split("+")[0], cases=out)


def check(path):
    data = json.loads(path.read_text())
    bad = 0
    for c in data["cases"]:
        target = c["target"] if isinstance(c["target"], list) else from_json(c["target"])
        options = {k: from_json(v) if isinstance(v, dict) else v for k, v in c["options"].items()}
        value, grad = evaluate(c["loss"], from_json(c["input"]), target, options)
        if value != c["value"] or grad.flatten().tolist() != c["grad"]["data"]:
            bad += 1
            print(f"FAIL {c['name']}")
    print(f"{len(data['cases']) - bad} passed, {bad} failed")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", default="fixtures/torch/loss")
    ap.add_argument("--check", action="store_true",
                    help="replay the committed file with torch instead of writing it")
    args = ap.parse_args()
    path = Path(args.out) / "losses.json"
    if args.check:
        return check(path)
    data = generate()
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {len(data['cases'])} cases to {path} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
