"""The distribution builds cleanly and the wheel holds exactly the four packages and their data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {
    "simages_core": REPO / "plugins" / "simages_core",
    "simages_server": REPO / "plugins" / "simages_server",
    "simages_label_studio": REPO / "label_studio_backend",
    "simages_fiftyone": REPO / "fiftyone_plugin",
}
DATA_FILES = {
    "simages_core/py.typed",
    "simages_server/Dockerfile",
    "simages_label_studio/Dockerfile",
    "simages_label_studio/README.md",
    "simages_fiftyone/fiftyone.yml",
    "simages_fiftyone/README.md",
}
# What setuptools prints when the configuration is deprecated or incomplete.
SETUPTOOLS_COMPLAINTS = re.compile(
    r"BuildBackendWarning|SetuptoolsDeprecationWarning|_DeprecatedConfig|would be ignored|"
    r"Package .* is absent from the `packages` configuration|license.*deprecated",
    re.IGNORECASE,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """(the wheel, pip's verbose build output)."""
    out_dir = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-v", "-w", str(out_dir),
         "--disable-pip-version-check"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    (wheel,) = out_dir.glob("simages_plugins-*.whl")
    return wheel, output


def test_the_build_prints_no_setuptools_warning(built):
    _, output = built
    complaints = [line for line in output.splitlines() if SETUPTOOLS_COMPLAINTS.search(line)]
    assert complaints == []


def test_the_wheel_holds_exactly_the_four_packages_and_their_data(built):
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == set(PACKAGES)
    for package, folder in PACKAGES.items():
        sources = {
            f"{package}/{path.relative_to(folder).as_posix()}"
            for path in folder.rglob("*.py")
            if "__pycache__" not in path.parts
        }
        assert sources, package
        assert sources <= names, sorted(sources - names)
    assert names >= DATA_FILES, sorted(DATA_FILES - names)
    assert any(name.startswith("simages_fiftyone/docs/") and name.endswith(".png") for name in names)
    assert not [n for n in names if "/tests/" in n or n.startswith("tests/") or "__pycache__" in n]


def test_the_installed_wheel_imports_with_its_version_and_commands(built, tmp_path):
    wheel, _ = built
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel),
         "--disable-pip-version-check", "-q"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    probe = (
        "import importlib.metadata as md, simages_core, simages_server.cli, simages_label_studio;"
        "print(simages_core.__file__); print(simages_core.__version__ == md.version('simages-plugins'));"
        "print(sorted(e.name for e in md.entry_points(group='console_scripts')"
        " if e.dist.name == 'simages-plugins'))"
    )
    # The wheel, first on the path, shadows the editable install of the checkout.
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout.splitlines()
    assert Path(out[0]).is_relative_to(target)
    assert out[1] == "True"
    assert out[2] == "['simages', 'simages-ls', 'simages-server']"
