"""The package boundaries DESIGN.md draws: only the core's public API crosses them; modules stay small."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "plugins" / "simages_core"
OUTSIDE_THE_CORE = [REPO / "plugins" / "simages_server", REPO / "label_studio_backend", REPO / "fiftyone_plugin"]
PRODUCT_FOLDERS = [CORE, *OUTSIDE_THE_CORE]
# "~350 lines" in the style guide; a little slack so a docstring does not force a split.
MAX_MODULE_LINES = 380
PRIVATE_CORE_IMPORT = re.compile(r"simages_core\._|from \.\._|from \.\. import")


def _modules(folders: list[Path]) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("module", _modules(OUTSIDE_THE_CORE), ids=lambda p: str(p.relative_to(REPO)))
def test_only_the_public_core_api_is_imported(module):
    offending = [
        f"{n}: {line.strip()}"
        for n, line in enumerate(module.read_text().splitlines(), start=1)
        if PRIVATE_CORE_IMPORT.search(line)
    ]
    assert offending == []


@pytest.mark.parametrize("module", _modules(PRODUCT_FOLDERS), ids=lambda p: str(p.relative_to(REPO)))
def test_modules_have_one_job_and_stay_small(module):
    lines = len(module.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{lines} lines: split it by responsibility"


def test_importing_the_core_leaves_pillow_and_logging_as_they_were():
    probe = (
        "import logging; from PIL import ImageFile; ImageFile.LOAD_TRUNCATED_IMAGES = True;"
        "handlers = list(logging.getLogger().handlers);"
        "import simages_core, simages_core.protocol, simages_core.boxes, simages_core.coco;"
        "print(ImageFile.LOAD_TRUNCATED_IMAGES, logging.getLogger().handlers == handlers)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "True"]


def test_fiftyone_plugin_version_is_the_distribution_version():
    import simages_core

    manifest = (REPO / "fiftyone_plugin" / "fiftyone.yml").read_text()
    (version,) = re.findall(r"^version:\s*(\S+)\s*$", manifest, flags=re.M)
    assert version == simages_core.__version__
