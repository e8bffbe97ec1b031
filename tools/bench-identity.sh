#!/usr/bin/env bash
# SHA-256 benchmark (issue 13, docs/benchmarks.md "Identity"): the hand-written SHA-256 the package
# carried before against swift-crypto's, on image-sized buffers and 1 MiB chunks, medians with the
# speed-up measured in the same run.
#
#   tools/bench-identity.sh              # 10,000 buffers per size, 256 × 1 MiB, 5 repetitions
#   tools/bench-identity.sh --quick      # small sizes, a smoke test
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product h2t-bench >&2
exec "$(swift build -c release --show-bin-path)/h2t-bench" hash "$@"
