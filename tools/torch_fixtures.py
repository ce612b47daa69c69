#!/usr/bin/env python3
"""Generate PyTorch parity fixtures for eddy's recurrent layers (RNN/LSTM/GRU).

One .safetensors file per case, float64 throughout (except int64 `lengths`).

Tensors in each file
  <state-dict names>   weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0,
                       weight_hr_l0 (LSTM proj_size), *_reverse, *_l1, ...
  input                [T,B,I] ([B,T,I] if batch_first)
  h0                   [layers*dirs, B, H_out]  (H_out = proj_size or hidden_size)
  c0                   [layers*dirs, B, hidden_size]  (LSTM only)
  lengths              int64 [B]  (ragged cases only; packed with enforce_sorted=False)
  output               [T,B,dirs*H_out] ([B,T,...] if batch_first); zero past lengths
  h_n, c_n             like h0, c0
  g_output, g_h_n, g_c_n   loss weights; loss = sum(output*g_output) + sum(h_n*g_h_n)
                       (+ sum(c_n*g_c_n) for LSTM)
  grad.input, grad.h0, grad.c0, grad.<param name>   d loss / d ...

Metadata (strings): mode, input_size, hidden_size, num_layers, bidirectional,
batch_first, bias, proj_size, name, seed, torch_version.

Usage
  python3 tools/torch_fixtures.py [--seed 0] [--out fixtures/torch/rnn]
  python3 tools/torch_fixtures.py --check [--out DIR]    # verify existing files

--check reloads every file, rebuilds the torch module from the metadata and
recomputes everything, and also recomputes with an independent step-by-step
reference implementation (plain tensor ops + autograd, masking for ragged
lengths) to confirm the semantics.
"""

import argparse
import sys
import zlib
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from st_util import save_deterministic  # noqa: E402

torch.set_default_dtype(torch.float64)

MODES = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]
PREFIX = {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "LSTM": "lstm", "GRU": "gru"}


def case_list():
    """(name, mode, options) for every fixture."""
    variants = [
        # suffix, num_layers, bidirectional, batch_first, bias, ragged
        ("1layer", 1, False, False, True, False),
        ("2layer", 2, False, False, True, False),
        ("3layer", 3, False, False, True, False),
        ("2layer_bidir", 2, True, False, True, False),
        ("batch_first", 1, False, True, True, False),
        ("nobias", 1, False, False, False, False),
        ("ragged", 1, False, False, True, True),
        ("bidir_ragged", 1, True, False, True, True),
        ("2layer_bidir_batch_first_ragged", 2, True, True, True, True),
    ]
    cases = []
    for mode in MODES:
        for suffix, layers, bidir, bf, bias, ragged in variants:
            cases.append((f"{PREFIX[mode]}_{suffix}", mode,
                          dict(num_layers=layers, bidirectional=bidir, batch_first=bf,
                               bias=bias, ragged=ragged, proj_size=0)))
    cases.append(("lstm_proj", "LSTM",
                  dict(num_layers=1, bidirectional=False, batch_first=False,
                       bias=True, ragged=False, proj_size=2)))
    cases.append(("lstm_proj_2layer_bidir", "LSTM",
                  dict(num_layers=2, bidirectional=True, batch_first=False,
                       bias=True, ragged=False, proj_size=2)))
    return cases


def make_module(mode, input_size, hidden_size, num_layers, bias, batch_first,
                bidirectional, proj_size):
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first,
              bidirectional=bidirectional)
    if mode in ("RNN_TANH", "RNN_RELU"):
        m = nn.RNN(input_size, hidden_size,
                   nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kw)
    elif mode == "LSTM":
        m = nn.LSTM(input_size, hidden_size, proj_size=proj_size, **kw)
    elif mode == "GRU":
        m = nn.GRU(input_size, hidden_size, **kw)
    else:
        raise ValueError(mode)
    return m.double()


def run_module(module, mode, x, h0, c0, lengths, batch_first):
    """Forward through the torch module; returns (output, h_n, c_n or None)."""
    T = x.shape[1] if batch_first else x.shape[0]
    inp = x
    if lengths is not None:
        inp = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    if mode == "LSTM":
        out, (h_n, c_n) = module(inp, (h0, c0))
    else:
        out, h_n = module(inp, h0)
        c_n = None
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    return out, h_n, c_n


def loss_and_grads(mode, params, x, h0, c0, out, h_n, c_n, g):
    loss = (out * g["g_output"]).sum() + (h_n * g["g_h_n"]).sum()
    if mode == "LSTM":
        loss = loss + (c_n * g["g_c_n"]).sum()
    wrt = [x, h0] + ([c0] if mode == "LSTM" else []) + [p for _, p in params]
    grads = torch.autograd.grad(loss, wrt)
    names = ["input", "h0"] + (["c0"] if mode == "LSTM" else []) + [n for n, _ in params]
    return {f"grad.{n}": gr for n, gr in zip(names, grads)}


def case_seed(seed, name):
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**62)


