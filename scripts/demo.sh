#!/usr/bin/env bash
# Installs everything, then runs the main job on the local server (scripts/demo.py):
# the demo collection, searches through the core, a FiftyOne import, Label Studio predictions.
# Extra arguments go to scripts/demo.py (e.g. --skip-label-studio).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python scripts/demo.py "$@"
