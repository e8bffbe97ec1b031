#!/usr/bin/env bash
# The default thread count under a cgroup CPU quota (`docker run --cpus`, a Kubernetes CPU
# limit), which the affinity mask does not show: `ingest` run inside a cgroup limited to --cpus
# CPUs, with the default (the affinity mask bounded by the quota) against --threads N for each N
# of --emulate (the count the affinity mask alone would give on an N-core host: the default
# before the quota was read). Prints wall time, CPU time, peak RSS and the threads the ingest
# reports, medians of --reps runs, alternating.
#
#   tools/bench-cgroup-quota.sh [--cpus 2] [--emulate "32"] [--sizes "64 224"] [--reps 3]
#
# Needs root and a writable cgroup file system with the cpu controller (v1 or v2): it creates a
# child of this shell's cgroup and removes it at the end. Needs the pinned Fashion-MNIST
# (tools/fetch-artifacts).
set -euo pipefail
cd "$(dirname "$0")/.."
CPUS=2; EMULATE="32"; SIZES="64 224"; REPS=3
usage='usage: tools/bench-cgroup-quota.sh [--cpus N] [--emulate "N ..."] [--sizes "64 224"] [--reps N]'
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
    case "$1" in
        --cpus) CPUS="$2" ;;
        --emulate) EMULATE="$2" ;;
        --sizes) SIZES="$2" ;;
        --reps) REPS="$2" ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
    shift 2
done
for value in "$CPUS" "$REPS" $EMULATE $SIZES; do
    case "$value" in ''|*[!0-9]*|0) echo "bench-cgroup-quota: counts and sizes must be positive integers, got '$value'" >&2; exit 2 ;; esac
done

# A child of this shell's group in the first hierarchy with the cpu controller that lets us make one.
GROUP=""
while read -r version mount_point group; do
    candidate="$mount_point$group/h2t-bench-quota-$$"
    mkdir "$candidate" 2>/dev/null || continue
    if [ "$version" = 2 ] && [ -f "$candidate/cpu.max" ]; then
        echo "$((CPUS * 100000)) 100000" > "$candidate/cpu.max"; GROUP="$candidate"; break
    elif [ "$version" = 1 ] && [ -f "$candidate/cpu.cfs_quota_us" ]; then
        echo 100000 > "$candidate/cpu.cfs_period_us"; echo "$((CPUS * 100000))" > "$candidate/cpu.cfs_quota_us"; GROUP="$candidate"; break
    fi
    rmdir "$candidate"
done < <(python3 - <<'EOF'
import sys
sys.path.insert(0, "tools/python")
from h2t_store import _cpus
groups, mounts = open("/proc/self/cgroup").read(), open("/proc/self/mountinfo").read()
for version, root, point in _cpus._cgroup_mounts(mounts):
    group = _cpus._membership(groups, version)
    if group is not None and root == "/":
        print(version, point, group.rstrip("/"))
EOF
)
[ -x /usr/bin/time ] || { echo "bench-cgroup-quota: needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
[ -n "$GROUP" ] || { echo "bench-cgroup-quota: cannot create a cgroup with the cpu controller here (needs root and a writable cgroup file system)" >&2; exit 1; }

swift build -c release --product h2t-store >&2
BIN="$(swift build -c release --show-bin-path)/h2t-store"
IDX="${H2T_CACHE:-$HOME/.cache/h2t-store}/fashion-mnist/train-images-idx3-ubyte.gz"
[ -f "$IDX" ] || { echo "bench-cgroup-quota: $IDX is missing; run tools/fetch-artifacts" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"; rmdir "$GROUP" 2>/dev/null || true' EXIT

for size in $SIZES; do
    count=$([ "$size" -le 64 ] && echo 4096 || echo 512)
    for rep in $(seq "$REPS"); do
        for setting in default $EMULATE; do
            threads=(); [ "$setting" = default ] || threads=(--threads "$setting")
            rm -rf "$WORK/store"
            # The shell joins the group, then becomes the timed command (which runs the CLI).
            /bin/sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$GROUP" \
                /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" env -u H2T_THREADS \
                "$BIN" ingest --store "$WORK/store" --dataset bench --backbone mobilenet_v2 --idx "$IDX" --limit "$count" \
                --input-size "$size" --target-size 512 --target-size 1024 --json "${threads[@]}" > "$WORK/summary.json"
            reported=$(python3 -c "import json; print(json.load(open('$WORK/summary.json'))['threads'])")
            echo "$size $count $setting $reported $(cat "$WORK/time")" >> "$WORK/rows"
        done
    done
done

python3 - "$WORK/rows" "$CPUS" "$(nproc)" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
avx512 = sum("avx512f" in l for l in open("/proc/cpuinfo") if l.startswith("flags"))
print(f"ingest inside a cgroup limited to {sys.argv[2]} CPUs; {cpu}, {sys.argv[3]} cores in the affinity mask, avx512f on {avx512}")
print(f"{'size':>5} {'images':>6} {'threads':<22} {'wall s':>7} {'CPU s':>6} {'peak RSS MB':>12}")
for size in dict.fromkeys(r[0] for r in rows):
    for setting in dict.fromkeys(r[2] for r in rows if r[0] == size):
        here = [r for r in rows if r[0] == size and r[2] == setting]
        med = lambda i: statistics.median(float(r[i]) for r in here)
        label = f"default ({here[0][3]})" if setting == "default" else f"--threads {setting}"
        print(f"{size:>5} {here[0][1]:>6} {label:<22} {med(4):7.2f} {med(5) + med(6):6.2f} {med(7) / 1024:12.0f}")
EOF
