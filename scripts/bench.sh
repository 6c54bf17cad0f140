#!/usr/bin/env bash
# Runs every benchmark in bench/; each prints ratios against a baseline measured in the same run
# and exits non-zero when it misses its target. Assumes scripts/install.sh has run.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for bench in bench/bench_*.py; do
    echo "=== $bench"
    .venv/bin/python "$bench" || status=1
done
exit $status
