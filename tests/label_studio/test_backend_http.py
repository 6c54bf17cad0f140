"""The ML backend as Label Studio talks to it: real HTTP over loopback, against the local server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from simages_label_studio import __version__

from .conftest import CONFIG, choices, coco_boxes, pixel_boxes, start_backend

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(local_api, tmp_path_factory) -> Iterator:
    """A local server that may fetch task images from loopback (where the static image server is)."""
    tmp = tmp_path_factory.mktemp("api")
    server = local_api.start_server(tmp, extra_args=("--allow-url-network", "127.0.0.0/8"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def backend(api, local_api, tmp_path_factory) -> Iterator:
    tmp = tmp_path_factory.mktemp("backend")
    # Task images on the loopback static server: allowed like the API's --allow-url-network above.
    process = start_backend(tmp, api.url, local_api.api_key, SIMAGES_ALLOW_URL_NETWORKS="127.0.0.0/8")
    yield process
    process.stop()


def predict(backend, tasks, config=CONFIG, **kw) -> requests.Response:
    return requests.post(
        f"{backend.url}/predict", json={"tasks": tasks, "label_config": config}, timeout=60, **kw
    )


def test_health_and_setup(backend, api):
    health = requests.get(f"{backend.url}/health", timeout=5).json()
    assert health["status"] == "UP" and health["has_api_key"] is True and health["api_url"] == api.url
    setup = requests.post(f"{backend.url}/setup", json={"schema": CONFIG, "project": "1.1"}, timeout=5).json()
    host = api.url.removeprefix("http://")
    assert setup["model_version"].startswith(f"{host}/coco_yolov7/labels-")
    assert setup["model_version"].endswith(f"/backend-{__version__}")
    versions = requests.get(f"{backend.url}/versions", timeout=5).json()["versions"]
    assert setup["model_version"] in versions


def test_boxes_on_an_unindexed_copy_are_within_a_pixel_of_the_coco_boxes(backend, local_api, static_images):
    """A task image the index has never seen: a half-size, recompressed copy of the coffee photo."""
    base, folder = static_images
    with Image.open(local_api.images_dir / "coffee.jpg") as im:
        im.resize((300, 200), Image.Resampling.LANCZOS).save(folder / "coffee_half.jpg", quality=70)
    response = predict(backend, [{"id": 1, "data": {"image": f"{base}/coffee_half.jpg"}}])
    assert response.status_code == 200, response.text
    (pred,) = response.json()["results"]
    boxes = pixel_boxes(pred["result"])
    expected = {
        ("Mug" if name == "cup" else name.title()): box
        for name, box in coco_boxes(local_api.demo_dir, "coffee.jpg")
    }
    assert set(boxes) == set(expected) == {"Mug", "Spoon"}
    for label, box in expected.items():
        assert boxes[label] == pytest.approx([v / 2 for v in box], abs=1.0), label
    assert {r["original_width"] for r in pred["result"] if r["type"] == "rectanglelabels"} == {300}
    assert choices(pred["result"]) == ["Coffee"]
    assert 0 < pred["score"] <= 1 and pred["model_version"] == response.json()["model_version"]


@pytest.mark.parametrize("file_name", ["astronaut_resized.jpg", "chelsea_cropped.jpg", "horse_flipped.jpg"])
def test_boxes_of_indexed_variants(backend, local_api, file_name):
    response = predict(backend, [{"id": 7, "data": {"image": local_api.image_url(file_name)}}])
    (pred,) = response.json()["results"]
    boxes = pixel_boxes(pred["result"])
    (name, box), *_ = coco_boxes(local_api.demo_dir, file_name)
    assert boxes[name.title()] == pytest.approx(box, abs=1.0)
    assert name.title() in choices(pred["result"]) or name == "horse"  # no "Horse" choice in the config


def test_an_image_without_a_near_duplicate_gets_no_boxes(backend, local_api, static_images):
    base, folder = static_images
    # The cat photo squeezed to a square: similar, but its boxes would be misplaced.
    with Image.open(local_api.images_dir / "chelsea.jpg") as im:
        im.resize((300, 300)).save(folder / "chelsea_square.jpg", quality=90)
    (pred,) = predict(backend, [{"id": 3, "data": {"image": f"{base}/chelsea_square.jpg"}}]).json()["results"]
    assert pixel_boxes(pred["result"]) == {}
    assert choices(pred["result"]) == ["Cat"]  # similar images still vote


def test_a_photo_without_objects_gets_an_empty_prediction(backend, local_api):
    (pred,) = predict(backend, [{"id": 4, "data": {"image": local_api.image_url("brick.jpg")}}]).json()[
        "results"
    ]
    assert pred["result"] == [] and pred["score"] == 0.0


def test_a_failing_task_loses_nothing_else(backend, local_api, static_images):
    base, _ = static_images
    tasks = [
        {"id": 1, "data": {"image": local_api.image_url("coffee.jpg")}},
        {"id": 2, "data": {"image": f"{base}/missing.jpg"}},
        {"id": 3, "data": {"text": "no image key"}},
        {"id": 4, "data": {"image": "/data/upload/1/photo.jpg"}},  # no LABEL_STUDIO_URL configured
        {"id": 5, "data": {"image": local_api.image_url("chelsea.jpg")}},
    ]
    results = predict(backend, tasks).json()["results"]
    assert len(results) == 5
    assert "result" in results[0] and "result" in results[4]
    assert pixel_boxes(results[4]["result"]).keys() == {"Cat"}
    # No "result": Label Studio stores nothing for these and retries them next time.
    assert all("result" not in results[i] for i in (1, 2, 3))
    # The API's own message, passed on; the local server no longer says what the URL answered (SSRF).
    assert "'url' could not be fetched" in results[1]["error"]
    assert "no image in data['image']" in results[2]["error"]
    assert "LABEL_STUDIO_URL" in results[3]["error"]


def test_choices_only_and_several_images(backend, local_api):
    config = """<View>
      <Image name="a" value="$a"/><Image name="b" value="$b"/>
      <Choices name="ca" toName="a"><Choice value="cat"/><Choice value="person"/></Choices>
      <RectangleLabels name="rb" toName="b"><Label value="horse"/></RectangleLabels>
    </View>"""
    task = {
        "id": 1,
        "data": {"a": local_api.image_url("chelsea_warmer.jpg"), "b": local_api.image_url("horse.jpg")},
    }
    (pred,) = predict(backend, [task], config).json()["results"]
    by_control = {r["from_name"]: r for r in pred["result"]}
    assert by_control["ca"]["value"]["choices"] == ["cat"] and by_control["ca"]["to_name"] == "a"
    assert by_control["rb"]["value"]["rectanglelabels"] == ["horse"] and by_control["rb"]["to_name"] == "b"


def test_a_config_it_cannot_serve_gets_empty_predictions_not_an_error(backend):
    config = "<View><Text name='t' value='$text'/><Choices name='c' toName='t'><Choice value='a'/></Choices></View>"
    response = predict(
        backend, [{"id": 1, "data": {"text": "hi"}}, {"id": 2, "data": {"text": "yo"}}], config
    )
    assert response.status_code == 200
    assert [r["result"] for r in response.json()["results"]] == [[], []]
    assert "has no <Image> tag" in backend.log_path.read_text()


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/predict", b"not json", "expected a JSON body"),
        ("/predict", b'{"tasks": "x", "label_config": "<View/>"}', "'tasks' must be a list"),
        ("/predict", b'{"tasks": []}', "'label_config' must be"),
        ("/setup", b'{"project": "1"}', "'schema'"),
    ],
)
def test_malformed_requests_get_400(backend, path, body, message):
    response = requests.post(
        backend.url + path, data=body, headers={"content-type": "application/json"}, timeout=5
    )
    assert response.status_code == 400 and message in response.json()["error"]
    assert requests.get(f"{backend.url}/health", timeout=5).ok


def test_webhook_acknowledges_events_it_does_not_learn_from_and_refuses_broken_ones(backend):
    # Learning from annotations: tests/label_studio/test_learning*.py.
    response = requests.post(
        f"{backend.url}/webhook", json={"action": "PROJECT_UPDATED", "project": {}}, timeout=5
    )
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    broken = requests.post(
        f"{backend.url}/webhook", json={"action": "ANNOTATION_CREATED", "project": {}}, timeout=5
    )
    assert broken.status_code == 400 and "'project.id' must be the project's id" in broken.json()["error"]


def test_daily_limit_is_reported_once_with_the_api_message(local_api, tmp_path: Path):
    with local_api.start_server(tmp_path / "api", daily_limit=1) as api:
        backend = start_backend(tmp_path / "be", api.url, local_api.api_key)
        try:
            urls = [f"{api.url}/images/{local_api.record(f).id}" for f in ("coffee.jpg", "horse.jpg")]
            tasks = [{"id": i, "data": {"image": url}} for i, url in enumerate(urls)]
            first = predict(backend, tasks[:1])
            assert first.status_code == 200 and "result" in first.json()["results"][0]
            refused = predict(backend, tasks)
            assert refused.status_code == 402
            assert refused.json()["error"].startswith("QuotaExceeded (402): ")
            log = (tmp_path / "be" / "backend.log").read_text()
            assert log.count("QuotaExceeded (402)") == 1 and "Traceback" not in log
        finally:
            backend.stop()


def test_invalid_key_is_403_and_the_key_is_never_logged(api, local_api, tmp_path: Path):
    backend = start_backend(tmp_path, api.url, "sk-wrong-key-123456")
    try:
        tasks = [{"id": i, "data": {"image": local_api.image_url("coffee.jpg")}} for i in range(3)]
        response = predict(backend, tasks)
        assert response.status_code == 403 and "InvalidApiKey (403)" in response.json()["error"]
        log = (tmp_path / "backend.log").read_text()
        assert log.count("InvalidApiKey (403)") == 1
        assert "sk-wrong-key-123456" not in log + response.text
    finally:
        backend.stop()


def test_basic_auth(api, local_api, tmp_path: Path):
    backend = start_backend(
        tmp_path, api.url, local_api.api_key, BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="pw-123"
    )
    try:
        task = [{"id": 1, "data": {"image": local_api.image_url("coffee.jpg")}}]
        assert predict(backend, task).status_code == 401
        assert predict(backend, task, auth=("ls", "wrong")).status_code == 401
        assert predict(backend, task, auth=("ls", "pw-123")).status_code == 200
        assert requests.get(f"{backend.url}/health", timeout=5).ok  # health checks need no credentials
    finally:
        backend.stop()
