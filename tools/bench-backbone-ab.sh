#!/usr/bin/env bash
# A/B of two h2t-bench builds on the Swift backbones: the same settings, alternating which binary
# runs first in each round, so that drifting load on a shared machine hits both alike. Prints the
# median images/s of each and the median of the per-round ratios B/A.
#
#   tools/bench-backbone-ab.sh A/h2t-bench B/h2t-bench [--rounds 5] [--seconds 3] [--batch 32] [--threads 2]
#
# Build each side with `swift build -c release --product h2t-bench` (e.g. in a `git archive` of
# the base commit for A). Needs the pinned weights (tools/fetch-artifacts mobilenet_v2 efficientnet_lite0).
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,9p "$0" >&2; exit 2; }
a="$1"; b="$2"; shift 2
rounds=5; seconds=3; batch=32; threads=2
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift ;;
        --seconds) seconds="$2"; shift ;;
        --batch) batch="$2"; shift ;;
        --threads) threads="$2"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for round in $(seq "$rounds"); do
    for network in mobilenet_v2 efficientnet_lite0; do
        for size in 64 224; do
            if [ $((round % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
            for side in $order; do
                if [ "$side" = A ]; then bin="$a"; else bin="$b"; fi
                echo "== round $round/$rounds $network ${size}x${size} $side" >&2
                "$bin" backbone --network "$network" --size "$size" --batch "$batch" --threads "$threads" \
                    --mode split --seconds "$seconds" --json | sed "s/^{/{\"side\":\"$side\",\"round\":$round,/" >> "$out"
            done
        done
    done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
keys = sorted({(r["network"], r["size"], r["stage"]) for r in rows})
print(f"{'network':<19}{'size':>5} {'stage':<16}{'A img/s':>9}{'B img/s':>9}{'B/A (per-round median)':>24}")
for key in keys:
    side = {s: {r["round"]: r["images_per_second"] for r in rows
                if (r["network"], r["size"], r["stage"]) == key and r["side"] == s} for s in "AB"}
    ratio = statistics.median(side["B"][i] / side["A"][i] for i in side["B"] if i in side["A"])
    print(f"{key[0]:<19}{key[1]:>5} {key[2]:<16}{statistics.median(side['A'].values()):>9.1f}"
          f"{statistics.median(side['B'].values()):>9.1f}{ratio:>23.3f}x")
PY
