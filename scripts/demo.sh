#!/usr/bin/env bash
# Installs everything, then runs the main job on the local server (scripts/demo.py):
# the demo collection, searches through the core, a FiftyOne import, Label Studio predictions.
# Extra arguments go to scripts/demo.py (e.g. --skip-label-studio).
# --serve: after the main job, leave the local server, Label Studio with the demo project, the ML
# backend and the FiftyOne App running on loopback, print each URL with its login; Ctrl-C stops all.
# demo.py replaces this shell (exec), so Ctrl-C / SIGTERM reach it directly and it stops every child.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python scripts/demo.py "$@"
