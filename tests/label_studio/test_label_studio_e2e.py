"""End to end with a real Label Studio 1.23 (from .venv-ls, its own environment, as in production).

Label Studio asks the backend for predictions through its own API ("Retrieve
predictions"), stores them, and ``expand`` grows the project through
label-studio-sdk; everything over loopback against the local server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from simages_label_studio.expand import SOURCE_TASK_KEY, expand_project
from simages_label_studio.settings import BackendSettings

from .conftest import CONFIG, assert_boxes_close, backend_env, choices, coco_boxes, pixel_boxes, start_backend

pytestmark = [pytest.mark.integration, pytest.mark.label_studio, pytest.mark.slow]

PROJECT_LABELS = {"Person", "Cat", "Mug", "Spoon", "Horse"}  # the RectangleLabels of CONFIG


@pytest.fixture(scope="module")
def project(label_studio, local_api, tmp_path_factory) -> Iterator[dict]:
    """A project with URL tasks from the local server, an uploaded image, and the backend connected."""
    tmp = tmp_path_factory.mktemp("ls-project")
    ls = label_studio.sdk()
    created = ls.projects.create(title="simages e2e", label_config=CONFIG)
    url_files = ["astronaut_resized.jpg", "coffee_cropped.jpg", "brick.jpg"]
    ls.projects.import_tasks(
        id=created.id, request=[{"data": {"image": local_api.image_url(f)}} for f in url_files]
    )
    # An upload the index has never seen: the horse at half size.
    upload = tmp / "horse_half.jpg"
    with Image.open(local_api.images_dir / "horse.jpg") as im:
        im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS).save(upload, quality=85)
    with upload.open("rb") as fh:
        response = label_studio.post(
            f"/api/projects/{created.id}/import", files={"file": ("horse_half.jpg", fh, "image/jpeg")}
        )
    assert response.status_code == 201, response.text

    backend = start_backend(
        tmp,
        local_api.base_url,
        local_api.api_key,
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
    )
    try:
        ml = ls.ml.create(url=backend.url, project=created.id, title="Similar Images")
        tasks = {t.data["image"]: t.id for t in ls.tasks.list(project=created.id)}
        yield {"id": created.id, "ml": ml, "tasks": tasks, "url_files": url_files, "backend": backend}
    finally:
        backend.stop()


def test_label_studio_connects_the_backend(project, local_api):
    ml = project["ml"]
    assert ml.readable_state == "Connected", ml.error_message
    host = local_api.base_url.removeprefix("http://")
    assert ml.model_version.startswith(f"{host}/coco_yolov7/labels-")


def test_retrieve_predictions_stores_boxes_labels_and_scores(project, label_studio, local_api):
    response = label_studio.post(
        "/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": project["id"]},
        json={"selectedItems": {"all": True, "excluded": []}},
    )
    assert response.status_code == 200, response.text
    ls = label_studio.sdk()
    stored = {}
    for ref, task_id in project["tasks"].items():
        (prediction,) = ls.predictions.list(task=task_id)
        assert prediction.model_version == project["ml"].model_version
        stored[ref] = prediction

    def expect(file_name: str, scale: float = 1.0, rename=str.title) -> dict[str, tuple[float, ...]]:
        return {
            rename(name): tuple(v * scale for v in box)
            for name, box in coco_boxes(local_api.demo_dir, file_name)
        }

    astronaut = stored[local_api.image_url("astronaut_resized.jpg")]
    assert_boxes_close(pixel_boxes(astronaut.result), expect("astronaut_resized.jpg"))
    assert choices(astronaut.result) == ["Person"] and astronaut.score == 1.0

    coffee = stored[local_api.image_url("coffee_cropped.jpg")]
    boxes = pixel_boxes(coffee.result)
    assert boxes.keys() == {"Mug", "Spoon"}
    assert_boxes_close(
        boxes, expect("coffee_cropped.jpg", rename=lambda n: "Mug" if n == "cup" else n.title())
    )
    assert choices(coffee.result) == ["Coffee"]

    assert stored[local_api.image_url("brick.jpg")].result == []

    (upload_ref,) = [ref for ref in stored if ref.startswith("/data/upload/")]
    horse = stored[upload_ref]
    assert_boxes_close(pixel_boxes(horse.result), expect("horse.jpg", scale=0.5))
    (region,) = [r for r in horse.result if r["type"] == "rectanglelabels"]
    with Image.open(local_api.images_dir / "horse.jpg") as im:
        assert (region["original_width"], region["original_height"]) == (im.width // 2, im.height // 2)
    assert 0 < region["score"] <= 1


def test_expand_adds_similar_tasks_with_predictions_and_provenance_once(
    project, label_studio, local_api, tmp_path
):
    ls = label_studio.sdk()
    before = {t.id for t in ls.tasks.list(project=project["id"])}
    settings = BackendSettings(
        **backend_env(local_api.base_url, local_api.api_key, tmp_path / "home"),
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
    )
    report = expand_project(project["id"], per_task=3, settings=settings)
    assert report.source_tasks == 4 and not report.failed_tasks
    assert report.added > 0 and len(report.new_task_ids) == report.added

    tasks = {t.id: t for t in ls.tasks.list(project=project["id"])}
    new = [t for task_id, t in tasks.items() if task_id not in before]
    assert len(new) == report.added == len(tasks) - len(before)
    files_by_id = {r.id: r.file for r in local_api.records()}
    source_ids = set(project["tasks"].values())
    urls = [t.data["image"] for t in new]
    assert len(set(urls)) == len(urls) and not set(urls) & set(project["tasks"])  # no duplicates
    # The report says exactly which tasks landed, and from which source task.
    assert sorted(i for ids in report.landed.values() for i in ids) == sorted(report.new_task_ids)
    assert {t.id: t.data[SOURCE_TASK_KEY] for t in new} == {
        new_id: source for source, ids in report.landed.items() for new_id in ids
    }
    for task in new:
        data = task.data
        assert data[SOURCE_TASK_KEY] in source_ids and 0 < data["simages_score"] <= 1
        assert data["image"] == f"{local_api.base_url}/images/{data['simages_id']}"
        assert data["simages_thumbnail_url"].endswith(f"/thumbnails/{data['simages_id']}.webp")
        (prediction,) = ls.predictions.list(task=task.id)
        # The new task's boxes are that very image's labels.
        file_name = files_by_id[data["simages_id"]]
        labels = {
            ("Mug" if n == "cup" else n.title()): box for n, box in coco_boxes(local_api.demo_dir, file_name)
        }
        mapped = {label: box for label, box in labels.items() if label in PROJECT_LABELS}
        assert_boxes_close(pixel_boxes(prediction.result), mapped)

    # Twice adds nothing: through the command line this time.
    env = {
        **os.environ,
        **backend_env(local_api.base_url, local_api.api_key, tmp_path / "home"),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
    }
    cli = subprocess.run(
        [sys.executable, "-m", "simages_label_studio", "expand", "--project", str(project["id"]), "--per-task", "3", "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    again = json.loads(cli.stdout)
    assert again["added"] == 0 and again["skipped_existing"] > 0 and again["source_tasks"] == 4
    assert len(list(ls.tasks.list(project=project["id"]))) == len(tasks)
    assert label_studio.token not in cli.stdout + cli.stderr


def test_expand_refuses_bad_input_with_clear_errors(project, label_studio, local_api, tmp_path):
    env = {
        **os.environ,
        **backend_env(local_api.base_url, local_api.api_key, tmp_path / "home"),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "simages_label_studio", "expand", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    missing = run("--project", str(project["id"]), "--tasks", "999999")
    assert missing.returncode == 2 and "[999999] are not in project" in missing.stderr
    assert run("--project", str(project["id"]), "--per-task", "0").returncode == 2
    no_project = run("--project", "424242")
    assert no_project.returncode == 1 and "Label Studio answered 404" in no_project.stderr
    # A project with a task still to search (the shared one may be expanded already, and a source
    # task expanded by an earlier run is not searched again): the API's refusal must show.
    fresh = label_studio.sdk().projects.create(title="simages refused", label_config=CONFIG)
    label_studio.sdk().projects.import_tasks(
        id=fresh.id, request=[{"data": {"image": local_api.image_url("astronaut_resized.jpg")}}]
    )
    env["SIMAGES_API_KEY"] = "sk-wrong-key-0000"
    refused = run("--project", str(fresh.id))
    assert refused.returncode == 1 and "refused: InvalidApiKey (403)" in refused.stderr
    assert "sk-wrong-key-0000" not in refused.stdout + refused.stderr
    assert "Traceback" not in missing.stderr + no_project.stderr + refused.stderr


def test_uploaded_images_download_with_a_personal_access_token(project, label_studio, local_api, tmp_path):
    """A personal access token is a JWT refresh token: the backend exchanges it for access tokens."""
    created = label_studio.post("/api/token/")
    assert created.status_code == 201, created.text
    pat = created.json()["token"]
    (upload_ref,) = [ref for ref in project["tasks"] if ref.startswith("/data/upload/")]
    task = {"id": project["tasks"][upload_ref], "data": {"image": upload_ref}}
    forged = pat[: pat.rindex(".") + 1] + "bm90LXRoZS1zaWduYXR1cmU"  # same claims, wrong signature

    def predict_with(key: str, where: Path) -> dict:
        backend = start_backend(
            where,
            local_api.base_url,
            local_api.api_key,
            LABEL_STUDIO_URL=label_studio.url,
            LABEL_STUDIO_API_KEY=key,
        )
        try:
            response = requests.post(
                f"{backend.url}/predict", json={"tasks": [task], "label_config": CONFIG}, timeout=60
            )
            assert response.status_code == 200, response.text
            (result,) = response.json()["results"]
            return result
        finally:
            backend.stop()

    ok = predict_with(pat, tmp_path / "pat")
    expected = {
        name.title(): tuple(v * 0.5 for v in box) for name, box in coco_boxes(local_api.demo_dir, "horse.jpg")
    }
    assert_boxes_close(pixel_boxes(ok["result"]), expected)

    refused = predict_with(forged, tmp_path / "forged")
    assert "result" not in refused and "refused the personal access token" in refused["error"]
    log = (tmp_path / "forged" / "backend.log").read_text() + (tmp_path / "pat" / "backend.log").read_text()
    assert pat not in log and forged not in log
