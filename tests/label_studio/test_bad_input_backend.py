"""Bad input to the ML backend, over real HTTP: every case gets a 4xx (or its task's own error) in JSON.

Each case is sent to the real backend process; the answer must name what was
wrong, and ``/health`` must still answer afterwards (the process keeps serving).
Where Label Studio's protocol wants per-task errors (a task's own ``data``), the
answer is 200 with an error entry for that task while the good task of the same
request keeps its prediction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from simages_label_studio.wire import MAX_BODY_BYTES, MAX_JSON_DEPTH
from simages_server.testing import free_port

from .conftest import CONFIG, start_backend

pytestmark = pytest.mark.integration

JSON = "application/json"
NO_IMAGE_CONFIG = (
    "<View><Text name='t' value='$text'/><Choices name='c' toName='t'><Choice value='a'/></Choices></View>"
)
UNKNOWN_TAGS_CONFIG = "<View><Image name='i' value='$image'/><Polygon name='p' toName='i'/><Foo/></View>"
DANGLING_CONFIG = (
    "<View><Image name='i' value='$image'/><Choices name='c'><Choice value='cat'/></Choices></View>"
)


@dataclass(frozen=True)
class Case:
    path: str
    body: bytes
    status: int
    message: str
    content_type: str | None = JSON


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _predict(tasks: object = None, label_config: object = CONFIG, **extra: object) -> bytes:
    body: dict[str, object] = {"label_config": label_config, **extra}
    if tasks is not None:
        body["tasks"] = tasks
    return _json(body)


DEEP = b"[" * 50_000 + b"]" * 50_000
JUST_TOO_DEEP = _json(
    {"tasks": [], "label_config": CONFIG, "params": json.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)}
)

CASES = {
    # --- /predict: the body itself
    "predict-not-json": Case("/predict", b"tasks=1&label_config=x", 400, "expected a JSON body, but it is not valid JSON"),
    "predict-empty-body": Case("/predict", b"", 400, "got an empty body"),
    "predict-json-array": Case("/predict", b"[1, 2]", 400, "expected a JSON object with 'tasks' and 'label_config', got a JSON array"),
    "predict-json-string": Case("/predict", b'"tasks"', 400, "got a JSON string"),
    "predict-nested-50000": Case("/predict", DEEP, 400, f"nested at most {MAX_JSON_DEPTH} levels"),
    "predict-params-too-deep": Case("/predict", JUST_TOO_DEEP, 400, f"nested at most {MAX_JSON_DEPTH} levels"),
    "predict-not-utf8": Case("/predict", b'{"tasks": "\xff\xfe\xfa"}', 400, "not valid JSON"),
    "predict-wrong-content-type": Case("/predict", _predict([]), 415, "Content-Type: application/json, got 'text/plain'", "text/plain"),
    "predict-no-content-type": Case("/predict", _predict([]), 415, "got 'no Content-Type'", None),
    # --- /predict: fields
    "predict-tasks-missing": Case("/predict", _predict(), 400, "'tasks' must be a list of task objects; it is missing"),
    "predict-tasks-not-a-list": Case("/predict", _predict({"id": 1}), 400, "'tasks' must be a list of task objects; got a JSON object"),
    "predict-tasks-of-strings": Case("/predict", _predict(["a", "b"]), 400, "tasks[0] is a JSON string"),
    "predict-tasks-with-null": Case("/predict", _predict([{"id": 1, "data": {}}, None]), 400, "tasks[1] is a JSON null"),
    "predict-label-config-missing": Case("/predict", _json({"tasks": []}), 400, "'label_config' must be the project's label config (XML string); it is missing"),
    "predict-label-config-a-number": Case("/predict", _predict([], 12), 400, "'label_config' must be the project's label config (XML string); got a JSON number"),
    "predict-label-config-empty": Case("/predict", _predict([], "  "), 400, "'label_config' must be the project's label config (XML string); it is empty"),
    "predict-label-config-not-xml": Case("/predict", _predict([{"id": 1, "data": {}}], "<View><Image name='i'"), 400, "'label_config' is not a label config"),
    "predict-label-config-plain-text": Case("/predict", _predict([], "RectangleLabels please"), 400, "'label_config' is not a label config"),
    "predict-params-not-an-object": Case("/predict", _predict([], params=[1, 2]), 400, "'params' must be a JSON object when given, got a JSON array"),
    # --- /setup
    "setup-not-json": Case("/setup", b"<View/>", 400, "expected a JSON body"),
    "setup-json-array": Case("/setup", b'[{"schema": "<View/>"}]', 400, "expected a JSON object with the project's label config in 'schema'"),
    "setup-schema-missing": Case("/setup", _json({"project": "1.1"}), 400, "'schema' must be the project's label config (XML string); it is missing"),
    "setup-schema-a-list": Case("/setup", _json({"schema": ["<View/>"]}), 400, "'schema' must be the project's label config (XML string); got a JSON array"),
    "setup-schema-malformed": Case("/setup", _json({"schema": "<View><Image name='i' value='$image'></View>"}), 400, "'schema' is not a label config"),
    "setup-nested-50000": Case("/setup", DEEP, 400, "nested at most"),
    "setup-wrong-content-type": Case("/setup", _json({"schema": CONFIG}), 415, "got 'application/x-www-form-urlencoded'", "application/x-www-form-urlencoded"),
    # --- /webhook
    "webhook-not-json": Case("/webhook", b"ANNOTATION_CREATED", 400, "expected a JSON body"),
    "webhook-empty-body": Case("/webhook", b" ", 400, "got an empty body"),
    "webhook-json-array": Case("/webhook", b'["ANNOTATION_CREATED"]', 400, "expected a JSON object with the event name in 'action', got a JSON array"),
    "webhook-action-missing": Case("/webhook", _json({"project": {"id": 1}}), 400, "'action' must be the event name (a string); it is missing"),
    "webhook-action-a-number": Case("/webhook", _json({"action": 3}), 400, "'action' must be the event name (a string); got a JSON number"),
    "webhook-nested-50000": Case("/webhook", b'{"action": "X", "data": ' + DEEP + b"}", 400, "nested at most"),
}  # fmt: skip


@pytest.fixture(scope="module")
def backend(local_api, tmp_path_factory) -> Iterator:
    process = start_backend(tmp_path_factory.mktemp("bad-input"), local_api.base_url, local_api.api_key)
    yield process
    process.stop()


def _post(backend, case: Case) -> requests.Response:
    headers = {"content-type": case.content_type} if case.content_type else {}
    # requests adds no content-type for raw bytes, so "no Content-Type" really sends none.
    return requests.post(backend.url + case.path, data=case.body, headers=headers, timeout=30)


def _assert_still_serving(backend) -> None:
    health = requests.get(f"{backend.url}/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "UP"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request_gets_a_json_4xx_naming_the_problem(backend, name):
    case = CASES[name]
    response = _post(backend, case)
    assert response.status_code == case.status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == case.status
    assert case.message in body["error"], body["error"]
    assert "Traceback" not in response.text
    _assert_still_serving(backend)


TASK_CASES = {
    "data-a-string": ({"id": 11, "data": "http://127.0.0.1/a.jpg"}, "the task's 'data' must be a JSON object, got str"),
    "data-a-list": ({"id": 11, "data": ["http://127.0.0.1/a.jpg"]}, "the task's 'data' must be a JSON object, got list"),
    "data-missing": ({"id": 11}, "no image in data['image']"),
    "image-a-number": ({"id": 11, "data": {"image": 42}}, "no image in data['image']: expected a URL or a Label Studio path, got int"),
    "image-an-object": ({"id": 11, "data": {"image": {"url": "x"}}}, "got dict"),
    "image-not-http": ({"id": 11, "data": {"image": "file:///etc/passwd"}}, "neither an http(s) URL nor a Label Studio file"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(TASK_CASES))
def test_a_bad_task_gets_its_own_error_and_the_good_task_its_prediction(backend, local_api, name):
    bad, message = TASK_CASES[name]
    good = {"id": 12, "data": {"image": local_api.image_url("chelsea.jpg")}}
    response = requests.post(
        f"{backend.url}/predict", json={"tasks": [bad, good], "label_config": CONFIG}, timeout=60
    )
    assert response.status_code == 200, response.text[:500]
    first, second = response.json()["results"]
    assert "result" not in first and first["error"].startswith("task 11: ")
    assert message in first["error"], first["error"]
    assert "error" not in second and any(r["type"] == "rectanglelabels" for r in second["result"])
    _assert_still_serving(backend)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (NO_IMAGE_CONFIG, "the label config has no <Image> tag"),
        (UNKNOWN_TAGS_CONFIG, "'p' is not served"),
        (DANGLING_CONFIG, "labels an <Image> (check their toName)"),
    ],
)
def test_a_config_it_cannot_serve_says_why_and_predicts_nothing(backend, config, problem):
    tasks = [{"id": 1, "data": {"image": "http://127.0.0.1/a.jpg", "text": "x"}}]
    response = requests.post(
        f"{backend.url}/predict", json={"tasks": tasks, "label_config": config}, timeout=30
    )
    assert response.status_code == 200
    body = response.json()
    assert [r["result"] for r in body["results"]] == [[]]
    assert any(problem in warning for warning in body["warnings"]), body["warnings"]
    setup = requests.post(f"{backend.url}/setup", json={"schema": config}, timeout=30)
    assert setup.status_code == 200 and any(problem in w for w in setup.json()["warnings"])
    _assert_still_serving(backend)


def test_a_body_over_the_cap_is_413(backend):
    huge = (
        b'{"tasks": [], "label_config": "<View/>", "params": {"context": "' + b"x" * MAX_BODY_BYTES + b'"}}'
    )
    response = requests.post(f"{backend.url}/predict", data=huge, headers={"content-type": JSON}, timeout=60)
    assert response.status_code == 413
    assert f"larger than {MAX_BODY_BYTES} bytes" in response.json()["error"]
    _assert_still_serving(backend)


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/predict", 405, "GET is not allowed on /predict"),
        ("POST", "/nowhere", 404, "not found: /nowhere"),
    ],
)
def test_wrong_method_or_path_is_json(backend, method, path, status, message):
    response = requests.request(method, backend.url + path, timeout=5)
    assert response.status_code == status and message in response.json()["error"]


def test_label_studio_unreachable_fails_only_its_task(local_api, tmp_path):
    """Label Studio down (a closed loopback port): the uploaded image's task fails, the other is predicted."""
    closed = f"http://127.0.0.1:{free_port()}"
    backend = start_backend(
        tmp_path,
        local_api.base_url,
        local_api.api_key,
        LABEL_STUDIO_URL=closed,
        LABEL_STUDIO_API_KEY="legacy-token",
    )
    try:
        tasks = [
            {"id": 21, "data": {"image": "/data/upload/1/cat.jpg"}},
            {"id": 22, "data": {"image": local_api.image_url("chelsea.jpg")}},
        ]
        response = requests.post(
            f"{backend.url}/predict", json={"tasks": tasks, "label_config": CONFIG}, timeout=60
        )
        assert response.status_code == 200, response.text[:500]
        first, second = response.json()["results"]
        assert "result" not in first and first["error"].startswith("task 21: cannot download")
        assert "/data/upload/1/cat.jpg" in first["error"] and "legacy-token" not in response.text
        assert any(r["type"] == "rectanglelabels" for r in second["result"])
        _assert_still_serving(backend)
    finally:
        backend.stop()
