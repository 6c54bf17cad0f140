"""The server's daily quota in a real Redis: one limit across replicas, failures free, fails closed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
import requests

from simages_core.protocol import error_envelope
from simages_server.app import QUOTA_UNAVAILABLE, quota_message
from simages_server.keys import QuotaUnavailable, digest, utc_day
from simages_server.quota_redis import EXPIRY_SECONDS, RedisDailyQuota
from simages_server.testing import ServerProcess, free_port
from tests.redis_support import redis_server  # noqa: F401

pytestmark = pytest.mark.integration

KEY = "redis-quota-test-key-5f3a9c"


def _replica(local_api, tmp_path, name: str, url: str, **kwargs) -> ServerProcess:
    return ServerProcess(
        local_api.index_dir, api_keys=(KEY,), state=url, log_path=tmp_path / f"{name}.log", **kwargs
    )


_SESSIONS = threading.local()
_OPENED: list[requests.Session] = []


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    global _SESSIONS
    yield
    while _OPENED:
        _OPENED.pop().close()
    _SESSIONS = threading.local()


def _search(base_url: str, body: dict | None = None) -> requests.Response:
    # One keep-alive session per thread, as a real client pool: a new connection per request would
    # hit waitress's open-connection limit while closed sockets are still being reaped.
    if not hasattr(_SESSIONS, "http"):
        _SESSIONS.http = requests.Session()
        _SESSIONS.http.trust_env = False  # loopback only, never through a proxy from the environment
        _OPENED.append(_SESSIONS.http)
    return _SESSIONS.http.post(
        base_url + "/", data=json.dumps(body or {"text": "cat"}), headers={"x-api-key": KEY}, timeout=30
    )


def _used(redis_server, key: str = KEY) -> int:  # noqa: F811
    value = redis_server.client().get(f"simages:quota:{utc_day()}:{digest(key)}")
    return int(value) if value is not None else 0


# --- the store on its own -----------------------------------------------------------------


def test_store_reserves_exactly_the_limit_across_threads_and_releases_never_below_zero(redis_server):  # noqa: F811
    quota = RedisDailyQuota(redis_server.url, limit=30)
    try:
        with ThreadPoolExecutor(16) as pool:
            taken = list(pool.map(lambda _: quota.reserve("d1"), range(100)))
        assert taken.count(True) == 30 and quota.used("d1") == 30
        assert quota.used("d2") == 0 and quota.reserve("d2")  # per key
        quota.release("d1")
        assert quota.used("d1") == 29
        for _ in range(3):
            quota.release("d2")
        assert quota.used("d2") == 0
        ttl = redis_server.client().ttl(quota.counter_key("d1"))
        assert EXPIRY_SECONDS - 60 < ttl <= EXPIRY_SECONDS  # counters of past days clean themselves up
        assert quota.description == f"redis at 127.0.0.1:{redis_server.port}"
    finally:
        quota.close()
    unlimited = RedisDailyQuota(redis_server.url, limit=0)
    try:
        assert all(unlimited.reserve("d3") for _ in range(40)) and unlimited.used("d3") == 40
    finally:
        unlimited.close()


def test_store_raises_quota_unavailable_when_redis_is_gone(redis_server):  # noqa: F811
    quota = RedisDailyQuota(redis_server.url, limit=5)
    try:
        redis_server.stop()
        with pytest.raises(QuotaUnavailable, match=f"quota store unavailable: Redis at 127.0.0.1:{redis_server.port}"):
            quota.reserve("d1")
    finally:
        quota.close()


# --- replicas over HTTP -------------------------------------------------------------------


def test_two_replicas_on_one_redis_enforce_one_limit(local_api, redis_server, tmp_path):  # noqa: F811
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(_replica(local_api, tmp_path, f"replica{i}", redis_server.url, daily_limit=50))
            for i in range(2)
        ]
        for replica in replicas:
            health = requests.get(replica.url + "/health", timeout=10).json()
            assert health["quota"] == f"redis at 127.0.0.1:{redis_server.port}"
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda i: _search(replicas[i % 2].url), range(200)))
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 50 and codes.count(402) == 150, sorted(set(codes))
    over = [a.json() for a in answers if a.status_code == 402]
    assert all(body == error_envelope(402, quota_message(50)) for body in over)
    # Both replicas served some of the 50 (the limit is shared, not split or doubled).
    served_by = {i % 2 for i, a in enumerate(answers) if a.status_code == 200}
    assert served_by == {0, 1}
    assert _used(redis_server) == 50


def test_a_request_failing_after_its_reservation_gives_the_unit_back(local_api, redis_server, tmp_path):  # noqa: F811
    with _replica(local_api, tmp_path, "server", redis_server.url, daily_limit=1) as server:
        # Valid JSON, so a unit is reserved; the image is decoded only when the search runs, and fails.
        bad = _search(server.url, {"image": "this is not base64!"})
        assert bad.status_code == 400 and "not valid base64" in bad.json()["error"]
        assert _used(redis_server) == 0
        assert _search(server.url).status_code == 200  # the one unit of the day is still there
        assert _used(redis_server) == 1
        assert _search(server.url).status_code == 402


@pytest.mark.parametrize("scheme", ["redis", "unix"])
def test_unreachable_redis_at_start_is_a_one_line_error(local_api, tmp_path, scheme):
    port = free_port()
    if scheme == "redis":
        url, where = f"redis://:hunter2-secret@127.0.0.1:{port}/0", f"127.0.0.1:{port}"
    else:
        url, where = f"unix://{tmp_path}/no-redis.sock", f"unix:{tmp_path}/no-redis.sock"
    args = [
        sys.executable, "-m", "simages_server", "serve", "--index", str(local_api.index_dir),
        "--port", str(free_port()), "--state", url,
    ]  # fmt: skip
    out = subprocess.run(
        args,
        env={**os.environ, "SIMAGES_SERVER_API_KEYS": KEY},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("simages-server:")]
    assert len(errors) == 1, out.stderr
    assert "quota store unavailable" in errors[0] and f"Redis at {where}" in errors[0]
    assert "Traceback" not in out.stderr and "hunter2-secret" not in out.stderr + out.stdout


def test_redis_going_away_mid_run_fails_closed_with_503_and_recovers(local_api, redis_server, tmp_path):  # noqa: F811
    with _replica(local_api, tmp_path, "server", redis_server.url, daily_limit=100) as server:
        assert _search(server.url).status_code == 200
        redis_server.stop()
        down = _search(server.url)
        assert down.status_code == 503 and down.json() == error_envelope(503, QUOTA_UNAVAILABLE)
        health = requests.get(server.url + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["quota"] == f"redis at 127.0.0.1:{redis_server.port}"
        assert server.running
        redis_server.start()  # the same port, empty (no persistence in the test Redis)
        deadline = time.monotonic() + 30
        while (status := _search(server.url).status_code) != 200 and time.monotonic() < deadline:
            assert status == 503
            time.sleep(0.1)  # polling the server until it reaches Redis again: no event to wait on
        assert status == 200
        assert _used(redis_server) == 1
    log = (tmp_path / "server.log").read_text()
    assert "quota store unavailable" in log and "POST / 500 " not in log


def test_redis_holds_key_digests_only(local_api, redis_server, tmp_path):  # noqa: F811
    with _replica(local_api, tmp_path, "server", redis_server.url, daily_limit=5) as server:
        assert [_search(server.url).status_code for _ in range(2)] == [200, 200]
        assert _search(server.url, {"image": "not base64 either"}).status_code == 400
    client = redis_server.client()
    names = list(client.scan_iter("*"))
    assert names == [f"simages:quota:{utc_day()}:{digest(KEY)}".encode()]
    for name in names:
        assert KEY.encode() not in name
        assert KEY.encode() not in client.dump(name)  # the value, in whatever type it is stored


def test_default_server_reports_sqlite_quota(local_api):
    assert requests.get(local_api.base_url + "/health", timeout=10).json()["quota"] == "sqlite"
