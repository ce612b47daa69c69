#!/usr/bin/env python3
"""Generate PyTorch parity fixtures for eddy's newer recurrent cells.

minGRU and minLSTM (Feng et al. 2024, also in their log-space mode), RG-LRU (De et al.
2024), sLSTM and mLSTM (Beck et al. 2024), each written here in plain PyTorch from the
equations of issue 13 (the same ones as the cells' doc comments): a loop over time, masking
for ragged lengths, autograd for the gradients. One .safetensors file per case, float64
(except int64 `lengths`), in the layout of tools/torch_fixtures.py:

  <param>_l{k}, <param>_l{k}_reverse   the cell parameters by their eddy/PyTorch-style names
  input                [T,B,I] ([B,T,I] if batch_first)
  lengths              int64 [B] (ragged cases only)
  {s}0, {s}_n          for every state part s in the cell's order (h; h, c, n, m; h, C, n, m):
                       initial and final state, [layers*dirs, B, size]
  output               [T,B,dirs*H] ([B,T,...] if batch_first); zero past lengths
  g_output, g_{s}_n    loss weights; loss = sum(output*g_output) + sum_s sum(s_n*g_s_n)
  grad.input, grad.{s}0, grad.<param name>   d loss / d ...

Metadata (strings): mode (mingru, minlstm, rglru, slstm, mlstm), input_size, hidden_size,
num_layers, bidirectional, batch_first, bias ("true"), proj_size ("0"), heads (slstm, mlstm),
log_space (mingru, minlstm), name, seed, torch_version.

Usage
  python3 tools/torch_cell_fixtures.py [--seed 0] [--out fixtures/torch/cells]
  python3 tools/torch_cell_fixtures.py --check [--out DIR]   # recompute and compare
"""

import argparse
import math
import sys
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from st_util import save_deterministic  # noqa: E402

torch.set_default_dtype(torch.float64)

T, B, I, H, HEADS = 5, 3, 4, 8, 2
C_RGLRU = 8.0


# ----------------------------------------------------------------------------
# the cells, one step each, from the equations
# ----------------------------------------------------------------------------

