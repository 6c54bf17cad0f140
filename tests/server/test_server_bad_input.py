"""Bad input that needs its own server: a body over the cap, and ``url`` queries to loopback hosts."""

from __future__ import annotations

import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.integration


def _jpeg(size=(300, 200)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 50).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


# The catalogue of malformed bodies that used to live here is in test_bad_input_catalogue.py.


def test_body_over_the_size_cap(local_api, tmp_path):
    with local_api.start_server(tmp_path, extra_args=("--max-body-mb", "0.5")) as server:
        big = json.dumps({"image": "A" * 600_000})
        response = requests.post(
            server.url + "/", data=big, headers={"x-api-key": server.api_key}, timeout=30
        )
        assert response.status_code == 400 and "larger than" in response.json()["error"]
        assert requests.get(server.url + "/health", timeout=5).ok


@pytest.fixture
def image_host():
    """A loopback web server with an image, a text page, a slow page and a redirect loop."""
    jpeg = _jpeg((120, 90))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/cat.jpg":
                self._send(200, jpeg, "image/jpeg")
            elif self.path == "/page.html":
                self._send(200, b"<html></html>", "text/html")
            elif self.path == "/loop":
                self.send_response(302)
                self.send_header("location", "/loop")
                self.end_headers()
            else:
                self._send(404, b"no", "text/plain")

        def _send(self, status, data, kind):
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # A socket that accepts connections and never answers: a URL that times out.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    yield f"http://127.0.0.1:{server.server_address[1]}", f"http://127.0.0.1:{silent.getsockname()[1]}"
    server.shutdown()
    silent.close()


def test_url_fetching_with_an_allow_listed_network(local_api, image_host, tmp_path):
    web, silent = image_host
    extra = ("--allow-url-network", "127.0.0.0/8", "--fetch-timeout", "1")
    with local_api.start_server(tmp_path, extra_args=extra) as server:

        def post(url):
            return requests.post(
                server.url + "/",
                data=json.dumps({"url": url, "num_similar": 2}),
                headers={"x-api-key": server.api_key},
                timeout=30,
            )

        ok = post(f"{web}/cat.jpg")
        assert ok.status_code == 200 and len(json.loads(ok.json()["body"])["images"]) == 2
        # The caller learns only that the URL could not be fetched (no status, type or timing
        # oracle for the allow-listed network); the operator's log has the reason.
        for url, logged in [
            (f"{web}/page.html", "has content-type 'text/html'"),
            (f"{web}/missing.jpg", "answered HTTP 404"),
            (f"{web}/loop", "redirected more than"),
            (f"{silent}/cat.jpg", "did not answer within 1 s"),
            ("http://127.0.0.1:1/cat.jpg", "connection failed"),
            (
                f"http://user:pw-in-url@{web.split('//')[1]}/missing.jpg?token=query-secret",
                "answered HTTP 404",
            ),
        ]:
            response = post(url)
            assert response.status_code == 400, (url, response.text)
            assert response.json()["error"] == "'url' could not be fetched", (url, response.text)
            log = (tmp_path / "server.log").read_text()
            assert logged in log.splitlines()[-2], (url, log[-500:])
        assert "pw-in-url" not in log and "query-secret" not in log
        assert requests.get(server.url + "/health", timeout=5).ok
