"""A real HTTP server on loopback whose answers each test scripts, for client contract tests.

It is not a mock of the client: requests go through sockets, urllib3's pool and
retries exactly as they would to simages.info.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import simages_core


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset_after: int | None = None
    """Send the headers and this many body bytes, then reset the connection (RST)."""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    json: Any


class ScriptedApi:
    """Answers POSTs with the scripted replies in order (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.received: list[Received] = []
        self._lock = threading.Lock()
        handler = self._handler_class()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def script(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def success(self, body: dict[str, Any], *, as_string: bool = True) -> Reply:
        payload = json.dumps(body) if as_string else body
        return Reply(body={"statusCode": 200, "body": payload, "headers": {}})

    def _next_reply(self) -> Reply:
        with self._lock:
            if len(self.replies) > 1:
                return self.replies.pop(0)
            return self.replies[0] if self.replies else Reply(500, b"nothing scripted")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                try:
                    decoded = json.loads(raw)
                except ValueError:
                    decoded = None
                with api._lock:
                    api.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, decoded)
                    )
                reply = api._next_reply()
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body
                data = (
                    json.dumps(body).encode()
                    if isinstance(body, dict)
                    else (body.encode() if isinstance(body, str) else body)
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    if reply.reset_after is not None:
                        self.wfile.write(data[: reply.reset_after])
                        self.wfile.flush()
                        # SO_LINGER 0: close() sends RST instead of FIN, a connection reset mid-response.
                        linger = struct.pack("ii", 1, 0)
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                        self.connection.close()
                        self.close_connection = True
                        return
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted_api() -> Iterator[ScriptedApi]:
    api = ScriptedApi()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch) -> None:
    """No test reads the user's key, cache or usage ledger."""
    monkeypatch.setenv("SIMAGES_HOME", str(tmp_path / "simages-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("SIMAGES_API_KEY", "TERNAUS_TOKEN", "SIMAGES_API_URL", "SIMAGES_CACHE", "SIMAGES_CACHE_TTL", "SIMAGES_CACHE_URL"):
        monkeypatch.delenv(name, raising=False)


FAST_RETRY = simages_core.RetryPolicy(attempts=2, backoff_factor=0.01, backoff_jitter=0.0)


def make_client(api: ScriptedApi, **kwargs: Any) -> simages_core.SimilarImagesClient:
    options: dict[str, Any] = {
        "api_key": "test-key-123",
        "base_url": api.url,
        "cache": False,
        "usage": None,
        "retry": FAST_RETRY,
    }
    options.update(kwargs)
    return simages_core.SimilarImagesClient(**options)


SAMPLE_BODY = {
    "info": {"url": "https://ternaus.com"},
    "images": [
        {
            "url": "https://img.example/b.jpg",
            "score": 0.5,
            "thumbnail_url": "https://img.example/b.webp",
            "id": 7,
        },
        {
            "url": "https://img.example/a.jpg",
            "score": 0.9,
            "thumbnail_url": "https://img.example/a.webp",
            "id": "a1",
        },
    ],
}

SAMPLE_BODY_WITH_LABELS = {
    **SAMPLE_BODY,
    "annotations": [
        {
            "image_id": "a1",
            "height": 480,
            "width": 640,
            "annotations": [
                {"name": "cat", "score": 0.93, "box": [10, 20, 110, 220], "category_id": 15},
                {"name": "person", "score": 0.61, "box": [300.5, 0, 640, 479.5], "category_id": 0},
            ],
        },
        {"image_id": 7, "height": 100, "width": 200, "annotations": []},
    ],
}
