#!/usr/bin/env bash
# Training benchmark: one Head2Toe fit and the default CV sweep on synthetic N=1000, D=50,000,
# K=10 cached features, against the numpy reference (tools/h2t_reference.py) in the same run.
# Usage: tools/bench-train.sh [--quick] [--blas-study] [--no-reference]
#        tools/bench-train.sh --kernels   (only the kernel-form head's G·A and exp loops against
#                                          OpenBLAS and libm, at n = 800, K = 10)
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="${H2T_BENCH_SCRATCH:-.build-bench}"
swift build -c release --scratch-path "$scratch" --product h2t-bench >&2
exec "$scratch/release/h2t-bench" train "$@"