def generate_case(name, mode, opt, seed):
    torch.manual_seed(case_seed(seed, name))
    gen_int = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,)).item())  # noqa: E731
    # small sizes; keep T, B, I, H pairwise distinct so transposition bugs show up
    while True:
        T, B, I, H = gen_int(3, 6), gen_int(2, 4), gen_int(2, 5), gen_int(3, 6)
        if len({T, B, I, H}) == 4:
            break
    L, bidir, bf, bias, P = (opt["num_layers"], opt["bidirectional"], opt["batch_first"],
                             opt["bias"], opt["proj_size"])
    D = 2 if bidir else 1
    Hout = P if P > 0 else H

    module = make_module(mode, I, H, L, bias, bf, bidir, P)
    with torch.no_grad():
        for pname, p in module.named_parameters():
            if pname.startswith("bias"):
                # default init is U(-k, k) for both biases already; add a
                # perturbation so bias_ih != bias_hh for sure and both nonzero
                p.add_(0.1 * torch.randn_like(p))

    x = torch.randn(B, T, I) if bf else torch.randn(T, B, I)
    h0 = 0.5 * torch.randn(L * D, B, Hout)
    c0 = 0.5 * torch.randn(L * D, B, H) if mode == "LSTM" else None
    lengths = None
    if opt["ragged"]:
        lengths = torch.randint(1, T + 1, (B,), dtype=torch.int64)
        full = gen_int(1, B - 1)          # never index 0 -> input is not length-sorted
        short = gen_int(0, full - 1)
        lengths[full] = T
        lengths[short] = gen_int(1, T - 1)
        lengths[0] = min(int(lengths[0]), T - 1)  # lengths[0] < lengths[full]: unsorted

    x.requires_grad_(True)
    h0.requires_grad_(True)
    if c0 is not None:
        c0.requires_grad_(True)
    out, h_n, c_n = run_module(module, mode, x, h0, c0, lengths, bf)

    g = {"g_output": torch.randn_like(out), "g_h_n": torch.randn_like(h_n)}
    if mode == "LSTM":
        g["g_c_n"] = torch.randn_like(c_n)
    params = list(module.named_parameters())
    grads = loss_and_grads(mode, params, x, h0, c0, out, h_n, c_n, g)

    tensors = {n: p.detach().clone() for n, p in params}
    tensors["input"] = x.detach()
    tensors["h0"] = h0.detach()
    if c0 is not None:
        tensors["c0"] = c0.detach()
    if lengths is not None:
        tensors["lengths"] = lengths
    tensors["output"] = out.detach()
    tensors["h_n"] = h_n.detach()
    if c_n is not None:
        tensors["c_n"] = c_n.detach()
    tensors.update(g)
    tensors.update(grads)

    for k, v in tensors.items():
        want = torch.int64 if k == "lengths" else torch.float64
        assert v.dtype == want, (name, k, v.dtype)
    assert tensors["h0"].shape == (L * D, B, Hout)
    assert tensors["output"].shape[-1] == D * Hout

    meta = {
        "mode": mode,
        "input_size": str(I),
        "hidden_size": str(H),
        "num_layers": str(L),
        "bidirectional": "true" if bidir else "false",
        "batch_first": "true" if bf else "false",
        "bias": "true" if bias else "false",
        "proj_size": str(P),
        "name": name,
        "seed": str(seed),
        "torch_version": torch.__version__.split("+")[0],
    }
    return tensors, meta


# ----------------------------------------------------------------------------
# independent reference implementation (used by --check)
# ----------------------------------------------------------------------------

def ref_cell(mode, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr):
    gi = x @ w_ih.T + (b_ih if b_ih is not None else 0)
    gh = h @ w_hh.T + (b_hh if b_hh is not None else 0)
    if mode == "RNN_TANH":
        return torch.tanh(gi + gh), None
    if mode == "RNN_RELU":
        return torch.relu(gi + gh), None
    if mode == "LSTM":
        i, f, gg, o = (gi + gh).chunk(4, dim=-1)
        c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h2 = torch.sigmoid(o) * torch.tanh(c2)
        if w_hr is not None:
            h2 = h2 @ w_hr.T
        return h2, c2
    if mode == "GRU":
        ir, iz, inn = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(inn + r * hn)
        return (1 - z) * n + z * h, None
    raise ValueError(mode)


