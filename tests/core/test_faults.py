"""The client under faults, over real loopback HTTP: what test_client_contract.py does not cover yet.

Covered there already: 503/429 then success, Retry-After, backoff, a read timeout, connection
refused, HTML and off-shape bodies. Here: a 500/502/503 run, a reset mid-response, a connect
timeout, nesting bombs and parser surprises inside a batch, 402 half-way through a batch, and the
local server process killed and restarted in the middle of a batch.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import urllib3.exceptions

import simages_core as sc
from simages_core._transport import is_timeout, transport_error

from .conftest import SAMPLE_BODY, Reply, make_client

DEEP_ARRAY = b"[" * 50_000 + b"]" * 50_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


def test_500_502_503_then_success_is_retried(scripted_api):
    scripted_api.script(Reply(500, b"boom"), Reply(502, b"bad gateway"), Reply(503, b"busy"),
                        scripted_api.success(SAMPLE_BODY))  # fmt: skip
    policy = sc.RetryPolicy(attempts=3, backoff_factor=0.01, backoff_jitter=0.0)
    with make_client(scripted_api, retry=policy) as client:
        result = client.search(text="cat")
        today = client.usage_today()
    assert len(result) == 2 and len(scripted_api.received) == 4
    assert (today.sent, today.failed) == (1, 0)


def test_connection_reset_mid_response_is_a_transport_error_and_the_pool_recovers(scripted_api):
    body = json.dumps({"statusCode": 200, "body": json.dumps(SAMPLE_BODY)}).encode()
    scripted_api.script(Reply(body=body, reset_after=12))
    with make_client(scripted_api, retry=sc.RetryPolicy(attempts=1, backoff_factor=0.01)) as client:
        with pytest.raises(sc.TransportError) as info:
            client.search(text="cat")
        assert "test-key-123" not in str(info.value)
        assert client.usage_today().failed == 1
        scripted_api.script(scripted_api.success(SAMPLE_BODY))
        assert len(client.search(text="cat")) == 2  # a broken connection does not poison the pool


@pytest.fixture
def full_backlog_port() -> Iterator[int]:
    """A loopback port whose accept queue is full, so a new connection times out instead of failing."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        yield port
    finally:
        filler.close()
        server.close()


def test_connect_timeout_is_a_request_timeout(full_backlog_port):
    client = sc.SimilarImagesClient(
        api_key="k",
        base_url=f"http://127.0.0.1:{full_backlog_port}",
        cache=False,
        usage=None,
        timeouts=sc.Timeouts(connect=0.3, read=5),
        retry=sc.RetryPolicy(attempts=0),
    )
    with client, pytest.raises(sc.RequestTimeout, match="in time"):
        client.search(text="cat")


def _wrapped(inner: BaseException, message: str) -> requests.exceptions.ConnectionError:
    """What requests raises after urllib3 gave up: ConnectionError(MaxRetryError(reason=inner))."""
    retry_error = urllib3.exceptions.MaxRetryError(None, "/", reason=inner)  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(retry_error, message)


@pytest.mark.parametrize(
    ("error", "timeout"),
    [
        (_wrapped(urllib3.exceptions.ReadTimeoutError(None, "/", "slow"), "no words about time"), True),  # type: ignore[arg-type]
        (_wrapped(urllib3.exceptions.ConnectTimeoutError("slow"), "x"), True),
        (requests.exceptions.ReadTimeout("x"), True),
        (requests.exceptions.ConnectTimeout("x"), True),
        # socket.timeout is the builtin TimeoutError since Python 3.10
        (_wrapped(urllib3.exceptions.ProtocolError("broken", TimeoutError()), "x"), True),
        (_wrapped(urllib3.exceptions.ProtocolError("broken", ConnectionResetError()), "it timed out"), False),
        (_wrapped(urllib3.exceptions.NewConnectionError(None, "refused"), "timed out?"), False),  # type: ignore[arg-type]
        (requests.exceptions.ChunkedEncodingError("timed out in the message only"), False),
    ],
    ids=[
        "read-timeout-in-max-retry",
        "connect-timeout-in-max-retry",
        "requests-read-timeout",
        "requests-connect-timeout",
        "socket-timeout-deep-in-chain",
        "reset-with-timed-out-in-message",
        "new-connection-error-is-not-a-timeout",
        "chunked-error-with-timed-out-in-message",
    ],
)
def test_timeouts_are_recognised_by_type_not_message(error, timeout):
    assert is_timeout(error) is timeout
    mapped = transport_error(error, "http://127.0.0.1:1")
    assert isinstance(mapped, sc.RequestTimeout) is timeout
    assert isinstance(mapped, sc.TransportError)


