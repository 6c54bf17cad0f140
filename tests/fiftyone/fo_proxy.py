"""A loopback proxy in front of the local server that breaks image downloads on purpose.

It forwards searches (so the answers' image URLs point at the proxy) and serves images, except:
``broken`` ids get a 404, an HTML page or a body cut short (``broken_thumbnails`` ids a 404 for
their thumbnail); with ``die_after=n`` the host dies after serving ``n`` images (every later request has its connection dropped unanswered, and the
listening socket is closed, so retries are refused).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class BreakingProxy:
    def __init__(
        self,
        upstream: str,
        broken: dict[str, str],
        die_after: int | None = None,
        broken_thumbnails: frozenset[str] = frozenset(),
    ) -> None:
        self.upstream = upstream
        self.broken = broken  # image id -> "404" | "html" | "truncated"
        self.broken_thumbnails = broken_thumbnails
        self.thumbnail_requests: list[str] = []
        self.die_after = die_after
        self.image_requests: list[str] = []
        self.served_images = 0
        self.dead = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                if proxy.dead.is_set():
                    return self._drop()
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() in ("content-type", "x-api-key")
                }
                headers["Host"] = self.headers["Host"]  # answers name the proxy as the image host
                upstream = requests.post(proxy.upstream + "/", data=body, headers=headers, timeout=30)
                self._send(upstream.status_code, upstream.headers.get("content-type", ""), upstream.content)

            def do_GET(self) -> None:
                image_id = self.path.rsplit("/", 1)[-1].split(".")[0]
                if self.path.startswith("/images/") and not proxy._may_serve_image():
                    return self._drop()
                if self.path.startswith("/thumbnails/"):
                    proxy.thumbnail_requests.append(image_id)
                    if image_id in proxy.broken_thumbnails:
                        return self._send(404, "text/plain", b"gone")
                proxy.image_requests.append(image_id)
                mode = proxy.broken.get(image_id) if self.path.startswith("/images/") else None
                if mode == "404":
                    return self._send(404, "text/plain", b"gone")
                if mode == "html":
                    return self._send(200, "text/html", b"<html>login first</html>")
                upstream = requests.get(proxy.upstream + self.path, timeout=30)
                data = upstream.content
                if mode == "truncated":
                    data = data[:200]  # a JPEG cut short: declared as an image, not decodable
                self._send(upstream.status_code, upstream.headers.get("content-type", ""), data)

            def _send(self, status: int, content_type: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _drop(self) -> None:
                """A host that died: no answer, the connection just closes."""
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _may_serve_image(self) -> bool:
        with self._lock:
            if self.dead.is_set():
                return False
            if self.die_after is not None and self.served_images >= self.die_after:
                self.dead.set()
                # Stop accepting from another thread: shutdown() waits for the serve loop.
                threading.Thread(target=self._stop_listening, daemon=True).start()
                return False
            self.served_images += 1
            return True

    def _stop_listening(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
