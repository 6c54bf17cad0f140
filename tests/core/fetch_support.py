"""Shared by the guarded-fetch tests: a watch on every ``socket.connect``, stub resolvers, and a
scripted image server on loopback.

While a test that uses ``watch_connections`` runs, ``connection_watch`` sees every connect of
this process: a connect to anything but loopback raises before the packet is sent, and the log
lets a test assert that a refusal made no connection (and no name lookup) at all.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from connection_watch import ConnectLog, stub_resolver, watching_connections

from simages_core.fetch import FetchPolicy

LOOPBACK = ("127.0.0.0/8", "::1/128")
JPEG = b"\xff\xd8\xff\xe0" + b"0123456789" * 100


@pytest.fixture(autouse=True)
def watch_connections() -> Iterator[ConnectLog]:
    with watching_connections() as log:
        yield log


def never_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"the resolver must not be asked about {host!r}")


# --- a scripted image server on loopback -------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = JPEG
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "image/jpeg"})
    send_length: bool = True
    cut_after: int | None = None
    """Close the connection after this many body bytes (a transfer that breaks off)."""
    drip: float = 0.0
    """Seconds between single body bytes (a server that is too slow)."""


@dataclass
class Seen:
    path: str
    request_line: str
    headers: dict[str, str]
    client_port: int


class ImageHost:
    """Routes (path -> list of ``Route``, the last repeating) served on loopback, requests recorded."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, list[Route]] = {}
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.seen.append(
                    Seen(self.path, self.requestline, dict(self.headers.items()), self.client_address[1])
                )
                key = self.path.split("?")[0]
                if key.startswith("http://"):  # absolute form through a proxy
                    key = "/" + key.split("/", 3)[3].split("?")[0]
                queue = outer.routes.get(key) or [Route(404, b"missing", {"content-type": "text/plain"})]
                route = queue.pop(0) if len(queue) > 1 else queue[0]
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if route.send_length:
                    self.send_header("content-length", str(len(route.body)))
                else:
                    self.send_header("connection", "close")
                self.end_headers()
                body = route.body if route.cut_after is None else route.body[: route.cut_after]
                try:
                    if route.drip:
                        for byte in body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(route.drip)
                    else:
                        self.wfile.write(body)
                except OSError:
                    pass  # the client gave up, as it should
                if route.cut_after is not None or not route.send_length:
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def route(self, path: str, *routes: Route) -> None:
        self.routes[path] = list(routes)

    def hits(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path.split("?")[0].endswith(path))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def host() -> Iterator[ImageHost]:
    server = ImageHost()
    try:
        yield server
    finally:
        server.close()


def loopback_policy(**changes: Any) -> FetchPolicy:
    table = {"img.test": ["127.0.0.1"], "other.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"]}
    return FetchPolicy(
        allow_networks=LOOPBACK, resolver=stub_resolver(table), retries=1, backoff=0.01
    ).replace(**changes)


def redirect(location: str, status: int = 302) -> Route:
    """A redirect answer to ``location``."""
    return Route(status, b"", {"location": location})