@pytest.mark.parametrize("bomb", [DEEP_ARRAY, DEEP_OBJECT], ids=["nested-arrays-50000", "nested-objects-50000"])
@pytest.mark.parametrize("where", ["whole-response", "body-string"])
def test_nesting_bomb_fails_its_own_query_not_the_batch(scripted_api, bomb, where):
    content = bomb if where == "whole-response" else json.dumps({"statusCode": 200, "body": bomb.decode()})
    scripted_api.script(scripted_api.success(SAMPLE_BODY), Reply(body=content), scripted_api.success(SAMPLE_BODY))
    queries = [sc.Query(text=f"q{i}") for i in range(3)]
    with make_client(scripted_api) as client:
        items = client.search_many(queries, max_workers=1)
    assert [item.ok for item in items] == [True, False, True]
    assert isinstance(items[1].error, sc.DecodingError)
    assert "nested too deeply" in str(items[1].error)


def test_unexpected_parser_exception_becomes_a_decoding_error(scripted_api):
    # A 400-digit integer score makes math.isfinite raise OverflowError inside the parser.
    image = {"url": "u", "score": 10**400, "thumbnail_url": "t", "id": 1}
    body = json.dumps({"statusCode": 200, "body": json.dumps({"images": [image]})})
    scripted_api.script(Reply(body=body), scripted_api.success(SAMPLE_BODY))
    with make_client(scripted_api) as client:
        items = client.search_many([sc.Query(text="a"), sc.Query(text="b")], max_workers=1)
    assert isinstance(items[0].error, sc.DecodingError) and "OverflowError" in str(items[0].error)
    assert items[1].ok


def test_a_bug_in_one_query_stays_with_that_query(scripted_api, caplog):
    class FlakyEncoderClient(sc.SimilarImagesClient):
        def search_query(self, query):
            if query.text == "boom":
                raise KeyError("a bug, not an API error")
            return super().search_query(query)

    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    with FlakyEncoderClient("k", base_url=scripted_api.url, cache=False, usage=None) as client:
        items = client.search_many([sc.Query(text="boom"), sc.Query(text="fine")], max_workers=1)
        direct = client.run_query(sc.Query(text="boom"))
    assert isinstance(items[0].error, sc.SimilarImagesError) and "see the log" in str(items[0].error)
    assert items[1].ok and direct.error is not None
    assert "a bug, not an API error" in caplog.text  # the traceback went to the log, not to the caller


def test_quota_exceeded_half_way_through_a_batch(scripted_api):
    quota = Reply(402, {"statusCode": 402, "error": "You exceeded free of charge day limit"})
    ok = scripted_api.success(SAMPLE_BODY)
    scripted_api.script(ok, ok, ok, quota)  # the last reply repeats
    queries = [sc.Query(text=f"query {i}") for i in range(6)]
    with make_client(scripted_api, retry=sc.RetryPolicy(attempts=3, backoff_factor=0.01)) as client:
        items = client.search_many(queries, max_workers=1)
        today = client.usage_today()
    assert [item.ok for item in items] == [True, True, True, False, False, False]
    assert all(len(item.result) == 2 for item in items[:3] if item.result is not None)
    errors = [item.error for item in items[3:]]
    assert all(isinstance(e, sc.QuotaExceeded) and e.status == 402 for e in errors)
    assert len({id(e) for e in errors}) == 3  # each item carries its own error
    assert len(scripted_api.received) == 6  # a 402 is never retried: it cannot help and may cost money
    assert (today.sent, today.failed) == (3, 3)


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_local_server_killed_and_restarted_mid_batch(local_api, tmp_path):
    server = local_api.start_server(tmp_path, latency_ms=150)
    try:
        policy = sc.RetryPolicy(attempts=8, backoff_factor=0.1, backoff_max=1.0, backoff_jitter=0.0)
        client = sc.SimilarImagesClient(
            api_key=server.api_key, base_url=server.url, cache=False, usage=None, retry=policy
        )
        queries = [sc.Query(text=f"a photo of thing {i}", num_similar=2) for i in range(16)]
        restarted = threading.Event()
        outage_error: list[BaseException] = []

        def kill_and_restart() -> None:
            try:
                _wait_for(lambda: client.usage_today().sent >= 4, 60, "the batch to get going")
                server.stop()
                server.start()
                restarted.set()
            except BaseException as exc:  # surfaced by the assertion below
                outage_error.append(exc)

        chaos = threading.Thread(target=kill_and_restart)
        with client:
            chaos.start()
            items = client.search_many(queries, max_workers=2)
            chaos.join(timeout=60)
            today = client.usage_today()
            assert not outage_error and restarted.is_set()
            assert len(client.search(text="cat")) > 0  # the same client keeps working after the restart
    finally:
        server.stop()
    assert [item.query for item in items] == queries  # none lost, order kept
    for item in items:
        assert (item.result is None) != (item.error is None)
        if item.error is not None:
            assert isinstance(item.error, (sc.TransportError, sc.ServerError))
    failed = [item.error for item in items if item.error is not None]
    assert len({id(e) for e in failed}) == len(failed)
    assert sum(item.ok for item in items) >= 4
    assert today.sent + today.failed == len(queries)
