"""Slow clients cannot lock others out (issue 18): connections that send their headers slowly hold no
worker, more of them than waitress's default 100 are accepted while normal queries are answered, and
the server closes one that has not sent a whole request within ``--request-timeout``, even if it keeps
sending. Waits are on state (connections accepted, a socket closed), never fixed sleeps; the latency
target lives in ``bench/bench_slow_clients.py``."""

from __future__ import annotations

import json
import socket
import time

import psutil
import pytest
import requests

from simages_server.http_server import ConnectionLimits

pytestmark = pytest.mark.integration

SLOW = 150  # more than waitress's own connection limit (100), which used to lock everyone out


def _slow_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")  # headers never finished
    return sock


def _accepted(pid: int, port: int) -> int:
    """Connections the server process holds on its port (accepted, not just queued by the kernel)."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def _wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling the server's sockets: there is no event to wait on


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Block until the server closes ``sock`` (True) or ``timeout`` passes (False)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_the_defaults_leave_room_for_real_clients():
    limits = ConnectionLimits()
    assert limits.connection_limit >= 1000 and 0 < limits.request_timeout <= 30 and limits.idle_timeout <= 60


def test_normal_queries_are_answered_while_slow_connections_are_open(local_api, tmp_path):
    # A long deadline: this is about capacity, so the slow connections must stay open throughout.
    with local_api.start_server(tmp_path, extra_args=("--request-timeout", "600")) as server:
        assert server.pid is not None
        slow = []
        try:
            for _ in range(SLOW):
                slow.append(_slow_connection(server.port))
            _wait_for(
                lambda: _accepted(server.pid, server.port) >= SLOW, f"the server to accept {SLOW} connections"
            )
            with requests.Session() as http:
                http.trust_env = False
                for _ in range(20):  # each on a new connection, as a fresh client would come
                    response = http.post(
                        server.url + "/", data=json.dumps({"text": "cat", "num_similar": 3}),
                        headers={"x-api-key": server.api_key, "Connection": "close"}, timeout=10,
                    )  # fmt: skip
                    assert response.status_code == 200
            assert all(
                not _closed_by_peer(sock, 0.001) for sock in slow
            )  # still open: they were not the price
        finally:
            for sock in slow:
                sock.close()


def test_a_connection_that_never_finishes_its_request_is_closed_after_the_bound(local_api, tmp_path):
    bound = 1.0
    with local_api.start_server(tmp_path, extra_args=("--request-timeout", str(bound))) as server:
        started = time.monotonic()
        with _slow_connection(server.port) as quiet:
            assert _closed_by_peer(quiet, timeout=30)
        assert time.monotonic() - started >= bound  # not before the bound
        # A connection that keeps sending a header line (so is never idle) is closed all the same.
        with _slow_connection(server.port) as trickling:
            deadline = time.monotonic() + 30
            closed = False
            while not closed and time.monotonic() < deadline:
                try:
                    trickling.sendall(b"X-More: 1\r\n")
                except OSError:  # the server closed it (reset)
                    closed = True
                    break
                closed = _closed_by_peer(trickling, timeout=0.2)  # the attacker's pace
            assert closed
        # A whole request within the bound is answered as always.
        with requests.Session() as http:
            http.trust_env = False
            assert http.get(server.url + "/health", timeout=10).status_code == 200
    log = (tmp_path / "server.log").read_text()
    assert "did not send a whole request within 1 s (--request-timeout)" in log


def test_beyond_the_connection_limit_the_longest_waiting_connection_makes_room(local_api, tmp_path):
    limit = 40
    extra = ("--connection-limit", str(limit), "--request-timeout", "600")  # only room-making can free a slot
    with local_api.start_server(tmp_path, extra_args=extra) as server:
        slow = []
        try:
            for _ in range(limit):
                slow.append(_slow_connection(server.port))
            _wait_for(lambda: _accepted(server.pid, server.port) >= limit * 9 // 10, "the slow connections")
            with requests.Session() as http:
                http.trust_env = False
                for _ in range(limit):  # as many new clients as the limit: each is served at once
                    response = http.post(
                        server.url + "/", data=json.dumps({"text": "cat", "num_similar": 3}),
                        headers={"x-api-key": server.api_key, "Connection": "close"}, timeout=10,
                    )  # fmt: skip
                    assert response.status_code == 200
            # The oldest slow connections were closed for room; the server never held more than the limit.
            assert _closed_by_peer(slow[0], timeout=10)
            assert _accepted(server.pid, server.port) <= limit
        finally:
            for sock in slow:
                sock.close()
