"""Learned labels end to end: annotations submitted through a real Label Studio 1.23 reach ``/webhook``
(Label Studio registers it when the model is connected) and change the next predictions; the state
survives a restart, is shared by two backends on one Redis, and ``simages-ls labels`` prints it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from simages_core.boxes import to_label_studio
from tests.redis_support import redis_server  # noqa: F401

from .conftest import choices, coco_boxes, start_backend

pytestmark = [pytest.mark.integration, pytest.mark.label_studio, pytest.mark.slow]

CONFIG = """<View><Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image"><Label value="Pet"/><Label value="Dish"/></RectangleLabels>
  <Choices name="scene" toName="image"><Choice value="Animal"/><Choice value="Breakfast"/><Choice value="Space"/></Choices>
</View>"""
TEACH = {"chelsea.jpg": ("Animal", {"cat": "Pet"}), "coffee.jpg": ("Breakfast", {"cup": "Dish"})}
ASK = ("chelsea_flipped.jpg", "coffee_resized.jpg")
UIDS: dict[int, str] = {}
"""Project id -> Label Studio's project uid, which keys learned labels (one instance's 7 is not another's)."""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Poll ``check`` until it returns something truthy (webhooks arrive asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def annotation_result(local_api, file_name: str, choice: str, boxes: dict[str, str]) -> list[dict]:
    coco = json.loads((local_api.demo_dir / "annotations.json").read_text())
    (meta,) = [im for im in coco["images"] if im["file_name"] == file_name]
    result: list[dict] = [
        {"from_name": "scene", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}
    ]
    for name, box in coco_boxes(local_api.demo_dir, file_name):
        ls_box = to_label_studio(box, meta["width"], meta["height"])
        if name in boxes and ls_box is not None:
            value = {
                "x": ls_box.x,
                "y": ls_box.y,
                "width": ls_box.width,
                "height": ls_box.height,
                "rotation": 0,
            }
            result.append({
                "from_name": "box", "to_name": "image", "type": "rectanglelabels",
                "original_width": meta["width"], "original_height": meta["height"],
                "value": {**value, "rectanglelabels": [boxes[name]]},
            })  # fmt: skip
    return result


def project_uid(label_studio, project: int) -> str:
    """How Label Studio names the project to the backend (``MLApi._create_project_uid``)."""
    created = label_studio.sdk().projects.get(id=project).created_at
    return f"{project}.{int(created.timestamp())}"