def g(v):
    """minGRU/minLSTM log-space mode's g: v + 0.5 for v >= 0, sigmoid(v) otherwise."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def mingru_step(x, state, p, log_space):
    (h,) = state
    k, cand = (x @ p["weight_ih"].T + p["bias_ih"]).chunk(2, dim=-1)
    z = torch.sigmoid(k)
    if log_space:
        cand = g(cand)
    return ((1 - z) * h + z * cand,)


def minlstm_step(x, state, p, log_space):
    (h,) = state
    kf, ki, cand = (x @ p["weight_ih"].T + p["bias_ih"]).chunk(3, dim=-1)
    f, i = torch.sigmoid(kf), torch.sigmoid(ki)
    if log_space:
        cand = g(cand)
    return (f / (f + i) * h + i / (f + i) * cand,)


def rglru_step(x, state, p, _):
    (h,) = state
    r = torch.sigmoid(x @ p["weight_a"].T + p["bias_a"])
    i = torch.sigmoid(x @ p["weight_x"].T + p["bias_x"])
    log_a = -C_RGLRU * r * F.softplus(-p["a_param"])
    a = torch.exp(log_a)
    return (a * h + torch.sqrt(1 - a * a) * (i * x),)


def slstm_step(x, state, p, heads):
    h, c, n, m = state
    hidden = h.shape[-1]
    dh = hidden // heads
    # Block-diagonal R: head j reads h[j*dh:(j+1)*dh]; its row g*dh+u adds to g*H + j*dh + u.
    pieces = [[None] * heads for _ in range(4)]
    for j in range(heads):
        rj = h[:, j * dh:(j + 1) * dh] @ p["weight_hh"][j].T  # [B, 4*dh]
        for gate in range(4):
            pieces[gate][j] = rj[:, gate * dh:(gate + 1) * dh]
    rec = torch.cat([torch.cat(pieces[gate], dim=-1) for gate in range(4)], dim=-1)
    pre = x @ p["weight_ih"].T + rec + p["bias"]
    it, ft, zt, ot = pre.chunk(4, dim=-1)
    log_f = F.logsigmoid(ft)
    m_new = torch.maximum(log_f + m, it)
    i_g = torch.exp(it - m_new)
    f_g = torch.exp(log_f + m - m_new)
    c_new = f_g * c + i_g * torch.tanh(zt)
    n_new = f_g * n + i_g
    h_new = torch.sigmoid(ot) * c_new / n_new
    return (h_new, c_new, n_new, m_new)


def mlstm_step(x, state, p, heads):
    h, C, n, m = state
    hidden = h.shape[-1]
    d = hidden // heads
    b = x.shape[0]
    q, k, v, o = (x @ p["weight_qkvo"].T + p["bias_qkvo"]).chunk(4, dim=-1)
    k = k / math.sqrt(d)
    o = torch.sigmoid(o)
    gates = x @ p["weight_if"].T + p["bias_if"]
    it, ft = gates[:, :heads], gates[:, heads:]
    log_f = F.logsigmoid(ft)
    m_new = torch.maximum(log_f + m, it)  # [B, heads]
    i_g = torch.exp(it - m_new)
    f_g = torch.exp(log_f + m - m_new)
    q, k, v = (t.reshape(b, heads, d) for t in (q, k, v))
    C = C.reshape(b, heads, d, d)  # C[a][b]: a the v index, b the k index
    C_new = f_g[..., None, None] * C + i_g[..., None, None] * (v[..., :, None] * k[..., None, :])
    n_new = f_g[..., None] * n.reshape(b, heads, d) + i_g[..., None] * k
    num = (C_new @ q[..., None])[..., 0]  # [B, heads, d]
    den = torch.maximum((n_new * q).sum(-1).abs(), torch.exp(-m_new))
    h_new = o * (num / den[..., None]).reshape(b, hidden)
    return (h_new, C_new.reshape(b, heads * d * d), n_new.reshape(b, hidden), m_new)


STEPS = {"mingru": mingru_step, "minlstm": minlstm_step, "rglru": rglru_step,
         "slstm": slstm_step, "mlstm": mlstm_step}
PARTS = {"mingru": ["h"], "minlstm": ["h"], "rglru": ["h"],
         "slstm": ["h", "c", "n", "m"], "mlstm": ["h", "C", "n", "m"]}


def state_sizes(mode, hidden, heads):
    if mode == "slstm":
        return [hidden] * 4
    if mode == "mlstm":
        d = hidden // heads
        return [hidden, heads * d * d, hidden, heads]
    return [hidden]


def make_params(mode, inp, hidden, heads):
    """Random parameters by name (uniform, scaled like nn.Linear's init, a bit wider)."""
    u = lambda shape, fan: (torch.rand(*shape) * 2 - 1) * (1.5 / math.sqrt(fan))  # noqa: E731
    if mode == "mingru":
        return {"weight_ih": u((2 * hidden, inp), inp), "bias_ih": u((2 * hidden,), inp)}
    if mode == "minlstm":
        return {"weight_ih": u((3 * hidden, inp), inp), "bias_ih": u((3 * hidden,), inp)}
    if mode == "rglru":
        s = (torch.rand(hidden) * 0.099 + 0.9) ** (1 / C_RGLRU)  # sigma(L)^c in [0.9, 0.999]
        return {"weight_a": u((hidden, hidden), hidden), "bias_a": u((hidden,), hidden),
                "weight_x": u((hidden, hidden), hidden), "bias_x": u((hidden,), hidden),
                "a_param": torch.log(s / (1 - s))}
    if mode == "slstm":
        dh = hidden // heads
        return {"weight_ih": u((4 * hidden, inp), inp), "weight_hh": u((heads, 4 * dh, dh), dh),
                "bias": u((4 * hidden,), inp)}
    if mode == "mlstm":
        return {"weight_qkvo": u((4 * hidden, inp), inp), "bias_qkvo": u((4 * hidden,), inp),
                "weight_if": u((2 * heads, inp), inp), "bias_if": u((2 * heads,), inp)}
    raise ValueError(mode)


def layer_forward(mode, opt, params, x, s0, lengths):
    """The generic layer: stacked, bidirectional, masked past each length.

    params: name -> tensor with the _l{k}[_reverse] suffixes; s0: one [L*D, B, size] per part.
    Returns (output, [s_n per part]).
    """
    L, D, bf = opt["num_layers"], 2 if opt["bidirectional"] else 1, opt["batch_first"]
    extra = opt["heads"] if mode in ("slstm", "mlstm") else opt["log_space"]
    step = STEPS[mode]
    if bf:
        x = x.transpose(0, 1)
    steps, batch = x.shape[0], x.shape[1]
    lens = lengths if lengths is not None else torch.full((batch,), steps, dtype=torch.int64)
    layer_in = x
    finals = [[] for _ in s0]
    for l in range(L):
        outs = []
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d == 1 else "")
            p = {name[: -len(sfx)]: t for name, t in params.items() if name.endswith(sfx)}
            state = tuple(s[l * D + d] for s in s0)
            out = [None] * steps
            for t in (range(steps) if d == 0 else range(steps - 1, -1, -1)):
                keep = (t < lens).unsqueeze(1)
                new = step(layer_in[t], state, p, extra)
                state = tuple(torch.where(keep, a, b) for a, b in zip(new, state))
                out[t] = torch.where(keep, state[0], torch.zeros_like(state[0]))
            outs.append(torch.stack(out))
            for k, s in enumerate(state):
                finals[k].append(s)
        layer_in = torch.cat(outs, dim=-1)
    out = layer_in.transpose(0, 1) if bf else layer_in
    return out, [torch.stack(f) for f in finals]


