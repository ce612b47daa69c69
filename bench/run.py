#!/usr/bin/env python3
"""Run eddy's benchmark suite against PyTorch in one go and print a side-by-side table.

Usage
  python3 bench/run.py [--steps 10] [--warmup 3] [--threads 1,2] [--markdown] [--json FILE]
                       [--levels default,avx2,portable] [--native]
                       [--no-build] [--no-torch] [W1 .. W10PAR gemm fma | all]

`all` runs every target but W9COMPILE (PyTorch's whole W9 model through torch.compile, whose
first step compiles for minutes per thread count); name it to run it.

--levels runs eddy once per kernel level (EDDY_KERNELS=avx512|avx2|portable; `default` leaves
it unset: the best the CPU has, what a user's program gets). --native adds a binary built with
RUSTFLAGS="-C target-cpu=native" (in target/native), labelled "native": for comparison only,
since eddy's users build without it.

For each thread count and each target it runs `eddy-bench --in-process TARGET` and
`bench/torch_bench.py --in-process TARGET`, one process each (so each peak RSS is the
workload's own), one right after the other, then prints:
  - the machine (CPU model, AVX-512 flags, cores), the eddy commit, rustc and torch versions;
  - workloads: median [min-max] ms of each, the ratio torch/eddy (> 1: eddy is faster), peak RSS;
  - GEMM shapes: ms and GFLOP/s of each, ratio torch/eddy;
  - the peak f32 FMA rate measured by eddy-bench, for reference.
--markdown prints the tables as Markdown, ready to paste into docs/performance.md.

The eddy binary is built with `cargo build --release -p eddy-bench` (honouring CARGO_TARGET_DIR)
unless --no-build; --eddy-bin PATH uses another binary.
"""

import argparse
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W7b", "W7c", "W8", "W8LERP", "W8COMPILE", "W8LOG", "W9", "W9CELL", "W9COMPILE", "W10", "W10PAR", "gemm", "fma"]
# PyTorch forms with no eddy counterpart of their own (compare with the row above them).
TORCH_ONLY = {"W8LERP", "W8COMPILE", "W9CELL", "W9COMPILE"}
# Run only when named, not by `all`: W9COMPILE's first step compiles for minutes per thread count.
NOT_IN_ALL = {"W9COMPILE"}


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def machine_info():
    info = {"cpu": platform.processor() or "?", "avx512": "", "cores": str(os.cpu_count())}
    lscpu = sh(["lscpu"])
    for line in lscpu.splitlines():
        key, _, val = line.partition(":")
        val = val.strip()
        if key.strip() == "Model name":
            info["cpu"] = val
        elif key.strip() == "Flags":
            flags = val.split()
            info["avx512"] = " ".join(f for f in flags if f.startswith("avx512")) or "none"
            info["fma"] = "yes" if "fma" in flags else "no"
    info["commit"] = sh(["git", "rev-parse", "--short", "HEAD"])
    info["rustc"] = sh(["rustc", "--version"])
    return info