def ref_forward(mode, P, x, h0, c0, lengths, L, D, batch_first):
    """Step-by-step masked recurrence. x time-major inside."""
    if batch_first:
        x = x.transpose(0, 1)
    T, B = x.shape[0], x.shape[1]
    lens = lengths if lengths is not None else torch.full((B,), T, dtype=torch.int64)
    layer_in = x
    h_n, c_n = [], []
    for l in range(L):
        dir_outs = []
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d == 1 else "")
            w = lambda n: P.get(n + sfx)  # noqa: E731
            h = h0[l * D + d]
            c = c0[l * D + d] if c0 is not None else None
            outs = [None] * T
            steps = range(T) if d == 0 else range(T - 1, -1, -1)
            for t in steps:
                m = (t < lens).unsqueeze(1)
                h2, c2 = ref_cell(mode, layer_in[t], h, c, w("weight_ih"), w("weight_hh"),
                                  w("bias_ih"), w("bias_hh"), w("weight_hr"))
                outs[t] = torch.where(m, h2, torch.zeros_like(h2))
                h = torch.where(m, h2, h)
                if c is not None:
                    c = torch.where(m, c2, c)
            dir_outs.append(torch.stack(outs))
            h_n.append(h)
            if c is not None:
                c_n.append(c)
        layer_in = torch.cat(dir_outs, dim=-1)
    out = layer_in.transpose(0, 1) if batch_first else layer_in
    return out, torch.stack(h_n), (torch.stack(c_n) if c_n else None)


def check_file(path, tol=1e-10):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    mode = meta["mode"]
    I, H, L = int(meta["input_size"]), int(meta["hidden_size"]), int(meta["num_layers"])
    bidir = meta["bidirectional"] == "true"
    bf = meta["batch_first"] == "true"
    bias = meta["bias"] == "true"
    P = int(meta["proj_size"])
    D = 2 if bidir else 1
    module = make_module(mode, I, H, L, bias, bf, bidir, P)
    sd_names = list(module.state_dict().keys())
    module.load_state_dict({k: t[k] for k in sd_names}, strict=True)
    lengths = t.get("lengths")
    is_lstm = mode == "LSTM"
    g = {k: t[k] for k in ("g_output", "g_h_n", "g_c_n") if k in t}

    # expected key set
    expected = set(sd_names) | {"input", "h0", "output", "h_n", "g_output", "g_h_n",
                                "grad.input", "grad.h0"} | {f"grad.{n}" for n in sd_names}
    if is_lstm:
        expected |= {"c0", "c_n", "g_c_n", "grad.c0"}
    if lengths is not None:
        expected |= {"lengths"}
    assert set(t) == expected, (path.name, set(t) ^ expected)
    for k, v in t.items():
        assert v.dtype == (torch.int64 if k == "lengths" else torch.float64), (k, v.dtype)

    def leaf(v):
        return v.clone().requires_grad_(True)

    problems = []

    def cmp(label, got, want):
        if got is None and want is None:
            return
        err = (got - want).abs().max().item() if got.numel() else 0.0
        scale = max(1.0, want.abs().max().item())
        if got.shape != want.shape or err > tol * scale:
            problems.append(f"{label}: shape {tuple(got.shape)} vs {tuple(want.shape)}, err {err:.3g}")

    # 1) the torch module again
    x, h0 = leaf(t["input"]), leaf(t["h0"])
    c0 = leaf(t["c0"]) if is_lstm else None
    out, h_n, c_n = run_module(module, mode, x, h0, c0, lengths, bf)
    grads = loss_and_grads(mode, list(module.named_parameters()), x, h0, c0, out, h_n, c_n, g)
    cmp("torch.output", out, t["output"])
    cmp("torch.h_n", h_n, t["h_n"])
    if is_lstm:
        cmp("torch.c_n", c_n, t["c_n"])
    for k, v in grads.items():
        cmp("torch." + k, v, t[k])

    # 2) independent reference
    params = [(n, leaf(t[n])) for n in sd_names]
    pd = dict(params)
    x, h0 = leaf(t["input"]), leaf(t["h0"])
    c0 = leaf(t["c0"]) if is_lstm else None
    out, h_n, c_n = ref_forward(mode, pd, x, h0, c0, lengths, L, D, bf)
    grads = loss_and_grads(mode, params, x, h0, c0, out, h_n, c_n, g)
    cmp("ref.output", out, t["output"])
    cmp("ref.h_n", h_n, t["h_n"])
    if is_lstm:
        cmp("ref.c_n", c_n, t["c_n"])
    for k, v in grads.items():
        cmp("ref." + k, v, t[k])

    # 3) format sanity
    T = t["input"].shape[1] if bf else t["input"].shape[0]
    B = t["input"].shape[0] if bf else t["input"].shape[1]
    Hout = P if P > 0 else H
    if t["h0"].shape != (L * D, B, Hout):
        problems.append(f"h0 shape {tuple(t['h0'].shape)}")
    if lengths is not None:
        lens = lengths.tolist()
        if not (min(lens) >= 1 and max(lens) == T and min(lens) < T):
            problems.append(f"bad lengths {lens}")
        o = t["output"] if bf else t["output"].transpose(0, 1)
        for b, n in enumerate(lens):
            if o[b, n:].abs().max().item() if n < T else 0.0:
                problems.append(f"output not zero past length for batch {b}")
    if bias:
        for n in sd_names:
            if n.startswith("bias_ih"):
                other = n.replace("bias_ih", "bias_hh")
                if torch.equal(t[n], t[other]) or (t[n] == 0).any():
                    problems.append(f"{n} not distinct/nonzero")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="fixtures/torch/rnn")
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
