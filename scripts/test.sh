#!/usr/bin/env bash
# Installs everything, then runs the whole test suite (real local server, real Label Studio,
# real FiftyOne with its database, all on loopback). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/mypy plugins/simages_core plugins/simages_server label_studio_backend fiftyone_plugin
exec .venv/bin/python -m pytest "$@"
