#!/usr/bin/env python3
"""PyTorch half of eddy's benchmark suite: the same workloads as `crates/bench` (eddy-bench).

Usage
  python3 bench/torch_bench.py [--steps 10] [--warmup 3] [--threads 1] [W1 .. W10PAR gemm fma | all]

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
  W8      minGRU input 256, hidden 256, batch 16, T 4096: a loop over time (h = (1-z)*h + z*h~)
  W8LERP  W8 with torch.lerp for the blend
  W8LOG   W8 in the paper's log-space mode, its parallel form (cumsum + logcumsumexp)
  W8COMPILE  W8 with the cell's step (the blend) through torch.compile
  W9      sLSTM input 128, hidden 256, heads 4, batch 32, T 256: an eager loop over time
  W9CELL     W9 with the cell's step through torch.compile
  W9COMPILE  W9 with the whole model (the sLSTM layer and the head) through torch.compile
  W10     mLSTM input 256, hidden 256, heads 4, batch 8, T 1024: the recurrent form as a loop
  W10PAR  W10 in the parallel form (causal, quadratic in T, stabilised)
W8-W10 are written from the equations of issue 13 (the same as eddy's cells and
tools/torch_cell_fixtures.py), with the same train step as W1-W7. The torch.compile forms
compile in their warm-up steps (the first can take minutes); `warmup_ms` records those steps.
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
    "W8": "train: minGRU input 256, hidden 256, batch 16, T 4096, Linear(256->1) per step, MSE, Adam (loop over time)",
    "W8LERP": "train: W8 with torch.lerp (loop over time)",
    "W8LOG": "train: W8 in the log-space mode, the paper's parallel form (cumsum, logcumsumexp)",
    "W8COMPILE": "train: W8 with the cell's step (the blend) through torch.compile (loop over time)",
    "W9": "train: sLSTM input 128, hidden 256, heads 4, batch 32, T 256, Linear(256->1) per step, MSE, Adam (eager loop)",
    "W9CELL": "train: W9 with the cell's step through torch.compile (loop over time)",
    "W9COMPILE": "train: W9 with the whole model (sLSTM layer and head) through torch.compile",
    "W10": "train: mLSTM input 256, hidden 256, heads 4, batch 8, T 1024, Linear(256->1) per step, MSE, Adam (recurrent loop)",
    "W10PAR": "train: W10 in the parallel form (causal, quadratic in T)",
    "W7b": "train: W4 with W7's user-written LSTM cell (Python loop over time)",
    "W7c": "inference: W6 with W7's user-written LSTM cell (Python loop over time)",
}

# Run only when named, not by `all`: W9COMPILE's first step compiles for minutes (bench/run.py
# leaves it out of its `all` too).
WHEN_NAMED = {"W9COMPILE"}

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
    (64, 256, 768, False, True, "W3 step: h·W_hhᵀ (GRU, 3 gates)"),
    (64, 768, 256, False, False, "W3 step backward: dh = dgates·W_hh"),
    (1024, 6336, 256, True, False, "W2 backward: dW_hh = Σₜ dGₜᵀ·hₜ₋₁, one product over the steps"),
    (1024, 6400, 128, True, False, "W2 backward: dW_ih = dGᵀ·x, all T"),
    (4096, 3136, 1024, True, False, "W4 backward: dW_hh over the steps"),
    (200, 1568, 50, True, False, "W1 backward: dW_hh over the steps (one layer)"),
    (1024, 8192, 128, True, False, "W9 backward: dW_ih = dGᵀ·x, all T"),
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
    """Times `warmup` untimed steps, then `steps` timed ones: (timed ms, warm-up ms)."""
    warm = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        warm.append((time.perf_counter() - t0) * 1e3)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times, warm


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


def make_min_gru(torch, nn, F):
    class MinGru(nn.Module):
        """minGRU (Feng et al. 2024): z = σ(W_z x + b_z), h~ = W_h x + b_h, h = (1 - z) h + z h~.
        mode "loop": the blend as written; "lerp": torch.lerp(h, h~, z); "compile": the blend
        through torch.compile; "log": the paper's log-space mode (h~ through g, h0 = g(0) = 0.5)
        in its parallel form."""

        def __init__(self, input_size, hidden, mode):
            super().__init__()
            self.hidden, self.mode = hidden, mode
            self.linear = nn.Linear(input_size, 2 * hidden)
            self.blend = torch.compile(lambda h, z, c: (1 - z) * h + z * c) if mode == "compile" else None

        def forward(self, x):  # x [T, B, I] -> [T, B, H]
            k, cand = self.linear(x).chunk(2, -1)
            steps, batch, _ = x.shape
            if self.mode == "log":
                log_z = -F.softplus(-k)
                log_coeffs = -F.softplus(k)
                log_cand = torch.where(cand >= 0, torch.log(F.relu(cand) + 0.5), -F.softplus(-cand))
                log_h0 = x.new_full((1, batch, self.hidden), 0.5).log()
                log_values = torch.cat([log_h0, log_z + log_cand], 0)
                a_star = F.pad(torch.cumsum(log_coeffs, 0), (0, 0, 0, 0, 1, 0))
                log_h = a_star + torch.logcumsumexp(log_values - a_star, 0)
                return torch.exp(log_h)[1:]
            # unbind, not z[t]: each indexing's backward writes a full [T, B, H] gradient (O(T²)).
            zs, cands = torch.sigmoid(k).unbind(0), cand.unbind(0)
            h = x.new_zeros(batch, self.hidden)
            outs = []
            for z, c in zip(zs, cands):
                if self.mode == "lerp":
                    h = torch.lerp(h, c, z)
                elif self.blend is not None:
                    h = self.blend(h, z, c)
                else:
                    h = (1 - z) * h + z * c
                outs.append(h)
            return torch.stack(outs, 0)

    return MinGru


def make_slstm(torch, nn, F):
    class Slstm(nn.Module):
        """sLSTM (Beck et al. 2024), stabilised, from the equations of issue 13: pre-activations
        [i~, f~, z~, o~] = W x + R h + b, R block-diagonal over heads; a loop over time, its
        step eager or (`compile_cell`) through torch.compile."""

        def __init__(self, input_size, hidden, heads, compile_cell=False):
            super().__init__()
            k = hidden**-0.5
            self.hidden, self.heads, self.dh = hidden, heads, hidden // heads
            self.weight_ih = nn.Parameter(torch.empty(4 * hidden, input_size).uniform_(-k, k))
            self.weight_hh = nn.Parameter(torch.empty(heads, 4 * self.dh, self.dh).uniform_(-k, k))
            self.bias = nn.Parameter(torch.empty(4 * hidden).uniform_(-k, k))
            self.cell = torch.compile(self.step) if compile_cell else self.step

        def step(self, xw_t, h, c, n, m):
            batch = h.shape[0]
            # Head j's row g·dh + u adds to pre-activation g·H + j·dh + u.
            rec = torch.einsum("bjd,jrd->bjr", h.view(batch, self.heads, self.dh), self.weight_hh)
            rec = rec.view(batch, self.heads, 4, self.dh).transpose(1, 2).reshape(batch, 4 * self.hidden)
            i_, f_, z_, o_ = (xw_t + rec).chunk(4, 1)
            log_f = F.logsigmoid(f_)
            m_new = torch.maximum(log_f + m, i_)
            i = torch.exp(i_ - m_new)
            f = torch.exp(log_f + m - m_new)
            c = f * c + i * torch.tanh(z_)
            n = f * n + i
            h = torch.sigmoid(o_) * c / n
            return h, c, n, m_new

        def forward(self, x):
            steps, batch, _ = x.shape
            xw = F.linear(x, self.weight_ih, self.bias)
            h, c, n, m = (x.new_zeros(batch, self.hidden) for _ in range(4))
            outs = []
            for xw_t in xw.unbind(0):
                h, c, n, m = self.cell(xw_t, h, c, n, m)
                outs.append(h)
            return torch.stack(outs, 0)

    return Slstm


def make_mlstm(torch, nn, F):
    class Mlstm(nn.Module):
        """mLSTM (Beck et al. 2024) from the equations of issue 13, in the recurrent form (a loop
        over time, C [B, heads, d, d]) or the parallel form (causal, T×T per head, stabilised)."""

        def __init__(self, input_size, hidden, heads, parallel):
            super().__init__()
            self.hidden, self.heads, self.d, self.parallel = hidden, heads, hidden // heads, parallel
            self.qkvo = nn.Linear(input_size, 4 * hidden)
            self.gates = nn.Linear(input_size, 2 * heads)

        def forward(self, x):
            steps, batch, _ = x.shape
            hd, d = self.heads, self.d
            q, k, v, o = self.qkvo(x).chunk(4, -1)
            k = k / d**0.5
            o = torch.sigmoid(o)
            i_, f_ = self.gates(x).chunk(2, -1)  # [T, B, heads] each
            log_f = F.logsigmoid(f_)
            split = lambda a: a.view(steps, batch, hd, d)
            if self.parallel:
                q, k, v = (split(a).permute(1, 2, 0, 3) for a in (q, k, v))  # [B, heads, T, d]
                log_f, i_ = log_f.permute(1, 2, 0), i_.permute(1, 2, 0)  # [B, heads, T]
                cum = torch.cumsum(log_f, -1)
                decay = cum[..., :, None] - cum[..., None, :] + i_[..., None, :]  # [B, heads, T, S]
                causal = torch.ones(steps, steps, dtype=torch.bool).tril()
                decay = decay.masked_fill(~causal, float("-inf"))
                m = decay.max(-1, keepdim=True).values
                scores = (q @ k.transpose(-1, -2)) * torch.exp(decay - m)
                den = torch.maximum(scores.sum(-1, keepdim=True).abs(), torch.exp(-m))
                h = (scores / den) @ v  # [B, heads, T, d]
                return o * h.permute(2, 0, 1, 3).reshape(steps, batch, self.hidden)
            q, k, v = split(q), split(k), split(v)
            C = x.new_zeros(batch, hd, d, d)
            n = x.new_zeros(batch, hd, d)
            m = x.new_zeros(batch, hd)
            outs = []
            for q_t, k_t, v_t, o_t, i_t, lf_t in zip(*(a.unbind(0) for a in (q, k, v, o, i_, log_f))):
                m_new = torch.maximum(lf_t + m, i_t)
                i = torch.exp(i_t - m_new)
                f = torch.exp(lf_t + m - m_new)
                C = f[..., None, None] * C + i[..., None, None] * (v_t[..., :, None] * k_t[..., None, :])
                n = f[..., None] * n + i[..., None] * k_t
                num = (C @ q_t[..., None]).squeeze(-1)
                den = torch.maximum((n * q_t).sum(-1).abs(), torch.exp(-m_new))
                outs.append(o_t * (num / den[..., None]).reshape(batch, self.hidden))
                m = m_new
            return torch.stack(outs, 0)

    return Mlstm


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
        "W8": ("min_gru", 256, 256, 1, 16, 4096, 1e-3),
        "W8LERP": ("min_gru_lerp", 256, 256, 1, 16, 4096, 1e-3),
        "W8LOG": ("min_gru_log", 256, 256, 1, 16, 4096, 1e-3),
        "W8COMPILE": ("min_gru_compile", 256, 256, 1, 16, 4096, 1e-3),
        "W9": ("slstm", 128, 256, 1, 32, 256, 1e-3),
        "W9CELL": ("slstm_cell", 128, 256, 1, 32, 256, 1e-3),
        "W9COMPILE": ("slstm_model", 128, 256, 1, 32, 256, 1e-3),
        "W10": ("mlstm", 256, 256, 1, 8, 1024, 1e-3),
        "W10PAR": ("mlstm_parallel", 256, 256, 1, 8, 1024, 1e-3),
        "W7b": ("user_lstm", 512, 1024, 1, 64, 50, 1e-3),
        "W7c": ("user_lstm", 128, 256, 1, 1, 1000, None),
    }
    F = nn.functional
    cell, inp, hid, layers, batch, T, lr = shapes[wid]
    if cell == "lstm":
        rnn = nn.LSTM(inp, hid, num_layers=layers)
    elif cell == "gru":
        rnn = nn.GRU(inp, hid, num_layers=layers)
    elif cell == "rnn":
        rnn = nn.RNN(inp, hid, num_layers=layers, nonlinearity="tanh")
    elif cell.startswith("min_gru"):
        mode = {"min_gru": "loop", "min_gru_lerp": "lerp", "min_gru_log": "log", "min_gru_compile": "compile"}[cell]
        rnn = make_min_gru(torch, nn, F)(inp, hid, mode)
    elif cell.startswith("slstm"):
        rnn = make_slstm(torch, nn, F)(inp, hid, 4, compile_cell=cell == "slstm_cell")
    elif cell.startswith("mlstm"):
        rnn = make_mlstm(torch, nn, F)(inp, hid, 4, cell == "mlstm_parallel")
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

    def model(x):
        out = rnn(x)
        out = out[0] if isinstance(out, tuple) else out
        return head(out)

    if cell == "slstm_model":
        model = torch.compile(model)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), target)
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

        times = [t / reps for t in measure(warmup, steps, sample)[0]]
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
    p.add_argument("targets", nargs="*", help="W1 .. W10PAR, gemm, all (default all)")
    a = p.parse_args(argv)
    canonical = {w.upper(): w for w in WORKLOADS}  # W7b, W7c
    targets = [canonical.get(t.upper(), t.upper()) if t.lower() != "gemm" else "gemm" for t in a.targets]
    if not targets or "ALL" in targets:
        targets = [w for w in WORKLOADS if w not in WHEN_NAMED] + ["gemm"]
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
        times, warm = run_workload(t, args.warmup, args.steps)
        med, lo, hi = summarize(times)
        print(json.dumps({**common, "kind": "workload", "id": t, "desc": WORKLOADS[t], "median_ms": med,
                          "min_ms": lo, "max_ms": hi, "times_ms": times, "warmup_ms": warm, "base_rss_mib": base,
                          "peak_rss_mib": rss_mib("VmHWM:")}), flush=True)
        print(f"torch {t} ({args.threads} threads): median {med:.2f} ms [{lo:.2f}–{hi:.2f}] "
              f"over {args.steps} steps", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
