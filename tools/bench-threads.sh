#!/usr/bin/env bash
# Speed-up from 1 to 2 threads (issue 11, target >= 1.8x) of the three commands that compute, on
# real data (MobileNetV2 at 64x64 over Fashion-MNIST, F_T 512), each timed as the whole command
# with --threads 1 and --threads 2, alternating, medians of --reps runs:
#   ingest  = --limit N training images into a fresh store
#   fit     = 5-fold CV on those N over a 2 fractions x 2 lambdas x 1 ridge grid and both
#             baselines, no test split, no registration
#   predict = the registered head on M stored test images (only its columns are read)
# Also checks that both thread counts give byte-identical outputs. Prints a table with the
# machine (CPU model, AVX-512 flags, cores, load) and the ratios.
#
#   tools/bench-threads.sh [--reps N] [--limit N] [--test-limit M]
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=3; LIMIT=1000; TEST=5000
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS="$2"; shift 2 ;;
        --limit) LIMIT="$2"; shift 2 ;;
        --test-limit) TEST="$2"; shift 2 ;;
        *) echo "usage: tools/bench-threads.sh [--reps N] [--limit N] [--test-limit M]" >&2; exit 2 ;;
    esac
done
swift build -c release --product h2t-store >&2
BIN="$(swift build -c release --show-bin-path)/h2t-store"
CACHE="${H2T_CACHE:-$HOME/.cache/h2t-store}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
now() { python3 -c 'import time; print(time.monotonic())'; }
INGEST=(ingest --backbone mobilenet_v2 --fashion-mnist train --limit "$LIMIT" --dataset bench --split train --target-size 512 --quiet)
FIT=(fit --dataset bench --test-split none --fractions 0.1,0.5 --lambdas 0.1,0.03 --ridges 0.0001 --no-register --json)

# The store fit and predict read: N training and M test images, a registered head.
"$BIN" "${INGEST[@]}" --store "$WORK/base" >/dev/null
"$BIN" ingest --backbone mobilenet_v2 --fashion-mnist test --limit "$TEST" --dataset bench --split test --target-size 512 --quiet --store "$WORK/base" >/dev/null
"$BIN" fit --dataset bench --fractions 0.1 --lambdas 0.1 --ridges 0.0001 --alias bench --quiet --store "$WORK/base" >/dev/null

declare -A times
for rep in $(seq "$REPS"); do
    for threads in 1 2; do
        rm -rf "$WORK/ingest"
        t0=$(now); "$BIN" "${INGEST[@]}" --store "$WORK/ingest" --threads "$threads" >/dev/null; t1=$(now)
        "$BIN" "${FIT[@]}" --store "$WORK/base" --threads "$threads" | grep -v '"seconds"' >"$WORK/fit-$threads.json"; t2=$(now)
        "$BIN" predict bench@bench --dataset bench --split test --store "$WORK/base" --threads "$threads" >"$WORK/predict-$threads.csv"; t3=$(now)
        times[ingest,$threads]+="$(python3 -c "print($t1-$t0)") "
        times[fit,$threads]+="$(python3 -c "print($t2-$t1)") "
        times[predict,$threads]+="$(python3 -c "print($t3-$t2)") "
        echo "rep $rep, $threads thread(s): ingest $(python3 -c "print(round($t1-$t0,2))") s, fit $(python3 -c "print(round($t2-$t1,2))") s, predict $(python3 -c "print(round($t3-$t2,2))") s" >&2
    done
done
same_fit=$(cmp -s "$WORK/fit-1.json" "$WORK/fit-2.json" && echo yes || echo NO)
same_predict=$(cmp -s "$WORK/predict-1.csv" "$WORK/predict-2.csv" && echo yes || echo NO)

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(grep -c avx512 /proc/cpuinfo) cpuinfo lines with avx512, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "OpenBLAS: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, H2T_OPENBLAS_CORETYPE=${H2T_OPENBLAS_CORETYPE:-unset}"
echo "ingest $LIMIT images, fit on $LIMIT (5 folds, 2x2x1 grid + baselines), predict $TEST stored; medians of $REPS"
printf '%-8s %12s %12s %10s\n' command "1 thread (s)" "2 threads (s)" speed-up
for cmd in ingest fit predict; do
    python3 - "$cmd" "${times[$cmd,1]}" "${times[$cmd,2]}" <<'EOF'
import statistics, sys
cmd, one, two = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
a, b = statistics.median(one), statistics.median(two)
print(f"{cmd:<8} {a:12.2f} {b:12.2f} {a / b:9.2f}x")
EOF
done
echo "identical outputs at 1 and 2 threads: fit $same_fit, predict $same_predict"
