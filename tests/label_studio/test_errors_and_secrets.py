"""Unexpected errors answer a JSON 500 and are logged once; credentials in URLs never leave the process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from simages_label_studio import _wsgi
from simages_label_studio.context import Redactor, public_url, redactor_for
from simages_label_studio.settings import BackendSettings
from simages_server.testing import free_port

from .conftest import CONFIG, start_backend

pytestmark = pytest.mark.integration

SECRET = "pw-secret-9731"


@pytest.fixture
def app_with_a_bug(tmp_path: Path, monkeypatch) -> Iterator[tuple[str, BackendSettings]]:
    """The real app on loopback, plus one route that fails the way a bug would."""
    monkeypatch.setenv("SIMAGES_HOME", str(tmp_path))
    settings = BackendSettings(
        api_url=f"http://user:{SECRET}@127.0.0.1:9", cache=False, api_key="sk-test-123"
    )
    app = _wsgi.create_app(settings)

    def broken() -> str:
        raise RuntimeError(f"exploded while calling http://user:{SECRET}@127.0.0.1:9")

    app.add_url_rule("/broken", view_func=broken, methods=["POST"])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", settings
    finally:
        server.shutdown()
        thread.join(5)
        app.config["SIMAGES_CONTEXT"].close()


def test_an_unexpected_error_is_a_json_500_logged_once_without_secrets(app_with_a_bug, caplog):
    url, settings = app_with_a_bug
    with caplog.at_level(logging.ERROR, logger="simages_label_studio"):
        response = requests.post(f"{url}/broken", timeout=10)
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal error in the ML backend; its log has the details",
        "status": 500,
    }
    records = [r for r in caplog.records if "unexpected error on POST /broken" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is not None
    # What the served process's log handler writes (cli installs this filter on it).
    record = records[0]
    redactor_for(settings).filter(record)
    written = logging.Formatter("%(message)s").format(record)
    assert "Traceback" in written and "RuntimeError: exploded while calling http://127.0.0.1:9" in written
    assert SECRET not in written
    # The process keeps serving, and shows the API URL without its credentials.
    health = requests.get(f"{url}/health", timeout=5).json()
    assert health["api_url"] == "http://127.0.0.1:9"
    setup = requests.post(f"{url}/setup", json={"schema": CONFIG}, timeout=5).json()
    assert setup["model_version"].startswith("127.0.0.1:9/coco_yolov7/") and SECRET not in str(setup)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pass@host:8080/api", "http://host:8080/api"),
        ("https://token@host", "https://host"),
        ("http://host:1/x?q=a@b", "http://host:1/x?q=a@b"),  # an @ in the query is not userinfo
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
    ],
)
def test_public_url_drops_only_the_userinfo(url, shown):
    assert public_url(url) == shown


def test_the_redactor_removes_userinfo_keys_and_encoded_passwords():
    settings = BackendSettings(
        api_url="http://me:p%40ss-word@api.example",
        api_key="sk-key-456",
        label_studio_url="http://ls:ls-pass-1@ls.example",
        label_studio_api_key="ls-token-789",
    )
    redact = redactor_for(settings)
    text = "POST http://me:p%40ss-word@api.example (sk-key-456, p@ss-word) then http://ls:ls-pass-1@ls.example ls-token-789"
    cleaned = redact(text)
    for secret in ("p%40ss-word", "p@ss-word", "sk-key-456", "ls-pass-1", "ls-token-789"):
        assert secret not in cleaned
    assert "http://api.example" in cleaned and "http://ls.example" in cleaned
    assert Redactor([])("unchanged") == "unchanged"


def test_userinfo_in_the_api_url_never_reaches_answers_or_the_log(local_api, tmp_path: Path):
    """The API's port is closed: every task fails with a transport error that names the URL."""
    api_url = f"http://user:{SECRET}@127.0.0.1:{free_port()}"
    backend = start_backend(tmp_path, api_url, local_api.api_key)
    try:
        health = requests.get(f"{backend.url}/health", timeout=5)
        setup = requests.post(f"{backend.url}/setup", json={"schema": CONFIG}, timeout=5)
        tasks = [{"id": 1, "data": {"image": "http://127.0.0.1:9/a.jpg"}}]
        predict = requests.post(
            f"{backend.url}/predict", json={"tasks": tasks, "label_config": CONFIG}, timeout=120
        )
        assert health.ok and setup.ok and predict.status_code == 200
        (entry,) = predict.json()["results"]
        assert entry["error"].startswith("task 1: ") and "127.0.0.1" in entry["error"]
        log = (tmp_path / "backend.log").read_text()
        assert "serving on" in log
        for text in (health.text, setup.text, predict.text, log):
            assert SECRET not in text and "user:" not in text
    finally:
        backend.stop()
