"""The README's main job (scripts/demo.py) runs end to end on this machine and does what it says."""

from __future__ import annotations

import os
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
    assert "[cup 1.00, spoon 1.00]" in out  # image search with labels
    assert 'find_similar(text="horse"): 3 images, the dataset is unchanged (3 samples)' in out
    assert "import_similar(3 samples, 4 each): 12 imported, 0 duplicates skipped, 0 failed" in out
    assert "the same import again: 0 imported, 12 skipped as duplicates" in out
    assert "Retrieve predictions: Retrieved 5 predictions" in out
    assert "coffee_cropped.jpg: boxes ['Mug', 'Spoon'], choices ['Coffee'], score 1.0" in out
    assert "brick.jpg: boxes [], choices [], score 0.0" in out
    assert "expand again: 0 new tasks (no duplicates)" in out
    assert "demo-key" not in out + run.stderr  # the API key is never printed
