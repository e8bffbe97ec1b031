#!/usr/bin/env bash
# Backbone benchmark: the Swift networks (release) against ONNX Runtime in the same run, same
# machine, threads and batch; prints medians and ratios. Also compares OpenBLAS kernel tables.
#
#   tools/bench-backbone.sh [--quick] [--sizes "64 224"] [--batch 32] [--threads 2] [--rounds 3] [--seconds 8]
#
# Needs the pinned weights (tools/fetch-artifacts mobilenet_v2 efficientnet_lite0) and the Python
# packages pinned in tools/onnx_reference.py. The machine may be shared: ORT and Swift runs are
# interleaved for --rounds rounds and each reported figure is the median over rounds of per-run
# medians, so that drifting load hits both sides alike.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes="64 224"; batch=32; threads=2; rounds=3; seconds=8; network=mobilenet_v2
scratch="${SCRATCH_PATH:-.build-bench-backbone}"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) rounds=1; seconds=3 ;;
        --sizes) sizes="$2"; shift ;;
        --batch) batch="$2"; shift ;;
        --threads) threads="$2"; shift ;;
        --rounds) rounds="$2"; shift ;;
        --seconds) seconds="$2"; shift ;;
        --network) network="$2"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

swift build -c release --scratch-path "$scratch" --product h2t-bench >&2
bench="$scratch/release/h2t-bench"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

echo "== OpenBLAS kernel tables (sgemm GFLOP/s; H2T_OPENBLAS_CORETYPE=keep leaves OpenBLAS's own choice)" >&2
env -u OPENBLAS_CORETYPE H2T_OPENBLAS_CORETYPE=keep "$bench" backbone gemm --json | sed 's/^{/{"case":"OpenBLAS own detection",/' >> "$out"
OPENBLAS_CORETYPE=Haswell H2T_OPENBLAS_CORETYPE=keep "$bench" backbone gemm --json | sed 's/^{/{"case":"OPENBLAS_CORETYPE=Haswell",/' >> "$out"
OPENBLAS_CORETYPE=Haswell "$bench" backbone gemm --json | sed 's/^{/{"case":"product choice (shell says Haswell)",/' >> "$out"

for size in $sizes; do
    for round in $(seq "$rounds"); do
        echo "== ${size}x${size} round $round/$rounds" >&2
        python3 tools/onnx_reference.py bench --network "$network" --size "$size" --batch "$batch" \
            --threads "$threads" --seconds "$seconds" --json >> "$out"
        "$bench" backbone --network "$network" --size "$size" --batch "$batch" --threads "$threads" \
            --mode split --seconds "$seconds" --json >> "$out"
        "$bench" backbone --network "$network" --size "$size" --batch "$batch" --threads "$threads" \
            --mode blas --stage compute --seconds "$seconds" --json >> "$out"
    done
done

python3 - "$out" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
gemm = [r for r in rows if r.get("engine") == "openblas"]
if gemm:
    print("OpenBLAS sgemm (best of ~1 s), GFLOP/s")
    print(f"{'case':<40} {'core':<11} {'thr':>3} {'shape':>15} {'GFLOP/s':>8}")
    for r in gemm:
        print(f"{r['case']:<40} {r['core']:<11} {r['threads']:>3} {r['shape']:>15} {r['gflops']:>8.1f}")
    print()
runs = [r for r in rows if r.get("engine") != "openblas"]
sizes = sorted({r["size"] for r in runs})
print(f"{'network':<14} {'size':>5} {'batch':>5} {'thr':>3} {'engine / stage':<44} {'img/s':>8} {'vs ORT':>7}")
for size in sizes:
    here = [r for r in runs if r["size"] == size]
    ort = [r["images_per_second"] for r in here if r["engine"].startswith("onnxruntime")]
    ort_median = statistics.median(ort) if ort else float("nan")
    groups = {}
    for r in here:
        if r["engine"].startswith("onnxruntime"):
            key = f"{r['engine']} all {r['taps']} outputs"
        else:
            extra = f" F_T {r['targets']}" if r["stage"] == "all_taps_pooled" else ""
            key = f"swift {r['mode']} {r['stage']}{extra}"
        groups.setdefault(key, []).append(r)
    for key, rs in groups.items():
        ips = statistics.median(r["images_per_second"] for r in rs)
        r0 = rs[0]
        print(f"{r0['network']:<14} {size:>5} {r0['batch']:>5} {r0['threads']:>3} {key:<44} {ips:>8.1f} {ips / ort_median:>6.2f}x")
EOF
