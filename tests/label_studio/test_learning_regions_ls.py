"""Drawn regions teach, through a real Label Studio 1.23: a project whose labels are not COCO names.

An annotator draws a box (and clicks a smart keypoint) on the cat of a team photo no index holds:
the backend, asked by Label Studio's own interactive-annotating endpoint, has no label for it. The
annotator labels them "Pet" and submits; Label Studio sends the annotation to ``/webhook``, where the
annotator's regions are paired by IoU with the regions answered before (no near-duplicate exists, so
nothing else could teach). The next box drawn on the cat of another task comes back "Pet", with the
project's learned ``model_version``, which ``/predict`` also answers at its top level.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import coco_boxes, start_backend
from .test_interactive import team_photo
from .test_learning_ls import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.label_studio, pytest.mark.slow]

CONFIG = """<View><Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image" smart="true"><Label value="Vehicle"/><Label value="Pet"/></RectangleLabels>
  <KeyPointLabels name="point" toName="image" smart="true"><Label value="Vehicle"/><Label value="Pet"/></KeyPointLabels>
</View>"""
TEAM = (1351, 400)  # team_photo's size: the cat (chelsea.jpg) at its top-left corner


@pytest.fixture(scope="module")
def team_photo_file(local_api, tmp_path_factory) -> Path:
    return team_photo(local_api.images_dir, tmp_path_factory.mktemp("team-images") / "team.jpg")


def cat_value(local_api) -> dict[str, float]:
    """The cat's COCO box in chelsea.jpg, in percent of the team photo it sits in."""
    ((_, (x0, y0, x1, y1)),) = [b for b in coco_boxes(local_api.demo_dir, "chelsea.jpg") if b[0] == "cat"]
    w, h = TEAM
    return {"x": 100 * x0 / w, "y": 100 * y0 / h, "width": 100 * (x1 - x0) / w, "height": 100 * (y1 - y0) / h}


def box(value: dict[str, float], labels: list[str], region_id: str = "cat-box") -> dict[str, Any]:
    return {
        "id": region_id, "from_name": "box", "to_name": "image", "type": "rectanglelabels",
        "original_width": TEAM[0], "original_height": TEAM[1], "image_rotation": 0,
        "value": {**value, "rotation": 0, "rectanglelabels": labels},
    }  # fmt: skip


def point(value: dict[str, float], labels: list[str]) -> dict[str, Any]:
    centre = {"x": value["x"] + value["width"] / 2, "y": value["y"] + value["height"] / 2}
    return {
        "id": "cat-point", "from_name": "point", "to_name": "image", "type": "keypointlabels",
        "original_width": TEAM[0], "original_height": TEAM[1], "image_rotation": 0,
        "value": {**centre, "width": 0.5, "keypointlabels": labels},
    }  # fmt: skip


def drawn(label_studio, ml_id: int, task: int, region: dict[str, Any]) -> dict[str, Any]:
    """Label Studio's interactive-annotating endpoint, as the labelling screen calls it: the answer's data."""
    response = label_studio.post(
        f"/api/ml/{ml_id}/interactive-annotating", json={"task": task, "context": {"result": [region]}}
    )
    assert response.status_code == 200, response.text
    assert "errors" not in response.json(), response.json()
    return response.json()["data"]


def label_of(answer: dict[str, Any]) -> list[str]:
    (region,) = answer["result"]
    return region["value"][region["type"]]


