"""Malformed requests: each a 400 with a clear message, and the server keeps serving."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.integration


def _jpeg(size=(300, 200)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 50).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 60_000, 60_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


MALFORMED = [
    ("not-json", b"{this is not json", "not valid JSON"),
    ("empty-body", b"", "empty"),
    ("json-array", json.dumps(["text", "cat"]), "JSON object"),
    ("json-string", json.dumps("cat"), "JSON object"),
    ("no-query-field", {"num_similar": 3}, "exactly one of"),
    ("url-and-text", {"url": "https://example.com/a.jpg", "text": "cat"}, "exactly one of"),
    ("all-three", {"url": "https://example.com/a.jpg", "text": "cat", "image": "AAAA"}, "exactly one of"),
    ("text-number", {"text": 42}, "'text' must be a non-empty string"),
    ("text-empty", {"text": ""}, "'text' must be a non-empty string"),
    ("image-list", {"image": [1, 2]}, "'image' must be a non-empty string"),
    ("num-zero", {"text": "cat", "num_similar": 0}, "num_similar"),
    ("num-huge", {"text": "cat", "num_similar": 10**12}, "num_similar"),
    ("num-negative", {"text": "cat", "num_similar": -3}, "num_similar"),
    ("num-string", {"text": "cat", "num_similar": "10"}, "num_similar"),
    ("num-float", {"text": "cat", "num_similar": 2.5}, "num_similar"),
    ("num-bool", {"text": "cat", "num_similar": True}, "num_similar"),
    ("labels-unknown", {"text": "cat", "get_labels": "coco_yolov8"}, "get_labels"),
    ("labels-number", {"text": "cat", "get_labels": 1}, "get_labels"),
    ("image-not-base64", {"image": "%%% not base64 %%%"}, "not valid base64"),
    ("image-base64-text-file", {"image": _b64(b"just some text in a file\n" * 20)}, "not an image"),
    ("image-truncated-jpeg", {"image": _b64(_jpeg()[:1500])}, "could not be decoded"),
    ("image-decompression-bomb", {"image": _b64(_bomb_png())}, "decompression bomb"),
    ("url-file-scheme", {"url": "file:///etc/passwd"}, "http or https"),
    ("url-ftp-scheme", {"url": "ftp://example.com/a.jpg"}, "http or https"),
    ("url-gopher-scheme", {"url": "gopher://example.com/"}, "http or https"),
    ("url-no-host", {"url": "http://"}, "http or https"),
    ("url-loopback", {"url": "http://127.0.0.1:9/cat.jpg"}, "non-public address"),
    ("url-metadata", {"url": "http://169.254.169.254/latest/meta-data/"}, "non-public address"),
    ("url-private", {"url": "http://10.1.2.3/cat.jpg"}, "non-public address"),
    ("url-localhost-name", {"url": "http://localhost:9/cat.jpg"}, "non-public address"),
    ("url-unresolvable", {"url": "http://no-such-host.invalid/cat.jpg"}, "cannot be resolved"),
]


@pytest.mark.parametrize(("name", "body", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_is_a_400_with_a_clear_message(local_api, name, body, expected):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = requests.post(
        local_api.base_url + "/", data=data, headers={"x-api-key": local_api.api_key}, timeout=30
    )
    assert response.status_code == 400, response.text
    envelope = response.json()
    assert envelope["statusCode"] == 400 and expected in envelope["error"]
    assert requests.get(local_api.base_url + "/health", timeout=5).ok


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
        for url, expected in [
            (f"{web}/page.html", "not an image"),
            (f"{web}/missing.jpg", "HTTP 404"),
            (f"{web}/loop", "redirected more than"),
            (f"{silent}/cat.jpg", "did not answer within 1 s"),
            ("http://127.0.0.1:1/cat.jpg", "could not be fetched"),
        ]:
            response = post(url)
            assert response.status_code == 400 and expected in response.json()["error"], (url, response.text)
        assert requests.get(server.url + "/health", timeout=5).ok