def loss_and_grads(mode, out, s_n, g, leaves):
    loss = (out * g["g_output"]).sum()
    for s, t in zip(PARTS[mode], s_n):
        loss = loss + (t * g[f"g_{s}_n"]).sum()
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    return {f"grad.{n}": gr for n, gr in zip(names, grads)}


# ----------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------

def case_list():
    base = dict(num_layers=1, bidirectional=False, batch_first=False, ragged=False,
                log_space=False, heads=HEADS)
    variants = {
        "1layer": {},
        "2layer_bidir": dict(num_layers=2, bidirectional=True),
        "bidir_batch_first_ragged": dict(bidirectional=True, batch_first=True, ragged=True),
    }
    cases = []
    for mode in ["mingru", "minlstm", "rglru", "slstm", "mlstm"]:
        for suffix, v in variants.items():
            if mode == "rglru" and suffix == "2layer_bidir":
                suffix, v = "2layer", dict(num_layers=2)  # I = H: no bidirectional stack
            cases.append((f"{mode}_{suffix}", mode, {**base, **v}))
        if mode in ("mingru", "minlstm"):
            cases.append((f"{mode}_log_1layer", mode, {**base, "log_space": True}))
            cases.append((f"{mode}_log_2layer_bidir_ragged", mode,
                          {**base, "log_space": True, "num_layers": 2, "bidirectional": True,
                           "ragged": True}))
    return cases


def case_seed(seed, name):
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**62)


def draw_state(mode, part, shape, log_space):
    if log_space or (mode == "slstm" and part == "n"):
        return torch.rand(*shape) + 0.3  # positive: the log-space h, sLSTM's normaliser
    return 0.5 * torch.randn(*shape)


