#!/usr/bin/env bash
# One command: builds clusterup (release), brings up the test bed, and
# measures clusterup against its floor and peers, side by side in the same
# run. Prints a table of medians and ratios; RESULTS.md keeps past runs.
#   scripts/bench/run.sh   # REPS=7 SIZES="10 50 200" CASES="check structural downtime snapshot" SNAPSHOT_MB=1024
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib/testbed.sh
ensure_testbed
command -v skopeo >/dev/null || apt_install skopeo
cargo build --release --locked --quiet
exec python3 scripts/bench/bench.py "$@"