def labels_cli(home: Path, project: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIMAGES_HOME": str(home)}
    env.pop("SIMAGES_CACHE_URL", None)
    command = [sys.executable, "-m", "simages_label_studio", "labels", "--project", project, "--json"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_boxes_and_keypoints_answered_before_teach_a_non_coco_project(
    label_studio, local_api, team_photo_file, tmp_path
):
    ls = label_studio.sdk()
    project = ls.projects.create(title="simages drawn regions teach", label_config=CONFIG)
    for n in range(3):  # the team's own photos, uploaded to Label Studio (no index holds them)
        with team_photo_file.open("rb") as fh:
            response = label_studio.post(
                f"/api/projects/{project.id}/import", files={"file": (f"team{n}.jpg", fh, "image/jpeg")}
            )
        assert response.status_code == 201, response.text
    uploaded = {t.data["image"]: t for t in ls.tasks.list(project=project.id)}
    tasks = [next(t.id for ref, t in uploaded.items() if ref.endswith(f"team{n}.jpg")) for n in range(3)]
    image_of = {t.id: ref for ref, t in uploaded.items()}
    cat = cat_value(local_api)
    env = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "SIMAGES_LEARN_EVERY": "50",
    }
    with start_backend(tmp_path, local_api.base_url, local_api.api_key, **env) as backend:
        ml = ls.ml.create(url=backend.url, project=project.id, title="Similar Images", is_interactive=True)

        # Nothing taught yet: "Pet" and "Vehicle" are no COCO names, the drawn cat stays unlabelled.
        for task in tasks[:2]:
            answer = drawn(label_studio, ml.id, task, box(cat, ["Vehicle"]))
            assert label_of(answer) == [] and "/learned-" not in answer["model_version"]
            assert label_of(drawn(label_studio, ml.id, task, point(cat, ["Vehicle"]))) == []

        # The annotator nudges the box a little (IoU with the answered one stays above 0.5) and submits.
        nudged = {**cat, "x": cat["x"] + 0.5, "width": cat["width"] - 1.0}
        created = [
            ls.annotations.create(id=task, result=[box(nudged, ["Pet"]), point(cat, ["Pet"])]).id
            for task in tasks[:2]
        ]

        def learned() -> dict[str, Any] | None:
            answer = drawn(label_studio, ml.id, tasks[2], box(cat, ["Vehicle"], "another-box"))
            return answer if label_of(answer) == ["Pet"] else None

        answer = wait_for("the third task's cat box labelled Pet", learned)
        assert answer["model_version"].endswith("/learned-0") and 0.4 <= answer["result"][0]["score"] <= 1
        assert label_of(drawn(label_studio, ml.id, tasks[2], point(cat, ["Vehicle"]))) == ["Pet"]

        # /predict's top-level model_version is the learned one too (Label Studio stores each result's).
        uid = f"{project.id}.{int(ls.projects.get(id=project.id).created_at.timestamp())}"
        body = {
            "tasks": [{"id": tasks[2], "project": project.id, "data": {"image": image_of[tasks[2]]}}],
            "label_config": CONFIG,
            "project": uid,
        }
        plain = requests.post(f"{backend.url}/predict", json=body, timeout=60).json()
        assert plain["model_version"] == plain["results"][0]["model_version"] == answer["model_version"]
        # The same project id on another Label Studio instance (created at another time) learned nothing.
        elsewhere = {**body, "project": f"{project.id}.1", "params": {"context": {"result": [box(cat, [])]}}}
        other = requests.post(f"{backend.url}/predict", json=elsewhere, timeout=60).json()
        assert label_of(other["results"][0]) == [] and "/learned-" not in other["model_version"]

        # Updated with the same regions: replaced, not added (two box lessons, not three).
        ls.annotations.update(id=created[0], result=[box(nudged, ["Pet"]), point(cat, ["Pet"])])
        log = tmp_path / "backend.log"
        wait_for("the update learned", lambda: log.read_text().count(f"annotation {created[0]} learned") >= 2)
    shown = labels_cli(tmp_path / "home", str(project.id))
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["project"] == uid and document["annotations"] == 2
    (pet,) = [s for s in document["controls"]["box"]["Pet"]["signals"] if s["signal"] == "class:cat"]
    assert pet["with_label"] == 2 and pet["seen"] == 2
    assert any(s["signal"] == "class:cat" for s in document["controls"]["point"]["Pet"]["signals"])
