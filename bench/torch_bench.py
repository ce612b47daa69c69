#!/usr/bin/env python3
"""PyTorch half of eddy's benchmark suite: the same workloads as `crates/bench` (eddy-bench).

Usage
  python3 bench/torch_bench.py [--steps 10] [--warmup 3] [--threads 1] [W1 .. W7c gemm fma | all]

Prints one JSON object per line on stdout (the same fields as eddy-bench) and a human summary
on stderr. With more than one target, each runs in its own child process so that its peak RSS
(ru_maxrss) is its own. `base_rss_mib` is the RSS after `import torch`, before the model is built.

Workloads (float32; a train step = forward over the whole sequence, a per-step Linear(H->1)
head, MSE, backward, one Adam update):
  W1  2-layer LSTM(50), input 1, batch 32, T 50, Adam(0.01)
  W2  LSTM input 128, hidden 256, batch 64, T 100
  W3  W2 with a GRU
  W4  LSTM input 512, hidden 1024, batch 64, T 50
  W5  Elman RNN (tanh), input 64, hidden 128, batch 32, T 200
  W6  inference: LSTM input 128, hidden 256, batch 1, T 1000, forward only (inference_mode)
  W7  W2 with an LSTM cell written from primitive ops and a Python loop over time
  W7b W4 with that cell; W7c W6 (batch-1 inference) with that cell
Keep these, and GEMM_CASES, in step with crates/bench/src/workloads.rs and gemm.rs.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

WORKLOADS = {
    "W1": "train: 2-layer LSTM(50), input 1, batch 32, T 50, Linear(50->1) per step, MSE, Adam(0.01)",
    "W2": "train: LSTM input 128, hidden 256, batch 64, T 100, Linear(256->1) per step, MSE, Adam",
    "W3": "train: GRU input 128, hidden 256, batch 64, T 100, Linear(256->1) per step, MSE, Adam",
    "W4": "train: LSTM input 512, hidden 1024, batch 64, T 50, Linear(1024->1) per step, MSE, Adam",
    "W5": "train: Elman RNN (tanh) input 64, hidden 128, batch 32, T 200, Linear(128->1) per step, MSE, Adam",
    "W6": "inference: LSTM input 128, hidden 256, batch 1, T 1000, forward only, no tape",
    "W7": "train: W2 with a user-written LSTM cell from primitive ops (Python loop over time)",
    "W7b": "train: W4 with W7's user-written LSTM cell (Python loop over time)",
    "W7c": "inference: W6 with W7's user-written LSTM cell (Python loop over time)",
}

# (m, k, n, ta, tb, note): op(A) is [m, k], op(B) is [k, n]; ta/tb: stored transposed.
GEMM_CASES = [
    (32, 50, 200, False, True, "W1 step: h·W_hhᵀ (H 50, 4 gates)"),
    (1600, 50, 200, False, True, "W1 layer 2 input projection x·W_ihᵀ, all T"),
    (64, 256, 1024, False, True, "W2/W7 step: h·W_hhᵀ"),
    (64, 256, 1024, False, False, "W2 step, W_hh stored [H, 4H] (layout check)"),
    (64, 1024, 256, False, False, "W2 step backward: dh = dgates·W_hh"),
    (1024, 64, 256, True, False, "W2 step backward: dW_hh += dgatesᵀ·h"),
    (6400, 128, 1024, False, True, "W2 input projection x·W_ihᵀ, all T"),
    (1, 256, 1024, False, True, "W6 step: h·W_hhᵀ, batch 1"),
    (64, 512, 4096, False, True, "W4 per-step input projection (if not hoisted)"),
    (64, 1024, 4096, False, True, "W4 step: h·W_hhᵀ"),
    (3200, 512, 4096, False, True, "W4 input projection x·W_ihᵀ, all T"),
    (32, 128, 128, False, True, "W5 step: h·W_hhᵀ"),
]


def gemm_id(m, k, n, ta, tb):
    return f"{m}x{k}*{k}x{n} {'T' if ta else 'N'}{'T' if tb else 'N'}"


def rss_mib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    if field == "VmHWM:":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return None


def summarize(times):
    s = sorted(times)
    n = len(s)
    med = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    return med, s[0], s[-1]


def measure(warmup, steps, fn):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


# ---------------------------------------------------------------- workloads


def make_user_lstm(torch, nn):
    class UserLstm(nn.Module):
        """An LSTM written as a user would: primitive ops and a Python loop over time."""

        def __init__(self, input_size, hidden):
            super().__init__()
            k = hidden**-0.5
            self.hidden = hidden
            self.weight_ih = nn.Parameter(torch.empty(4 * hidden, input_size).uniform_(-k, k))
            self.weight_hh = nn.Parameter(torch.empty(4 * hidden, hidden).uniform_(-k, k))
            self.bias = nn.Parameter(torch.empty(4 * hidden).uniform_(-k, k))

        def forward(self, x):  # x [T, B, I] -> [T, B, H]
            steps, batch, _ = x.shape
            xw = torch.nn.functional.linear(x, self.weight_ih, self.bias)  # all T in one GEMM
            h = x.new_zeros(batch, self.hidden)
            c = x.new_zeros(batch, self.hidden)
            outs = []
            for t in range(steps):
                gates = xw[t] + h.matmul(self.weight_hh.t())
                i, f, g, o = gates.chunk(4, 1)
                i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
                c = f * c + i * g
                h = o * torch.tanh(c)
                outs.append(h)
            return torch.stack(outs, 0), (h, c)

    return UserLstm


def run_workload(wid, warmup, steps):
    import torch
    from torch import nn

    torch.manual_seed(0)
    shapes = {
        # id: (cell, input, hidden, layers, batch, T, lr)
        "W1": ("lstm", 1, 50, 2, 32, 50, 0.01),
        "W2": ("lstm", 128, 256, 1, 64, 100, 1e-3),
        "W3": ("gru", 128, 256, 1, 64, 100, 1e-3),
        "W4": ("lstm", 512, 1024, 1, 64, 50, 1e-3),
        "W5": ("rnn", 64, 128, 1, 32, 200, 1e-3),
        "W6": ("lstm", 128, 256, 1, 1, 1000, None),
        "W7": ("user_lstm", 128, 256, 1, 64, 100, 1e-3),
        "W7b": ("user_lstm", 512, 1024, 1, 64, 50, 1e-3),
        "W7c": ("user_lstm", 128, 256, 1, 1, 1000, None),
    }
    cell, inp, hid, layers, batch, T, lr = shapes[wid]
    if cell == "lstm":
        rnn = nn.LSTM(inp, hid, num_layers=layers)
    elif cell == "gru":
        rnn = nn.GRU(inp, hid, num_layers=layers)
    elif cell == "rnn":
        rnn = nn.RNN(inp, hid, num_layers=layers, nonlinearity="tanh")
    else:
        rnn = make_user_lstm(torch, nn)(inp, hid)
    x = torch.rand(T, batch, inp) * 2 - 1

    if wid in ("W6", "W7c"):
        rnn.eval()

        def step():
            with torch.inference_mode():
                out, _ = rnn(x)
            return out

        return measure(warmup, steps, step)

    head = nn.Linear(hid, 1)
    target = torch.rand(T, batch, 1) * 2 - 1
    opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=lr)
    loss_fn = nn.MSELoss()

    def step():
        opt.zero_grad(set_to_none=True)
        out, _ = rnn(x)
        loss = loss_fn(head(out), target)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise RuntimeError("the loss is not finite")

    return measure(warmup, steps, step)


def run_gemm(warmup, steps):
    import torch

    torch.manual_seed(0)
    out = []
    for m, k, n, ta, tb, note in GEMM_CASES:
        a = torch.rand(k, m) if ta else torch.rand(m, k)
        b = torch.rand(n, k) if tb else torch.rand(k, n)
        a_op = a.t() if ta else a
        b_op = b.t() if tb else b

        def product():
            return torch.mm(a_op, b_op)

        t0 = time.perf_counter()
        product()
        once = max(time.perf_counter() - t0, 1e-7)
        reps = max(1, min(100_000, int(-(-1e-3 // once))))

        def sample():
            for _ in range(reps):
                product()

        times = [t / reps for t in measure(warmup, steps, sample)]
        med, lo, hi = summarize(times)
        out.append((gemm_id(m, k, n, ta, tb), note, med, lo, hi, 2.0 * m * k * n / (med * 1e-3) / 1e9))
    return out


# ---------------------------------------------------------------- main


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--in-process", action="store_true", help="run every target in this process")
    p.add_argument("targets", nargs="*", help="W1 .. W7, gemm, all (default all)")
    a = p.parse_args(argv)
    canonical = {w.upper(): w for w in WORKLOADS}  # W7b, W7c
    targets = [canonical.get(t.upper(), t.upper()) if t.lower() != "gemm" else "gemm" for t in a.targets]
    if not targets or "ALL" in targets:
        targets = list(WORKLOADS) + ["gemm"]
    targets = [t for t in targets if t != "FMA"]  # the FMA peak is measured by eddy-bench only
    for t in targets:
        if t not in WORKLOADS and t != "gemm":
            p.error(f"unknown workload {t}")
    a.targets = targets
    a.steps = max(1, a.steps)
    return a


def main(argv):
    args = parse(argv)
    if len(args.targets) > 1 and not args.in_process:
        ok = True
        for t in args.targets:
            cmd = [sys.executable, os.path.abspath(__file__), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--threads", str(args.threads), "--in-process", t]
            ok &= subprocess.run(cmd).returncode == 0
        return 0 if ok else 1

    import torch

    torch.set_num_threads(args.threads)
    base = rss_mib("VmRSS:")
    common = {"impl": "torch", "threads": args.threads, "warmup": args.warmup, "steps": args.steps,
              "torch_version": torch.__version__}
    for t in args.targets:
        if t == "gemm":
            for gid, note, med, lo, hi, gflops in run_gemm(args.warmup, args.steps):
                print(json.dumps({**common, "kind": "gemm", "id": gid, "note": note, "median_ms": med,
                                  "min_ms": lo, "max_ms": hi, "gflops": gflops}), flush=True)
                print(f"torch gemm {gid:<22} {med:>9.4f} ms  {gflops:>7.1f} GFLOP/s  ({note})", file=sys.stderr)
            continue
        times = run_workload(t, args.warmup, args.steps)
        med, lo, hi = summarize(times)
        print(json.dumps({**common, "kind": "workload", "id": t, "desc": WORKLOADS[t], "median_ms": med,
                          "min_ms": lo, "max_ms": hi, "times_ms": times, "base_rss_mib": base,
                          "peak_rss_mib": rss_mib("VmHWM:")}), flush=True)
        print(f"torch {t} ({args.threads} threads): median {med:.2f} ms [{lo:.2f}–{hi:.2f}] "
              f"over {args.steps} steps", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
