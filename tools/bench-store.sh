#!/usr/bin/env bash
# Storage benchmark (issue 2, "Performance"): codec ratio and speed, ingest split into conversion /
# compression / LMDB, whole-row and 1%-column reads, a frame-width × column-block sweep, and the
# peak RSS of ingest. Prints tables of medians with ratios against baselines measured in the same run.
#
#   tools/bench-store.sh                 # everything, 10,000 × 50,000, 3 repetitions (several minutes)
#   tools/bench-store.sh codec           # one section: codec | real | ingest | layout | rss | pipeline
#   tools/bench-store.sh --quick         # small sizes, a smoke test
#   tools/bench-store.sh ingest --examples 20000 --reps 5 --frame-width 16
#
# Builds the release configuration in the default .build (the one the README's build uses).
# Temporary stores go under --tmp (default /tmp) and are deleted; the full run needs about 4 GB
# free there at a time, and about 5 GB of memory.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product h2t-bench >&2
exec "$(swift build -c release --show-bin-path)/h2t-bench" store "$@"
