#!/usr/bin/env bash
# Runs eddy's benchmark suite against PyTorch and prints the side-by-side table.
# All arguments go to bench/run.py; see `bash bench/run.sh --help`.
#   bash bench/run.sh                      # everything: W1-W7, gemm, fma at 1 and 2 threads
#   bash bench/run.sh --steps 3 --warmup 1 W2 gemm
#   bash bench/run.sh --markdown           # Markdown rows for docs/performance.md
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/run.py "$@"
