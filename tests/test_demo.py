"""The README's main job (scripts/demo.py) runs end to end on this machine and does what it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.label_studio, pytest.mark.fiftyone]


def test_demo_runs_every_step(tmp_path):
    env = {
        **os.environ,
        "FIFTYONE_DATABASE_DIR": str(tmp_path / "fiftyone-db"),  # never the user's database
        "SIMAGES_HOME": str(tmp_path / "home"),
    }
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(tmp_path / "demo")],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "57 images indexed" in out
    assert "[cup 1.00, spoon 1.00]  (+5 copies)" in out  # image search with labels, a photo's variants folded
    assert 'find_similar(text="horse"): 1 images, the dataset is unchanged (3 samples)' in out
    imported = re.search(
        r"import_similar\(3 samples, 12 each\): (\d+) imported, (\d+) skipped as copies of the dataset's photos, "
        r"0 duplicates, 0 failed",
        out,
    )
    assert imported and int(imported[1]) >= 1 and int(imported[2]) >= 15, out  # each photo's 5 variants at least
    assert (
        f"the same import again: 0 imported, {imported[1]} skipped as duplicates, {imported[2]} as copies" in out
    )
    assert "oldest supported major version of MongoDB" not in out + run.stderr  # the demo's output is the user's
    assert "Retrieve predictions: Retrieved 5 predictions" in out
    assert "coffee_cropped.jpg: boxes ['Mug', 'Spoon'], choices ['Coffee'], score 1.0" in out
    assert "brick.jpg: boxes [], choices [], score 0.0" in out
    expanded = re.search(r"expand: (\d+) new pre-labelled tasks, 0 already present, (\d+) skipped as copies", out)
    assert expanded and int(expanded[1]) >= 1 and int(expanded[2]) >= 4, out  # the tasks' own variants are copies
    assert "expand again: 0 new tasks (no duplicates)" in out
    assert "demo-key" not in out + run.stderr  # the API key is never printed