def predict(backend, project: int, tasks: dict[str, int], file_name: str, local_api) -> dict:
    task = {"id": tasks[file_name], "project": project, "data": {"image": local_api.image_url(file_name)}}
    response = requests.post(
        f"{backend.url}/predict",
        json={"tasks": [task], "label_config": CONFIG, "project": UIDS[project]},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["results"]
    return prediction


def box_labels(prediction: dict) -> set[str]:
    return {r["value"]["rectanglelabels"][0] for r in prediction["result"] if r["type"] == "rectanglelabels"}


def make_project(label_studio, local_api, title: str) -> tuple[int, dict[str, int]]:
    ls = label_studio.sdk()
    project = ls.projects.create(title=title, label_config=CONFIG)
    files = [*TEACH, *ASK]
    ls.projects.import_tasks(
        id=project.id, request=[{"data": {"image": local_api.image_url(f)}} for f in files]
    )
    urls = {local_api.image_url(f): f for f in files}
    UIDS[project.id] = project_uid(label_studio, project.id)
    return project.id, {urls[t.data["image"]]: t.id for t in ls.tasks.list(project=project.id)}


def labels_cli(env: dict[str, str], project: int | str) -> dict:
    run = subprocess.run(
        [sys.executable, "-m", "simages_label_studio", "labels", "--project", str(project), "--json"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_annotations_through_label_studio_teach_the_backend(label_studio, local_api, tmp_path: Path):
    ls = label_studio.sdk()
    project, tasks = make_project(label_studio, local_api, "simages learning")
    ls_env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    home_env = {
        "SIMAGES_HOME": str(tmp_path / "first" / "home"),
        "SIMAGES_CACHE": "0",
        "SIMAGES_LEARN_EVERY": "50",
    }
    backend = start_backend(tmp_path / "first", local_api.base_url, local_api.api_key, **ls_env)
    try:
        ml = ls.ml.create(url=backend.url, project=project, title="Similar Images")
        hooks = requests.get(
            f"{label_studio.url}/api/webhooks/", params={"project": project},
            headers={"Authorization": f"Token {label_studio.token}"}, timeout=30,
        ).json()  # fmt: skip
        assert [h["url"] for h in hooks] == [f"{backend.url}/webhook"] and hooks[0]["send_for_all_actions"]

        # No label is a COCO name: nothing to say before anyone annotates.
        before = {f: predict(backend, project, tasks, f, local_api) for f in ASK}
        assert all(p["result"] == [] and p["score"] == 0.0 for p in before.values()), before
        assert "/learned-" not in before[ASK[0]]["model_version"]

        created = {}
        for file_name, (choice, boxes) in TEACH.items():
            result = annotation_result(local_api, file_name, choice, boxes)
            created[file_name] = ls.annotations.create(id=tasks[file_name], result=result).id

        def learned(file_name: str, choice: str, box: str) -> dict | None:
            p = predict(backend, project, tasks, file_name, local_api)
            return p if choices(p["result"]) == [choice] and box_labels(p) == {box} else None

        cat = wait_for("chelsea's copy labelled Animal / Pet", lambda: learned(ASK[0], "Animal", "Pet"))
        cup = wait_for(
            "coffee's copy labelled Breakfast / Dish", lambda: learned(ASK[1], "Breakfast", "Dish")
        )
        assert cat["model_version"].endswith("/learned-0") and 0 < cat["score"] <= 1 and 0 < cup["score"] <= 1
        shown = labels_cli(home_env, project)
        assert shown["annotations"] == 2
        assert shown["controls"]["box"]["Pet"]["signals"][0]["signal"] == "class:cat"
        assert any(s["signal"] == "class:cat" for s in shown["controls"]["scene"]["Animal"]["signals"])

        # Updated in Label Studio: the annotation's counts are replaced, not added to.
        result = annotation_result(local_api, "chelsea.jpg", "Space", {"cat": "Pet"})
        ls.annotations.update(id=created["chelsea.jpg"], result=result)
        wait_for("chelsea's copy relabelled Space", lambda: learned(ASK[0], "Space", "Pet"))
        shown = labels_cli(home_env, project)
        assert shown["annotations"] == 2 and "Animal" not in shown["controls"]["scene"]

        # "Start training" moves the version; /setup says so, so "Retrieve predictions" predicts again.
        train = label_studio.post(f"/api/ml/{ml.id}/train", json={})
        assert train.status_code == 200, train.text
        wait_for("generation 1", lambda: labels_cli(home_env, project)["generation"] == 1)
        setup = requests.post(
            f"{backend.url}/setup", json={"schema": CONFIG, "project": UIDS[project]}, timeout=30
        )
        assert setup.json()["model_version"].endswith("/learned-1")
    finally:
        backend.stop()

    # A restart keeps what was learned (same SIMAGES_HOME).
    again = start_backend(tmp_path / "first", local_api.base_url, local_api.api_key, **ls_env)
    try:
        after = predict(again, project, tasks, ASK[0], local_api)
        assert choices(after["result"]) == ["Space"] and box_labels(after) == {"Pet"}
        assert after["model_version"].endswith("/learned-1")
    finally:
        again.stop()
    log = (tmp_path / "first" / "backend.log").read_text()
    assert "annotation" in log and label_studio.token not in log and "scrubbed" not in log


def test_two_backends_on_one_redis_share_what_they_learn(
    label_studio,
    local_api,
    redis_server,  # noqa: F811
    tmp_path: Path,
):
    ls = label_studio.sdk()
    project, tasks = make_project(label_studio, local_api, "simages learning replicas")
    shared = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "SIMAGES_CACHE_URL": redis_server.url,
    }
    with (
        start_backend(tmp_path / "a", local_api.base_url, local_api.api_key, **shared) as first,
        start_backend(tmp_path / "b", local_api.base_url, local_api.api_key, **shared) as second,
    ):
        ls.ml.create(url=first.url, project=project, title="Similar Images")  # only the first gets webhooks
        assert predict(second, project, tasks, ASK[0], local_api)["result"] == []
        result = annotation_result(local_api, "chelsea.jpg", "Animal", {"cat": "Pet"})
        ls.annotations.create(id=tasks["chelsea.jpg"], result=result)
        wait_for(
            "the second backend to use what the first learned",
            lambda: choices(predict(second, project, tasks, ASK[0], local_api)["result"]) == ["Animal"],
        )
    shown = labels_cli({"SIMAGES_CACHE_URL": redis_server.url, "SIMAGES_HOME": str(tmp_path / "c")}, project)
    assert shown["annotations"] == 1 and shown["store"].startswith("redis at 127.0.0.1")


def test_recorded_bodies_over_http_clear_answers_never_a_500(local_api, tmp_path: Path):
    """Label Studio's recorded bodies sent by hand: nothing to learn -> ignored; a broken task -> 4xx/502."""
    created = json.loads((Path(__file__).parent / "data" / "webhook_annotation_created.json").read_text())
    with start_backend(tmp_path, local_api.base_url, local_api.api_key) as backend:

        def send(body: dict) -> requests.Response:
            return requests.post(f"{backend.url}/webhook", json=body, timeout=30)

        nothing = {
            **created,
            "project": {**created["project"], "label_config": '<View><Text name="t" value="$t"/></View>'},
        }
        answer = send(nothing)
        assert answer.status_code == 200 and answer.json()["status"] == "ignored"
        # The recorded task's image is on a closed port: the search cannot be made, and it says so.
        unreachable = send(created)
        assert unreachable.status_code == 502 and "task 1: the search failed" in unreachable.json()["error"]
        no_image = send({**created, "task": {**created["task"], "data": {"other": 1}}})
        assert no_image.status_code == 422 and "task 1" in no_image.json()["error"]
        not_xml = send({**created, "project": {**created["project"], "label_config": "<View"}})
        assert (
            not_xml.status_code == 400
            and "'project.label_config' is not a label config" in not_xml.json()["error"]
        )
        assert send(
            json.loads((Path(__file__).parent / "data" / "webhook_start_training.json").read_text())
        ).ok
    log = (tmp_path / "backend.log").read_text()
    assert "Traceback" not in log and "scrubbed" not in log
