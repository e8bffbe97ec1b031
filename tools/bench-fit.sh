#!/usr/bin/env bash
# Training on cached features vs recomputing them (issue 4, "Performance"): the paper's "hundred
# fold cheaper" claim is about not running the backbone again. For each repetition, on real data
# (MobileNetV2 at 64×64 or --input-size, the first 1,000 Fashion-MNIST training images, F_T 512):
#   recompute = backbone pass (ingest into a fresh store) + one fit
#   cached    = the same fit on the stored features
# One fit = `h2t-store fit` with a single grid point (fraction 0.1, λ = 0.5 λ_max, ridge 1e-4), 5 folds and
# the two baselines, no test split. Prints medians and the ratio.
#
#   tools/bench-fit.sh [--reps N] [--limit N] [--input-size 64|224]
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=3; LIMIT=1000; SIZE=64
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS="$2"; shift 2 ;;
        --limit) LIMIT="$2"; shift 2 ;;
        --input-size) SIZE="$2"; shift 2 ;;
        *) echo "usage: tools/bench-fit.sh [--reps N] [--limit N] [--input-size 64|224]" >&2; exit 2 ;;
    esac
done
swift build -c release --product h2t-store >&2
BIN="$(swift build -c release --show-bin-path)/h2t-store"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
now() { python3 -c 'import time; print(time.monotonic())'; }
FIT=(fit --dataset bench --test-split none --fractions 0.1 --lambdas 0.5 --ridges 0.0001 --no-register --json)
rows=()
for rep in $(seq "$REPS"); do
    rm -rf "$WORK/store"
    t0=$(now)
    "$BIN" ingest --store "$WORK/store" --backbone mobilenet_v2 --fashion-mnist train --limit "$LIMIT" \
        --input-size "$SIZE" --dataset bench --split train --target-size 512 --json >/dev/null
    t1=$(now)
    "$BIN" "${FIT[@]}" --store "$WORK/store" >/dev/null 2>&1
    t2=$(now)
    "$BIN" "${FIT[@]}" --store "$WORK/store" >/dev/null 2>&1
    t3=$(now)
    rows+=("$t0 $t1 $t2 $t3")
    echo "rep $rep: backbone+store $(python3 -c "print(round($t1-$t0,2))") s, fit $(python3 -c "print(round($t3-$t2,2))") s" >&2
done
python3 - "${rows[@]}" <<'PY'
import statistics, sys
reps = [list(map(float, r.split())) for r in sys.argv[1:]]
backbone = statistics.median(t1 - t0 for t0, t1, t2, t3 in reps)
fit_first = statistics.median(t2 - t1 for t0, t1, t2, t3 in reps)
fit = statistics.median(t3 - t2 for t0, t1, t2, t3 in reps)
recompute = backbone + fit
print(f"{'path':<48} {'median s':>9} {'vs cached':>10}")
print(f"{'cached: one fit on stored features':<48} {fit:>9.2f} {1:>9.1f}x")
print(f"{'  (first fit after ingest, cold page cache)':<48} {fit_first:>9.2f} {fit_first / fit:>9.1f}x")
print(f"{'backbone pass + store (ingest)':<48} {backbone:>9.2f} {backbone / fit:>9.1f}x")
print(f"{'recompute: backbone pass + one fit':<48} {recompute:>9.2f} {recompute / fit:>9.1f}x")
PY
