"""Two ML backend processes on one Redis (``SIMAGES_CACHE_URL``) behave as one service.

The second backend's identical ``/predict`` is answered from the shared response cache (the local
server sees one search), and the shared usage ledger counts one sent and one cached request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from simages_core import SimilarImagesClient
from tests.redis_support import redis_server  # noqa: F401

from .conftest import CONFIG, pixel_boxes, start_backend

pytestmark = pytest.mark.integration

PASSWORD = "replica-s3cret-pw"


@pytest.fixture
def api(local_api, tmp_path) -> Iterator:
    """A local server of this test's own: its log counts this test's searches."""
    with local_api.start_server(tmp_path / "api", extra_args=("--allow-url-network", "127.0.0.0/8")) as server:
        yield server


def searches(server) -> int:
    """Searches the server has answered (``POST /`` lines; it logs each before answering it)."""
    return sum(" POST / " in line for line in server.log_path.read_text().splitlines())


def predict(backend, task: dict) -> dict:
    response = requests.post(
        f"{backend.url}/predict", json={"tasks": [task], "label_config": CONFIG}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_two_backends_share_one_cache_and_one_ledger(
    api, local_api, redis_server, tmp_path: Path, monkeypatch  # noqa: F811
):
    # A Redis user with a password, as a team's Redis would have: it must never reach a log line.
    redis_server.client().acl_setuser(
        "backends", enabled=True, passwords=[f"+{PASSWORD}"], keys=["simages:*"], commands=["+@all"]
    )
    url = f"redis://backends:{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    shared = {"SIMAGES_CACHE": "1", "SIMAGES_CACHE_URL": url, "LOG_LEVEL": "DEBUG"}
    task = {"id": 1, "data": {"image": f"{api.url}/images/{local_api.record('coffee.jpg').id}"}}
    # Different SIMAGES_HOME: nothing on disk is shared, only Redis.
    with (
        start_backend(tmp_path / "first", api.url, local_api.api_key, **shared) as first,
        start_backend(tmp_path / "second", api.url, local_api.api_key, **shared) as second,
    ):
        answer_first = predict(first, task)
        assert searches(api) == 1
        answer_second = predict(second, task)
        assert searches(api) == 1  # served from the cache the first backend filled
        metrics = requests.get(f"{second.url}/metrics", timeout=5).json()
    assert answer_second["results"] == answer_first["results"]
    (prediction,) = answer_first["results"]
    assert set(pixel_boxes(prediction["result"])) == {"Mug", "Spoon"}
    assert (metrics["api_requests_today"], metrics["served_from_cache_today"]) == (1, 1)
    # The shared ledger, read through the core's UsageLedger API from this process.
    monkeypatch.setenv("SIMAGES_CACHE_URL", url)
    with SimilarImagesClient(api_key=local_api.api_key, base_url=api.url) as reader:
        today = reader.usage.day()
    assert (today.sent, today.cached, today.failed) == (1, 1, 0)
    for name in ("first", "second"):
        log = (tmp_path / name / "backend.log").read_text()
        assert "POST /predict" in log or "predicted 1 tasks" in log
        assert PASSWORD not in log


def test_a_backend_does_not_start_without_its_redis(api, local_api, redis_server, tmp_path: Path):  # noqa: F811
    redis_server.stop()  # nothing listens on its port now
    url = f"redis://cache-user:backend-s3cret@127.0.0.1:{redis_server.port}/0"
    with pytest.raises(RuntimeError, match="exited"):
        start_backend(tmp_path / "down", api.url, local_api.api_key, SIMAGES_CACHE="1", SIMAGES_CACHE_URL=url)
    log = (tmp_path / "down" / "backend.log").read_text()
    assert f"simages-ls: SIMAGES_CACHE_URL: cannot reach Redis at 127.0.0.1:{redis_server.port}" in log
    assert "Traceback" not in log  # one line saying what to fix, not a stack
    assert "backend-s3cret" not in log
