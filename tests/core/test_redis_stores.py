"""The shared response cache and usage ledger in a real Redis (``SIMAGES_CACHE_URL``).

Against a real ``redis-server`` on loopback (``tests/redis_support.py``) and the real local
server (``local_api``): same keys and values as the disk cache, TTL, the size bound, counts
across processes, secrets kept out of every message, and what happens when Redis is away.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import diskcache
import pytest

import simages_core as sc
from simages_core._config import ENV_CACHE_URL, parse_shared_store_url
from simages_core._redis_stores import (
    CACHE_PREFIX,
    USAGE_PREFIX,
    RedisResponseCache,
    RedisUsageLedger,
    SharedStoreError,
    SharedStoreUnavailable,
    connect,
)
from simages_core.cli import main as simages_cli
from tests.redis_support import RedisProcess, redis_server  # noqa: F401

pytestmark = pytest.mark.integration

ENTRY_PREFIX = CACHE_PREFIX + "r:"
PASSWORD = "s3cret-redis-pw"


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll a state until it holds (never a fixed sleep before asserting)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def shared_env(redis_server, monkeypatch) -> RedisProcess:  # noqa: F811
    monkeypatch.setenv(ENV_CACHE_URL, redis_server.url)
    return redis_server


def client_for(local_api, **kwargs) -> sc.SimilarImagesClient:
    return sc.SimilarImagesClient(api_key=local_api.api_key, base_url=local_api.base_url, **kwargs)


def entry_keys(server: RedisProcess) -> list[str]:
    return sorted(k.decode() for k in server.client().scan_iter(match=ENTRY_PREFIX + "*"))


def answers(cache) -> bool:
    try:
        len(cache)
    except SharedStoreError:
        return False
    return True


def stored_bytes(server: RedisProcess) -> int:
    """What the entries in Redis really hold: each value plus its key."""
    redis = server.client()
    return sum(len(k) + len(redis.get(k) or b"") for k in redis.scan_iter(match=ENTRY_PREFIX + "*"))


def result_for(n: int, padding: int = 0) -> sc.SearchResult:
    image = sc.SimilarImage(
        url=f"https://img.example/{n}.jpg" + "x" * padding, score=0.5, thumbnail_url="", id=str(n)
    )
    return sc.SearchResult(images=(image,), info={})


def request_for(n: int) -> sc.SearchRequest:
    return sc.SearchRequest(text=f"query {n}")


# --- the same cache, in Redis ----------------------------------------------------------


def test_same_key_and_value_as_the_disk_cache(local_api, shared_env, tmp_path):
    with client_for(local_api, cache=tmp_path / "disk", usage=None) as on_disk:
        on_disk.search(text="a cat on a sofa", num_similar=3, labels=True)
    with client_for(local_api) as shared:
        assert type(shared.cache) is RedisResponseCache and type(shared.usage) is RedisUsageLedger
        assert not shared.search(text="a cat on a sofa", num_similar=3, labels=True).from_cache
        again = shared.search(text="a cat on a sofa", num_similar=3, labels=True)
    assert again.from_cache and len(again) == 3 and again.labels_requested
    disk = diskcache.Cache(str(tmp_path / "disk"))
    try:
        (disk_key,) = list(disk.iterkeys())
        disk_value = disk[disk_key]
    finally:
        disk.close()
    assert entry_keys(shared_env) == [ENTRY_PREFIX + disk_key]
    assert json.loads(shared_env.client().get(ENTRY_PREFIX + disk_key)) == disk_value


def test_ttl_is_honoured(local_api, shared_env, monkeypatch):
    monkeypatch.setenv("SIMAGES_CACHE_TTL", "1")
    with client_for(local_api) as client:
        client.search(text="horse")
        (key,) = entry_keys(shared_env)
        assert 0 < shared_env.client().pttl(key) <= 1000
        assert client.search(text="horse").from_cache
        wait_until(lambda: not entry_keys(shared_env), what="the cached answer to expire")
        assert not client.search(text="horse").from_cache
        # The expired entry's bytes left the running total when the next answer was stored.
        assert client.cache.stored_bytes() == stored_bytes(shared_env) > 0
        today = client.usage_today()
    assert (today.sent, today.cached) == (2, 1)


def test_size_bound_evicts_oldest_first_and_the_total_stays_within_it(shared_env):
    store = connect(parse_shared_store_url(shared_env.url))
    probe = RedisResponseCache(store, size_limit=10**9)
    probe.put("scope", request_for(0), result_for(0, padding=900))
    entry_size = probe.stored_bytes()
    probe.clear()
    assert probe.stored_bytes() == 0 and len(probe) == 0
    cache = RedisResponseCache(store, size_limit=entry_size * 5 + entry_size // 2)  # room for five
    for n in range(12):
        cache.put("scope", request_for(n), result_for(n, padding=900))
        assert cache.stored_bytes() <= cache.size_limit
    assert len(cache) == 5
    assert [n for n in range(12) if cache.get("scope", request_for(n)) is not None] == [7, 8, 9, 10, 11]
    # Storing an answer again replaces it (its old size leaves the total) and makes it the newest.
    cache.put("scope", request_for(7), result_for(7, padding=900))
    cache.put("scope", request_for(12), result_for(12, padding=900))
    assert [n for n in range(13) if cache.get("scope", request_for(n)) is not None] == [7, 9, 10, 11, 12]
    assert cache.stored_bytes() == stored_bytes(shared_env)
    # An answer larger than the whole bound is not kept, and does not push the total over it.
    cache.put("scope", request_for(99), result_for(99, padding=entry_size * 6))
    assert cache.get("scope", request_for(99)) is None and cache.stored_bytes() <= cache.size_limit
    cache.close()


def test_concurrent_stores_keep_the_byte_total_exact(shared_env):
    """Three writers at once: the running total equals the bytes really stored, and stays in bound."""
    store = connect(parse_shared_store_url(shared_env.url))
    cache = RedisResponseCache(store, size_limit=40_000)

    def writer(offset: int) -> None:
        for n in range(offset, offset + 60):
            cache.put("scope", request_for(n), result_for(n, padding=(n * 37) % 700))

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 1000, 2000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stored_bytes(shared_env) == cache.stored_bytes() <= 40_000
    assert len(entry_keys(shared_env)) == len(cache) > 10
    cache.close()


def test_every_key_lives_under_the_simages_prefix(local_api, shared_env):
    with client_for(local_api) as client:
        client.search(text="clock")
        client.search(text="clock")
    keys = [k.decode() for k in shared_env.client().scan_iter()]
    assert keys and all(k.startswith(("simages:cache:", "simages:usage:")) for k in keys), keys
    (usage_key,) = [k for k in keys if k.startswith(USAGE_PREFIX)]
    ttl = shared_env.client().ttl(usage_key)
    assert 399 * 24 * 3600 < ttl <= 400 * 24 * 3600  # counters expire, the ledger does not grow forever


# --- the shared ledger -------------------------------------------------------------------

_CHILD = """
import sys
import simages_core as sc
from simages_core._usage import UsageEvent
with sc.SimilarImagesClient() as client:
    for text in sys.argv[1:]:
        if text.startswith("record:"):
            for _ in range(int(text.split(":")[1])):
                client.usage.record(UsageEvent.FAILED)
        else:
            print(client.search(text=text).from_cache)
