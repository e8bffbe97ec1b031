#!/usr/bin/env bash
# What -Ounchecked buys (issue 12, item 10): the same benchmarks, quick settings, on two release
# builds of h2t-bench in one run: `-Ounchecked` on every Swift module (.build-unchecked, as the
# package was built before) and the package as it is (.build: checked -O, -Ounchecked only in the
# H2TKernels target). Rounds alternate
# which build goes first, so drifting load on a shared machine hits both alike; prints the
# median over rounds and the ratio checked / unchecked (> 1: the checked build is faster).
#
#   tools/bench-safe-builds.sh [--rounds 3] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3; build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift ;;
        --no-build) build=0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$build" = 1 ]; then
    swift build -c release --product h2t-bench >&2
    swift build -c release --scratch-path .build-unchecked -Xswiftc -Ounchecked --product h2t-bench >&2
fi
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

run() {  # run BUILD-LABEL BINARY
    local label="$1" bench="$2"
    "$bench" backbone --network mobilenet_v2 --size 64 --batch 32 --threads 2 --mode split --seconds 3 --json \
        | python3 -c 'import json,sys
for l in sys.stdin:
    r=json.loads(l); print(json.dumps({"build":sys.argv[1],"metric":"backbone 64x64 "+r["stage"]+" (img/s)","value":r["images_per_second"],"higher":True}))' "$label"
    "$bench" train --quick --no-reference | python3 -c 'import json,re,sys
for l in sys.stdin:
    m=re.match(r"\s+(fit|sweep): ([0-9.]+) s",l)
    if m: print(json.dumps({"build":sys.argv[1],"metric":"train quick "+m[1]+" (s)","value":float(m[2]),"higher":False}))' "$label"
    "$bench" store codec ingest --quick | python3 -c 'import json,re,sys
for l in sys.stdin:
    f=l.split()
    if f[:4]==["bfloat16","planes","1","4"] and len(f)>=10:
        print(json.dumps({"build":sys.argv[1],"metric":"codec bf16/zstd1/fw4 encode (MB/s)","value":float(f[5]),"higher":True}))
        print(json.dumps({"build":sys.argv[1],"metric":"codec bf16/zstd1/fw4 decode (MB/s)","value":float(f[7]),"higher":True}))
    m=re.search(r"rep \d+/\d+: encode ([0-9.]+) s, commit [0-9.]+ s, whole read ([0-9.]+) s, 1% read ([0-9.]+) s",l)
    if m:
        print(json.dumps({"build":sys.argv[1],"metric":"ingest encode 2048x10000 (s)","value":float(m[1]),"higher":False}))
        print(json.dumps({"build":sys.argv[1],"metric":"read whole rows 2048x10000 (s)","value":float(m[2]),"higher":False}))' "$label"
}

for round in $(seq "$rounds"); do
    echo "== round $round/$rounds" >&2
    if [ $((round % 2)) = 1 ]; then order="unchecked checked"; else order="checked unchecked"; fi
    for b in $order; do
        if [ "$b" = unchecked ]; then run unchecked .build-unchecked/release/h2t-bench >> "$out"
        else run checked .build/release/h2t-bench >> "$out"; fi
    done
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
metrics = list(dict.fromkeys(r["metric"] for r in rows))
print(f"{'benchmark':<42} {'-Ounchecked':>12} {'-O':>10} {'-O vs unchecked':>16}  runs")
for m in metrics:
    u = [r["value"] for r in rows if r["metric"] == m and r["build"] == "unchecked"]
    c = [r["value"] for r in rows if r["metric"] == m and r["build"] == "checked"]
    mu, mc = statistics.median(u), statistics.median(c)
    higher = next(r["higher"] for r in rows if r["metric"] == m)
    speed = mc / mu if higher else mu / mc   # > 1: the checked build is faster
    print(f"{m:<42} {mu:>12.4g} {mc:>10.4g} {speed:>15.3f}x  {len(u)}+{len(c)}")
PY