def run_json(cmd, env=None):
    """Runs cmd; returns its stdout's JSON lines. Its stderr passes through."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    lines = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"(unparsed) {line}", file=sys.stderr)
    if proc.returncode != 0:
        print(f"!! {' '.join(cmd)} exited with {proc.returncode}", file=sys.stderr)
    return lines


def build_eddy(native=False):
    cmd = ["cargo", "build", "--release", "-p", "eddy-bench"]
    env = dict(os.environ)
    target = env.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    if native:
        target = os.path.join(ROOT, "target", "native")
        env["CARGO_TARGET_DIR"] = target
        env["RUSTFLAGS"] = "-C target-cpu=native"
    else:
        env.pop("RUSTFLAGS", None)
    print("$ " + ("RUSTFLAGS='-C target-cpu=native' " if native else "") + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env=env)
    return os.path.join(target, "release", "eddy-bench")


def num(x):
    """Three significant figures without scientific notation: 1234, 123, 12.3, 1.23, 0.123."""
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_ms(r):
    if r is None:
        return "—"
    return f"{num(r['median_ms'])} [{num(r['min_ms'])}–{num(r['max_ms'])}]"


def fmt_ratio(e, t):
    if e is None or t is None or e["median_ms"] <= 0:
        return "—"
    return f"{t['median_ms'] / e['median_ms']:.2f}"


def fmt_rss(r, delta=False):
    if r is None or r.get("peak_rss_mib") is None:
        return "—"
    s = f"{r['peak_rss_mib']:.0f}"
    if delta and r.get("base_rss_mib") is not None:
        s += f" (+{r['peak_rss_mib'] - r['base_rss_mib']:.0f})"
    return s


def table(header, rows, markdown):
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--json", metavar="FILE", help="also save every raw JSON line to FILE")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    p.add_argument("--eddy-bin", help="the eddy-bench binary to run")
    p.add_argument("--no-torch", action="store_true", help="run eddy only")
    p.add_argument("--levels", default="default",
                   help="comma-separated kernel levels to run eddy at: default, avx512, avx2, portable")
    p.add_argument("--native", action="store_true",
                   help="also run a binary built with -C target-cpu=native (labelled native)")
    p.add_argument("targets", nargs="*")
    a = p.parse_args(argv)

    targets = []
    for t in a.targets or ["all"]:
        if t.lower() == "all":
            targets += [t for t in TARGETS if t not in NOT_IN_ALL]
        elif t.upper() in [k.upper() for k in TARGETS if k.startswith("W")]:
            targets.append(next(k for k in TARGETS if k.upper() == t.upper()))
        elif t.lower() in TARGETS:
            targets.append(t.lower())
        else:
            p.error(f"unknown target {t}; expected one of {' '.join(TARGETS)} all")
    threads = [int(x) for x in a.threads.split(",") if x.strip()]

    eddy_bin = a.eddy_bin or (None if a.no_build else build_eddy())
    if eddy_bin is None:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        eddy_bin = os.path.join(target, "release", "eddy-bench")

    variants = [v.strip() for v in a.levels.split(",") if v.strip()]
    for v in variants:
        if v not in ("default", "avx512", "avx2", "portable"):
            p.error(f"unknown level {v}; expected default, avx512, avx2 or portable")
    bins = {v: eddy_bin for v in variants}
    if a.native:
        variants.append("native")
        bins["native"] = build_eddy(native=True)

    common = ["--steps", str(a.steps), "--warmup", str(a.warmup)]
    results = []
    torch_version = None
    for n in threads:
        for t in targets:
            for v in variants:
                if (t == "fma" and v != variants[0]) or t in TORCH_ONLY:
                    continue
                env = dict(os.environ)
                env.pop("EDDY_KERNELS", None)
                if v not in ("default", "native"):
                    env["EDDY_KERNELS"] = v
                got = run_json([bins[v], *common, "--threads", str(n), "--in-process", t], env=env)
                for r in got:
                    r["variant"] = v
                results += got
            if not a.no_torch and t != "fma":
                got = run_json([sys.executable, os.path.join(ROOT, "bench", "torch_bench.py"), *common,
                                "--threads", str(n), "--in-process", t])
                torch_version = torch_version or next((r.get("torch_version") for r in got), None)
                results += got

    if a.json:
        with open(a.json, "w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")

    by = {(r["impl"], r["kind"], r["id"], r["threads"], r.get("variant", "torch")): r for r in results}
    peak = {}
    for r in results:
        if r["kind"] == "fma":
            peak[r["threads"]] = max(peak.get(r["threads"], 0.0), r["gflops"])
    info = machine_info()
    print()
    print(f"machine: {info['cpu']}, {info['cores']} cores; AVX-512: {info['avx512']}; FMA: {info.get('fma', '?')}")
    print(f"eddy {info['commit']} ({info['rustc']}); torch {torch_version or '—'}; "
          f"{a.warmup} warm-up + {a.steps} timed steps; float32")
    chosen = {v: next((r.get("level") for r in results if r.get("variant") == v and r.get("level")), "?")
              for v in variants}
    print("eddy variants: " + ", ".join(f"{v} (kernel level {chosen[v]})" for v in variants))
    cache = next((r for r in results if "l2_kib" in r), None)
    if cache:
        print(f"caches as eddy read them (its block sizes follow): L1d {cache['l1d_kib']} KiB, "
              f"L2 {cache['l2_kib']} KiB per core")
    print()

    rows = []
    for t in [t for t in targets if t.startswith("W")]:
        for n in threads:
            q = by.get(("torch", "workload", t, n, "torch"))
            es = [by.get(("eddy", "workload", t, n, v)) for v in variants]
            if q is None and all(e is None for e in es):
                continue
            row = [t, str(n), fmt_ms(q)]
            for e in es:
                pct = "—"
                if e is not None and e.get("gflops") and peak.get(n):
                    pct = f"{100 * e['gflops'] / peak[n]:.0f}%"
                row += [fmt_ms(e), fmt_ratio(e, q), pct]
            first = next((e for e in es if e is not None), None)
            row += [f"{first['flops'] / 1e9:.2f}" if first and first.get("flops") else "—", fmt_rss(first),
                    fmt_rss(q, delta=True)]
            rows.append(row)
    if rows:
        print("Workloads (ms per step; torch/eddy > 1: eddy faster; % of the FMA peak at that thread "
              "count, from the fma rows, counting the layers' GFLOP per step; RSS MiB of the first eddy "
              "variant, torch's growth over its import in parentheses)")
        header = ["workload", "threads", "torch median [min–max] ms"]
        for v in variants:
            header += [f"eddy {v} ms", f"torch/eddy {v}", f"% peak {v}"]
        header += ["GFLOP/step", "eddy peak RSS", "torch peak RSS"]
        print(table(header, rows, a.markdown))
        print()

    if "gemm" in targets:
        ids = []
        for r in results:
            if r["kind"] == "gemm" and r["id"] not in ids:
                ids.append(r["id"])
        rows = []
        for gid in ids:
            for n in threads:
                # "<id> packed" is eddy's packed-weight kernel at shape <id>: against torch's <id>.
                torch_id = gid.removesuffix(" packed")
                e = by.get(("eddy", "gemm", gid, n, variants[0]))
                q = by.get(("torch", "gemm", torch_id, n, "torch"))
                note = (e or q or {}).get("note", "")
                rows.append([gid, str(n), f"{e['median_ms']:.4f}" if e else "—",
                             f"{e['gflops']:.1f}" if e else "—", f"{q['median_ms']:.4f}" if q else "—",
                             f"{q['gflops']:.1f}" if q else "—", fmt_ratio(e, q), note])
        print("GEMM (ms per product, median; op(A)[m,k]·op(B)[k,n]; N/T: operand stored as is / transposed)")
        print(table(["shape", "threads", "eddy ms", "eddy GFLOP/s", "torch ms", "torch GFLOP/s",
                     "torch/eddy", "used for"], rows, a.markdown))
        print()

    fma = [r for r in results if r["kind"] == "fma"]
    if fma:
        rows = [[r["id"], str(r["threads"]), f"{r['gflops']:.1f}"] for r in fma]
        print("Peak f32 FMA throughput (eddy-bench's FMA loop, 12 independent accumulators)")
        print(table(["kernel", "threads", "GFLOP/s"], rows, a.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