def generate_case(name, mode, opt, seed):
    torch.manual_seed(case_seed(seed, name))
    inp = H if mode == "rglru" else I
    L, D = opt["num_layers"], 2 if opt["bidirectional"] else 1
    params = {}
    layer_in = inp
    for l in range(L):
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d == 1 else "")
            for n, t in make_params(mode, layer_in, H, opt["heads"]).items():
                params[n + sfx] = t
        layer_in = H * D
    x = torch.randn(B, T, inp) if opt["batch_first"] else torch.randn(T, B, inp)
    sizes = state_sizes(mode, H, opt["heads"])
    s0 = [draw_state(mode, s, (L * D, B, size), opt["log_space"])
          for s, size in zip(PARTS[mode], sizes)]
    lengths = None
    if opt["ragged"]:
        lengths = torch.tensor([T - 1, T, 2], dtype=torch.int64)  # unsorted, one full
    leaves = {"input": x.requires_grad_(True)}
    for s, t in zip(PARTS[mode], s0):
        leaves[f"{s}0"] = t.requires_grad_(True)
    for n, t in params.items():
        leaves[n] = t.requires_grad_(True)
    out, s_n = layer_forward(mode, opt, params, x, s0, lengths)
    g = {"g_output": torch.randn_like(out)}
    for s, t in zip(PARTS[mode], s_n):
        g[f"g_{s}_n"] = torch.randn_like(t)
    grads = loss_and_grads(mode, out, s_n, g, leaves)

    tensors = {n: t.detach() for n, t in leaves.items()}
    if lengths is not None:
        tensors["lengths"] = lengths
    tensors["output"] = out.detach()
    for s, t in zip(PARTS[mode], s_n):
        tensors[f"{s}_n"] = t.detach()
    tensors.update(g)
    tensors.update(grads)
    meta = {
        "mode": mode,
        "input_size": str(inp),
        "hidden_size": str(H),
        "num_layers": str(L),
        "bidirectional": "true" if opt["bidirectional"] else "false",
        "batch_first": "true" if opt["batch_first"] else "false",
        "bias": "true",
        "proj_size": "0",
        "name": name,
        "seed": str(seed),
        "torch_version": torch.__version__.split("+")[0],
    }
    if mode in ("slstm", "mlstm"):
        meta["heads"] = str(opt["heads"])
    if mode in ("mingru", "minlstm"):
        meta["log_space"] = "true" if opt["log_space"] else "false"
    return tensors, meta


def check_file(path, tol=1e-10):
    """Recomputes a file's outputs and gradients from its parameters and inputs."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    mode = meta["mode"]
    opt = dict(num_layers=int(meta["num_layers"]), bidirectional=meta["bidirectional"] == "true",
               batch_first=meta["batch_first"] == "true", heads=int(meta.get("heads", HEADS)),
               log_space=meta.get("log_space") == "true")
    parts = PARTS[mode]
    fixed = {"input", "lengths", "output"} | {f"{s}0" for s in parts} | {f"{s}_n" for s in parts}
    params = {k: t[k].clone().requires_grad_(True) for k in t
              if k not in fixed and not k.startswith(("g_", "grad."))}
    leaves = {"input": t["input"].clone().requires_grad_(True)}
    for s in parts:
        leaves[f"{s}0"] = t[f"{s}0"].clone().requires_grad_(True)
    leaves.update(params)
    s0 = [leaves[f"{s}0"] for s in parts]
    out, s_n = layer_forward(mode, opt, params, leaves["input"], s0, t.get("lengths"))
    g = {k: v for k, v in t.items() if k.startswith("g_")}
    got = {"output": out, **{f"{s}_n": v for s, v in zip(parts, s_n)},
           **loss_and_grads(mode, out, s_n, g, leaves)}
    problems = []
    for k, v in got.items():
        err = (v - t[k]).abs().max().item()
        if v.shape != t[k].shape or err > tol * max(1.0, t[k].abs().max().item()):
            problems.append(f"{k}: err {err:.3g}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="fixtures/torch/cells")
    ap.add_argument("--check", action="store_true", help="verify the files in --out")
    args = ap.parse_args()
    out = Path(args.out)
    if args.check:
        files = sorted(out.glob("*.safetensors"))
        bad = 0
        for p in files:
            probs = check_file(p)
            if probs:
                bad += 1
                print(f"FAIL {p.name}: " + "; ".join(probs))
        print(f"{len(files) - bad} passed, {bad} failed")
        return 1 if bad or not files else 0
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, mode, opt in case_list():
        tensors, meta = generate_case(name, mode, opt, args.seed)
        path = out / f"{name}.safetensors"
        save_deterministic(tensors, path, meta)
        total += path.stat().st_size
    print(f"wrote {len(case_list())} files to {out} ({total} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