"""


def _child_env(local_api, redis_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMAGES_", "TERNAUS_"))}
    return {
        **env,
        "SIMAGES_API_URL": local_api.base_url,
        "SIMAGES_API_KEY": local_api.api_key,
        "SIMAGES_HOME": str(home),
        ENV_CACHE_URL: redis_url,
    }


def test_processes_share_the_cache_and_count_in_one_ledger(local_api, shared_env, tmp_path):
    def run(home: str, *args: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, *args],
            env=_child_env(local_api, shared_env.url, tmp_path / home),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert run("first", "cat", "dog") == ["False", "False"]
    assert run("second", "cat", "horse") == ["True", "False"]  # another process, the same cache
    # Two processes counting at once: HINCRBY is atomic, no count is lost.
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, "record:150"],
            env=_child_env(local_api, shared_env.url, tmp_path / f"counter-{n}"),
        )
        for n in range(2)
    ]
    try:
        assert [child.wait(timeout=120) for child in children] == [0, 0]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    with client_for(local_api) as reader:
        today = reader.usage_today()
    assert (today.sent, today.cached, today.failed) == (3, 1, 300)


def test_simages_usage_shows_the_shared_ledger(local_api, shared_env):
    with client_for(local_api) as client:
        client.search(text="rocket")
        client.search(text="rocket")
    out, err = io.StringIO(), io.StringIO()
    assert simages_cli(["usage", "--days", "2"], out=out, err=err) == 0, err.getvalue()
    assert out.getvalue().splitlines()[-1].split()[1:] == ["1", "1", "0"]


def test_cache_off_still_counts_in_the_shared_ledger(local_api, shared_env, monkeypatch):
    monkeypatch.setenv("SIMAGES_CACHE", "0")
    with client_for(local_api) as client:
        assert client.cache is None
        assert not client.search(text="cat").from_cache and not client.search(text="cat").from_cache
    assert not entry_keys(shared_env)
    with client_for(local_api) as reader:
        assert reader.usage_today().sent == 2


def test_explicit_stores_are_not_replaced_by_the_shared_ones(local_api, shared_env, tmp_path):
    with client_for(local_api, cache=tmp_path / "mine", usage=None) as client:
        assert type(client.cache) is sc.ResponseCache and type(client.usage) is sc.UsageLedger
        client.search(text="cat")
    assert not list(shared_env.client().scan_iter())


# --- secrets and bad settings --------------------------------------------------------------


def test_a_password_in_the_url_never_shows(local_api, redis_server, monkeypatch, caplog):  # noqa: F811
    admin = redis_server.client()
    admin.acl_setuser("simages", enabled=True, passwords=[f"+{PASSWORD}"], keys=["simages:*"], commands=["+@all"])
    url = f"redis://simages:{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    monkeypatch.setenv(ENV_CACHE_URL, url)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with client_for(local_api) as client:
        texts += [repr(client), repr(client.cache), repr(client.usage), str(client.cache), repr(parse_shared_store_url(url))]
        client.search(text="cat")
        assert client.search(text="cat").from_cache
        redis_server.stop()
        assert not client.search(text="cat").from_cache  # Redis gone: the search still succeeds
    with pytest.raises(SharedStoreUnavailable) as down:
        client_for(local_api)
    texts.append(str(down.value))
    redis_server.start()  # a fresh Redis: no such user, so the password is refused
    with pytest.raises(SharedStoreUnavailable) as refused:
        client_for(local_api)
    texts.append(str(refused.value))
    assert "AuthenticationError" in str(refused.value) or "ResponseError" in str(refused.value)
    monkeypatch.setenv(ENV_CACHE_URL, f"http://simages:{PASSWORD}@127.0.0.1:6379/0")
    with pytest.raises(ValueError) as wrong_scheme:
        client_for(local_api)
    texts.append(str(wrong_scheme.value))
    texts += [record.getMessage() for record in caplog.records]
    assert any("response cache read failed" in t for t in texts)
    leaks = [t for t in texts if PASSWORD in t or f"simages:{PASSWORD[:4]}" in t]
    assert not leaks, leaks


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://cache.example:6379/0", "must be a redis://, rediss:// or unix:// URL"),
        ("memcached://cache.example:11211", "must be a redis://, rediss:// or unix:// URL"),
        ("redis:///0", "must name a host"),
        ("redis://127.0.0.1:notaport/0", "is not a valid URL"),
        ("redis://127.0.0.1:6379/zero", "must be a database number"),
        ("unix://relative.sock", "absolute path"),
    ],
)
def test_a_bad_url_is_a_clear_error_naming_the_variable(local_api, monkeypatch, url, expected):
    monkeypatch.setenv(ENV_CACHE_URL, url)
    with pytest.raises(ValueError, match=expected) as caught:
        client_for(local_api)
    assert str(caught.value).startswith(ENV_CACHE_URL)
    out, err = io.StringIO(), io.StringIO()
    assert simages_cli(["usage"], out=out, err=err) == 2
    assert f"invalid setting: {ENV_CACHE_URL}" in err.getvalue()


def test_redis_down_at_start_is_a_clear_error(local_api, redis_server, monkeypatch):  # noqa: F811
    redis_server.stop()  # its port is now closed: nothing listens there
    monkeypatch.setenv(ENV_CACHE_URL, f"{redis_server.url}?password={PASSWORD}")
    with pytest.raises(SharedStoreUnavailable) as caught:
        client_for(local_api)
    message = str(caught.value)
    assert message.startswith(f"{ENV_CACHE_URL}: cannot reach Redis at 127.0.0.1:{redis_server.port}")
    out, err = io.StringIO(), io.StringIO()
    assert simages_cli(["usage"], out=out, err=err) == 1
    assert f"127.0.0.1:{redis_server.port}" in err.getvalue() and ENV_CACHE_URL in err.getvalue()
    assert PASSWORD not in message + err.getvalue()


def test_redis_going_away_mid_run_skips_the_cache_and_comes_back(local_api, shared_env, caplog):
    caplog.set_level(logging.WARNING, logger="simages_core")
    with client_for(local_api) as client:
        assert not client.search(text="motorcycle", num_similar=2).from_cache
        assert client.search(text="motorcycle", num_similar=2).from_cache
        shared_env.stop()
        during = client.search(text="motorcycle", num_similar=2)  # the real local server answers
        assert len(during) == 2 and not during.from_cache
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(
            "response cache read failed" in w and f"redis at 127.0.0.1:{shared_env.port}" in w for w in warnings
        ), warnings
        shared_env.start()  # the same port, empty (no persistence): redis-py reconnects by itself
        # After a failure the stores leave Redis alone for a short pause, then try it again.
        wait_until(lambda: answers(client.cache), what="the cache to use Redis again")
        assert not client.search(text="motorcycle", num_similar=2).from_cache
        assert client.search(text="motorcycle", num_similar=2).from_cache
        assert len(entry_keys(shared_env)) == 1
        today = client.usage_today()  # counted since the restart: one sent, one cached
    assert (today.sent, today.cached) == (1, 1)


def test_a_hung_redis_costs_one_timeout_then_is_left_alone(local_api, shared_env, caplog):
    """A Redis that accepts but never answers (stopped with SIGSTOP): one call times out, the rest skip it."""
    caplog.set_level(logging.DEBUG, logger="simages_core")
    with client_for(local_api) as client:
        client.search(text="cat")
        os.kill(shared_env.pid, signal.SIGSTOP)
        try:
            result = client.search(text="horse")
            failures = [r.getMessage() for r in caplog.records if "carrying on without it" in r.getMessage()]
        finally:
            os.kill(shared_env.pid, signal.SIGCONT)
    assert len(result) == 1 and not result.from_cache
    first, *later = failures
    assert first.startswith("response cache read failed") and "TimeoutError" in first, failures
    assert later and all("not tried for 2 s after it failed to answer" in m for m in later), failures
