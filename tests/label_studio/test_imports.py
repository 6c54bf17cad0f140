"""``simages-ls expand`` stays light: it never imports label-studio-ml and its Flask/redis/rq stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("label_studio_ml", "flask", "rq", "redis")

SCRIPT = (
    """
import json, sys
import simages_label_studio.expand
from simages_label_studio import cli
code = cli.main(["expand", "--project", "1", "--per-task", "2"])
print(json.dumps({"code": code, "loaded": [m for m in HEAVY if m in sys.modules]}))
"""
).replace("HEAVY", repr(HEAVY))


def _run(script: str, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "SIMAGES_"))}
    env["SIMAGES_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_expand_and_the_cli_do_not_import_the_ml_base_class_or_flask(tmp_path: Path):
    # No LABEL_STUDIO_URL: main parses its arguments and settings, then expand refuses (exit 2).
    outcome = _run(SCRIPT, tmp_path)
    assert outcome == {"code": 2, "loaded": []}


def test_the_check_would_see_them(tmp_path: Path):
    """The same probe after importing the served app: it does load them (so the test above can fail)."""
    script = SCRIPT.replace("import simages_label_studio.expand", "import simages_label_studio._wsgi")
    assert set(_run(script, tmp_path)["loaded"]) >= {"label_studio_ml", "flask"}
