#!/usr/bin/env bash
# Python package benchmark (issue 9): whole-row and 1%-column reads, Python versus the Swift reader
# on the same store; a PyTorch DataLoader epoch with a worker per core, each decoding on its share
# of the cores versus on every core; and capture versus the plain forward pass of the same model
# (64x64, 224x224).
# Prints tables of medians with the baseline measured in the same run.
#
#   tools/bench-python.sh                      # everything: 10,000 x 8,192 reads, resnet18 capture
#   tools/bench-python.sh reads --examples 20000 --width 4096 --reps 5
#   tools/bench-python.sh loader --reps 5       # a DataLoader epoch with a worker per core
#   tools/bench-python.sh --quick              # small sizes, a smoke test
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product h2t-store >&2
swift build -c release --product h2t-bench >&2
bin="$(swift build -c release --show-bin-path)"
H2T_STORE_BIN="${H2T_STORE_BIN:-$bin/h2t-store}" H2T_BENCH_BIN="${H2T_BENCH_BIN:-$bin/h2t-bench}" exec python3 tools/python/benchmarks/bench_python.py "$@"
