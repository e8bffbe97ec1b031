#!/usr/bin/env bash
# Speed-up from 1 to 2 threads (issue 11, target >= 1.8x) of the three commands that compute, on
# real data (MobileNetV2 at 64x64 over Fashion-MNIST, F_T 512), each timed as the whole command,
# alternating, medians of --reps runs:
#   ingest  = --limit N training images into a fresh store
#   fit     = 5-fold CV on those N over a 2 fractions x 2 lambdas x 1 ridge grid and both
#             baselines, no test split, no registration
#   predict = the registered head on M stored test images (only its columns are read)
# Two ways of giving a command one or two cores, each its own table:
#   threads = --threads 1 / --threads 2 on an unpinned process (a 1-thread ingest still commits
#             on a background thread, which then has the other core to itself);
#   cores   = the process pinned to 1 / 2 cores with taskset and no --threads (the default: every
#             core the process may use), as on a machine with that many cores.
# Also checks that every run of a command gives byte-identical outputs. Prints a table with the
# machine (CPU model, AVX-512 flags, cores, load) and the ratios. Times come from bash's
# EPOCHREALTIME (no process is started to read the clock).
#
#   tools/bench-threads.sh [--reps N] [--limit N] [--test-limit M] [--modes "threads cores"]
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=3; LIMIT=1000; TEST=5000; MODES="threads cores"
usage='usage: tools/bench-threads.sh [--reps N] [--limit N] [--test-limit M] [--modes "threads cores"]'
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
    case "$1" in
        --reps) REPS="$2"; shift 2 ;;
        --limit) LIMIT="$2"; shift 2 ;;
        --test-limit) TEST="$2"; shift 2 ;;
        --modes) MODES="$2"; shift 2 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
for value in "$REPS" "$LIMIT" "$TEST"; do
    case "$value" in ''|*[!0-9]*|0) echo "bench-threads: --reps, --limit and --test-limit take positive integers, got '$value'" >&2; exit 2 ;; esac
done
for mode in $MODES; do
    case "$mode" in threads|cores) ;; *) echo "bench-threads: --modes takes threads and/or cores, got '$mode'" >&2; exit 2 ;; esac
done
if [[ " $MODES " == *" cores "* ]] && [ "$(nproc)" -lt 2 ]; then
    echo "bench-threads: the cores mode needs 2 cores this process may use (nproc: $(nproc))" >&2; exit 2
fi
swift build -c release --product h2t-store >&2
BIN="$(swift build -c release --show-bin-path)/h2t-store"
CACHE="${H2T_CACHE:-$HOME/.cache/h2t-store}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
now() { echo "$EPOCHREALTIME"; }
INGEST=(ingest --backbone mobilenet_v2 --fashion-mnist train --limit "$LIMIT" --dataset bench --split train --target-size 512 --quiet)
FIT=(fit --dataset bench --test-split none --fractions 0.1,0.5 --lambdas 0.1,0.03 --ridges 0.0001 --no-register --json)

# The store fit and predict read: N training and M test images, a registered head.
"$BIN" "${INGEST[@]}" --store "$WORK/base" >/dev/null
"$BIN" ingest --backbone mobilenet_v2 --fashion-mnist test --limit "$TEST" --dataset bench --split test --target-size 512 --quiet --store "$WORK/base" >/dev/null
"$BIN" fit --dataset bench --fractions 0.1 --lambdas 0.1 --ridges 0.0001 --alias bench --quiet --store "$WORK/base" >/dev/null

declare -A times
# One run of each command with `threads` threads (mode threads) or on `threads` cores (mode cores).
run_all() {
    local mode="$1" threads="$2" key="$1-$2" pin=() flags=()
    if [ "$mode" = cores ]; then pin=(taskset -c "0-$((threads - 1))"); else flags=(--threads "$threads"); fi
    rm -rf "$WORK/ingest"
    local t0 t1 t2 t3
    t0=$(now); "${pin[@]}" "$BIN" "${INGEST[@]}" --store "$WORK/ingest" "${flags[@]}" >/dev/null; t1=$(now)
    "${pin[@]}" "$BIN" "${FIT[@]}" --store "$WORK/base" "${flags[@]}" >"$WORK/fit-$key.json"; t2=$(now)
    "${pin[@]}" "$BIN" predict bench@bench --dataset bench --split test --store "$WORK/base" "${flags[@]}" >"$WORK/predict-$key.csv"; t3=$(now)
    grep -v '"seconds"' "$WORK/fit-$key.json" >"$WORK/fit-$key.cmp"
    times[ingest,$key]+="$(python3 -c "print($t1-$t0)") "
    times[fit,$key]+="$(python3 -c "print($t2-$t1)") "
    times[predict,$key]+="$(python3 -c "print($t3-$t2)") "
    echo "rep $rep, $mode $threads: ingest $(python3 -c "print(round($t1-$t0,2))") s, fit $(python3 -c "print(round($t2-$t1,2))") s, predict $(python3 -c "print(round($t3-$t2,2))") s" >&2
}
for rep in $(seq "$REPS"); do
    for mode in $MODES; do
        for threads in 1 2; do run_all "$mode" "$threads"; done
    done
done
# Every run's outputs against the first mode's 1-thread run.
first="${MODES%% *}"
same=yes
for mode in $MODES; do
    for threads in 1 2; do
        cmp -s "$WORK/fit-$first-1.cmp" "$WORK/fit-$mode-$threads.cmp" || same=NO
        cmp -s "$WORK/predict-$first-1.csv" "$WORK/predict-$mode-$threads.csv" || same=NO
    done
done

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(grep -c avx512 /proc/cpuinfo) cpuinfo lines with avx512, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "OpenBLAS: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, H2T_OPENBLAS_CORETYPE=${H2T_OPENBLAS_CORETYPE:-unset}"
echo "ingest $LIMIT images, fit on $LIMIT (5 folds, 2x2x1 grid + baselines), predict $TEST stored; medians of $REPS"
for mode in $MODES; do
    echo
    if [ "$mode" = cores ]; then echo "cores: taskset to 1 / 2 cores, default threads"; else echo "threads: --threads 1 / 2, unpinned"; fi
    printf '%-8s %12s %12s %10s\n' command "1 (s)" "2 (s)" speed-up
    for cmd in ingest fit predict; do
        python3 - "$cmd" "${times[$cmd,$mode-1]}" "${times[$cmd,$mode-2]}" <<'EOF'
import statistics, sys
cmd, one, two = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
a, b = statistics.median(one), statistics.median(two)
print(f"{cmd:<8} {a:12.2f} {b:12.2f} {a / b:9.2f}x")
EOF
    done
done
echo
echo "identical outputs in every run (fit JSON without its timing, predict CSV): $same"
