"""What a new contributor is promised: the pre-commit hooks run exactly the checks of ``scripts/test.sh``
(and so of CI), and the guides the README and CONTRIBUTING point at exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _test_script_checks() -> list[list[str]]:
    """The check commands of scripts/test.sh (``.venv/bin/ruff …``, ``.venv/bin/mypy …``), as argv lists."""
    lines = (REPO / "scripts" / "test.sh").read_text().splitlines()
    return [shlex.split(line) for line in lines if re.match(r"^\.venv/bin/(ruff|mypy)\b", line)]


def test_pre_commit_hooks_run_the_same_checks_as_the_test_script():
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    entries = {Path(argv[0]).name: argv for argv in (shlex.split(hook["entry"]) for hook in hooks)}
    checks = {Path(argv[0]).name: argv for argv in _test_script_checks()}
    assert set(checks) == {"ruff", "mypy"}, checks  # the test script still runs both
    assert set(entries) == set(checks)
    # pre-commit hands ruff the changed files (the test script checks '.', with the same rules);
    # mypy gets none, so it checks the same four packages as the test script.
    assert entries["ruff"] == [arg for arg in checks["ruff"] if arg != "."]
    assert entries["mypy"] == checks["mypy"]
    mypy_hook = next(h for h in hooks if h["entry"].startswith(".venv/bin/mypy"))
    assert mypy_hook["pass_filenames"] is False


def test_contributing_and_changelog_are_where_the_readme_says():
    contributing = (REPO / "CONTRIBUTING.md").read_text()
    for marker in ("integration", "label_studio", "fiftyone", "browser", "slow"):
        assert f"`{marker}`" in contributing  # every pytest marker is explained
    declared = re.findall(r'^\s+"(\w+): ', (REPO / "pyproject.toml").read_text(), re.M)
    assert set(declared) >= {"integration", "label_studio", "fiftyone", "browser", "slow"}
    assert "SIMAGES_UPDATE_SCREENSHOTS=1" in contributing and "scripts/bench.sh" in contributing
    assert "loopback" in contributing
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog") and "## [Unreleased]" in changelog
