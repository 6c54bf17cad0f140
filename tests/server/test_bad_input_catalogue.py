"""A catalogue of malformed requests against the real local server over loopback.

Each one must answer its 4xx with the documented JSON error body naming the problem, and the
server must keep serving (``/health`` answers after every case). ``url`` queries here name loopback
only (literal forms the server refuses before resolving or connecting); private, link-local and
other forbidden targets, and names that do not resolve, are in ``test_url_guard.py``, where a stub
resolver maps test names to them and a connection watch proves no packet leaves loopback.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field

import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.integration


def _jpeg(size: tuple[int, int] = (300, 200)) -> bytes:
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


@dataclass(frozen=True)
class Case:
    id: str
    body: bytes | str | dict | list | None
    expected: str
    """A substring of the JSON body's ``error``."""
    status: int = 400
    method: str = "POST"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    key: str | None = "default"
    must_not_echo: str | None = None


DEEP = 50_000
CATALOGUE = [
    # --- the body is not a JSON object -------------------------------------------------------
    Case("not-json", b"{this is not json", "not valid JSON"),
    Case("empty-body", b"", "empty"),
    Case("whitespace-body", b"  \r\n\t ", "empty"),
    Case("trailing-garbage", b'{"text": "cat"} and more', "not valid JSON"),
    Case("invalid-utf8", b'{"text": "\xff\xfe\xfa"}', "not valid JSON"),
    Case("nan-literal", b'{"text": "cat", "num_similar": NaN}', "NaN is not a JSON value"),
    Case("infinity-literal", b'{"text": "cat", "num_similar": -Infinity}', "-Infinity is not a JSON value"),
    Case("int-too-long", b'{"text": "cat", "num_similar": ' + b"9" * 5000 + b"}", "not valid JSON"),
    Case("json-array", ["text", "cat"], "JSON object"),
    Case("json-string", '"cat"', "JSON object"),
    Case("json-null", "null", "JSON object"),
    Case("json-number", "42", "JSON object"),
    Case("deep-arrays", b"[" * DEEP + b"]" * DEEP, "nested too deeply"),
    Case("deep-objects", b'{"a":' * DEEP + b"1" + b"}" * DEEP, "nested too deeply"),
    Case("deep-inside-text", b'{"text": ' + b"[" * DEEP + b"]" * DEEP + b"}", "nested too deeply"),
    Case("nested-text", {"text": json.loads("[" * 500 + "]" * 500)}, "'text' must be a non-empty string"),
    # --- fields ---------------------------------------------------------------------------------
    Case("no-query-field", {"num_similar": 3}, "exactly one of"),
    Case("url-and-text", {"url": "https://example.com/a.jpg", "text": "cat"}, "exactly one of"),
    Case("all-three", {"url": "https://example.com/a.jpg", "text": "cat", "image": "AAAA"}, "exactly one of"),
    Case("text-number", {"text": 42}, "'text' must be a non-empty string"),
    Case("text-empty", {"text": ""}, "'text' must be a non-empty string"),
    Case("text-blank", {"text": "   "}, "'text' must be a non-empty string"),
    Case("text-object", {"text": {"en": "cat"}}, "'text' must be a non-empty string"),
    Case("image-list", {"image": [1, 2]}, "'image' must be a non-empty string"),
    Case("num-zero", {"text": "cat", "num_similar": 0}, "num_similar"),
    Case("num-huge", {"text": "cat", "num_similar": 10**12}, "num_similar"),
    Case("num-negative", {"text": "cat", "num_similar": -3}, "num_similar"),
    Case("num-string", {"text": "cat", "num_similar": "10"}, "num_similar"),
    Case("num-float", {"text": "cat", "num_similar": 2.5}, "num_similar"),
    Case("num-bool", {"text": "cat", "num_similar": True}, "num_similar"),
    Case("num-null-object", {"text": "cat", "num_similar": {}}, "num_similar"),
    Case("labels-unknown", {"text": "cat", "get_labels": "coco_yolov8"}, "get_labels"),
    Case("labels-number", {"text": "cat", "get_labels": 1}, "get_labels"),
    # --- images ---------------------------------------------------------------------------------
    Case("image-not-base64", {"image": "%%% not base64 %%%"}, "not valid base64"),
    Case("image-base64-text-file", {"image": _b64(b"just some text in a file\n" * 20)}, "not an image"),
    Case(
        "image-data-uri-text",
        {"image": "data:image/png;base64," + _b64(b"plain words " * 10)},
        "not an image",
    ),
    Case("image-truncated-jpeg", {"image": _b64(_jpeg()[:1500])}, "could not be decoded"),
    Case("image-decompression-bomb", {"image": _b64(_bomb_png())}, "decompression bomb"),
    # --- url queries (refused before any connection) ------------------------------------------------
    Case("url-file-scheme", {"url": "file:///etc/passwd"}, "http or https"),
    Case("url-ftp-scheme", {"url": "ftp://example.com/a.jpg"}, "http or https"),
    Case("url-gopher-scheme", {"url": "gopher://example.com/"}, "http or https"),
    Case("url-no-host", {"url": "http://"}, "http or https"),
    Case("url-bad-ipv6", {"url": "http://[::1/cat.jpg"}, "http or https"),
    Case("url-loopback", {"url": "http://127.0.0.1:9/cat.jpg"}, "non-public address"),
    Case("url-localhost-name", {"url": "http://localhost:9/cat.jpg"}, "non-public address"),
    Case("url-decimal-loopback", {"url": "http://2130706433/cat.jpg"}, "is 127.0.0.1, a non-public address"),
    Case("url-octal-loopback", {"url": "http://0177.0.0.1/cat.jpg"}, "is 127.0.0.1, a non-public address"),
    Case("url-ipv6-loopback", {"url": "http://[::1]:9/"}, "non-public address"),
    Case("url-unspecified", {"url": "http://0.0.0.0:9/"}, "unspecified"),
    Case("url-five-numbers", {"url": "http://1.2.3.4.5/"}, "not an IPv4 address"),
    Case(
        "url-credentials-not-echoed",
        {"url": "http://admin:s3cret-pw@127.0.0.1:9/cat.jpg"},
        "non-public address",
        must_not_echo="s3cret-pw",
    ),
    # --- keys, methods, paths ---------------------------------------------------------------------
    Case("missing-key", {"text": "cat"}, "Missing an API key", status=401, key=None),
    Case("empty-key", {"text": "cat"}, "Missing an API key", status=401, key=""),
    Case("wrong-key", {"text": "cat"}, "Invalid API key", status=403, key="not-a-key"),
    Case("unknown-path", None, "not found: /nope", status=404, method="GET", path="/nope"),
    Case(
        "unknown-image-id",
        None,
        "not found: /images/0000000000000000",
        status=404,
        method="GET",
        path="/images/0000000000000000",
    ),
    Case("delete-method", None, "DELETE is not allowed on /", status=405, method="DELETE"),
    Case("post-to-health", {"text": "cat"}, "POST is not allowed on /health", status=405, path="/health"),
]


def _data(body: object) -> bytes | str | None:
    if body is None or isinstance(body, (bytes, str)):
        return body
    return json.dumps(body)


def test_catalogue_ids_are_unique():
    ids = [case.id for case in CATALOGUE]
    assert len(ids) == len(set(ids)) and len(ids) >= 25


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_malformed_input_is_a_4xx_naming_the_problem(local_api, case: Case):
    headers = dict(case.headers)
    if case.key is not None:
        headers["x-api-key"] = local_api.api_key if case.key == "default" else case.key
    response = requests.request(
        case.method, local_api.base_url + case.path, data=_data(case.body), headers=headers, timeout=60
    )
    assert response.status_code == case.status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    envelope = response.json()
    assert envelope["statusCode"] == case.status
    assert case.expected in envelope["error"], envelope["error"]
    if case.must_not_echo:
        assert case.must_not_echo not in response.text
    assert requests.get(local_api.base_url + "/health", timeout=10).json()["status"] == "ok"
