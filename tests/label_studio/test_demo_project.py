"""The demo keeps one project in Label Studio: a re-run replaces the earlier runs' projects, whose
task images and backend pointed at ports that are gone, and leaves every other project alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.label_studio]

DEMO_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def _demo_module():
    spec = importlib.util.spec_from_file_location("simages_demo_script", DEMO_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_demo_rerun_leaves_one_demo_project_and_no_other_is_touched(label_studio):
    demo = _demo_module()
    sdk = label_studio.sdk()
    stale = [
        sdk.projects.create(title=f"{demo.DEMO_PROJECT} 21:09:53", label_config=demo.LS_CONFIG).id,  # old naming
        sdk.projects.create(title=demo.DEMO_PROJECT, label_config=demo.LS_CONFIG).id,
    ]
    own = sdk.projects.create(title="Similar Images demo notes (a user's)", label_config=demo.LS_CONFIG).id
    try:
        fresh = demo.fresh_demo_project(sdk)
        titles = {p.id: p.title for p in sdk.projects.list()}
        assert [pid for pid, title in titles.items() if title == demo.DEMO_PROJECT] == [fresh.id]
        assert not set(stale) & set(titles)
        assert own not in stale and titles[own] == "Similar Images demo notes (a user's)"
        again = demo.fresh_demo_project(sdk)
        titles = {p.id: p.title for p in sdk.projects.list()}
        assert [pid for pid, title in titles.items() if title == demo.DEMO_PROJECT] == [again.id]
        assert again.id != fresh.id and own in titles
    finally:
        for project in sdk.projects.list():
            if project.title and project.title.startswith(demo.DEMO_PROJECT):
                sdk.projects.delete(id=project.id)
