"""The client against a real HTTP server on loopback: every documented request, response and error form."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
from PIL import Image

import simages_core as sc

from .conftest import SAMPLE_BODY, SAMPLE_BODY_WITH_LABELS, Reply, make_client

# --- request forms -----------------------------------------------------------


def test_url_request_posts_documented_json_and_headers(scripted_api):
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    with make_client(scripted_api) as client:
        client.search(url="https://example.com/cat.jpg", num_similar=10)
    (req,) = scripted_api.received
    assert req.path == "/"
    assert req.json == {"url": "https://example.com/cat.jpg", "num_similar": 10}
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-api-key"] == "test-key-123"


def test_image_request_sends_base64_jpeg_downscaled(scripted_api, tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (1200, 600), (200, 30, 30)).save(path)
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    with make_client(scripted_api) as client:
        client.search(image=path, num_similar=3, labels=True)
    body = scripted_api.received[0].json
    assert set(body) == {"image", "num_similar", "get_labels"}
    assert body["get_labels"] == "coco_yolov7" and body["num_similar"] == 3
    sent = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert sent.format == "JPEG" and sent.size == (400, 200)


def test_text_request_with_labels(scripted_api):
    scripted_api.script(scripted_api.success(SAMPLE_BODY_WITH_LABELS))
    with make_client(scripted_api) as client:
        client.search(text="a cat on a sofa", labels=True)
    assert scripted_api.received[0].json == {
        "text": "a cat on a sofa",
        "num_similar": 1,
        "get_labels": "coco_yolov7",
    }


# --- response forms ----------------------------------------------------------


@pytest.mark.parametrize("body_as_string", [True, False], ids=["body-json-string", "body-object"])
def test_success_without_annotations_is_ordered_by_score(scripted_api, body_as_string):
    scripted_api.script(scripted_api.success(SAMPLE_BODY, as_string=body_as_string))
    with make_client(scripted_api) as client:
        result = client.search(text="cat", num_similar=2)
    assert [im.id for im in result.images] == ["a1", "7"]
    assert [im.score for im in result.images] == [0.9, 0.5]
    assert result.images[0].thumbnail_url == "https://img.example/a.webp"
    assert all(im.detections is None for im in result.images)
    assert result.info == {"url": "https://ternaus.com"}


@pytest.mark.parametrize("body_as_string", [True, False], ids=["body-json-string", "body-object"])
def test_success_with_annotations_joins_them_to_images(scripted_api, body_as_string):
    scripted_api.script(scripted_api.success(SAMPLE_BODY_WITH_LABELS, as_string=body_as_string))
    with make_client(scripted_api) as client:
        result = client.search(text="cat", num_similar=2, labels=True)
    top, other = result.images
    assert (top.width, top.height) == (640, 480)
    assert top.detections == (
        sc.Detection("cat", 0.93, (10.0, 20.0, 110.0, 220.0), 15),
        sc.Detection("person", 0.61, (300.5, 0.0, 640.0, 479.5), 0),
    )
    assert other.detections == () and (other.width, other.height) == (200, 100)


def test_bare_body_without_envelope_is_accepted(scripted_api):
    scripted_api.script(Reply(body=SAMPLE_BODY))
    with make_client(scripted_api) as client:
        assert len(client.search(text="cat")) == 2


# --- documented errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        (400, "Invalid request", sc.InvalidRequest),
        (401, "Missing an API key", sc.MissingApiKey),
        (402, "You exceeded free of charge day limit", sc.QuotaExceeded),
        (403, "Invalid API key", sc.InvalidApiKey),
    ],
)
@pytest.mark.parametrize("where", ["http-status", "inside-200-envelope"])
def test_documented_errors_map_to_classes_and_are_not_retried(scripted_api, status, error, cls, where):
    envelope = {"statusCode": status, "error": error, "headers": {}}
    scripted_api.script(Reply(status=status if where == "http-status" else 200, body=envelope))
    with make_client(scripted_api) as client, pytest.raises(cls) as info:
        client.search(text="cat")
    assert info.value.status == status
    assert info.value.message == error
    assert "test-key-123" not in str(info.value) and "test-key-123" not in repr(info.value)
    assert len(scripted_api.received) == 1  # never retried: a retry cannot help and may cost money


def test_error_all_under_one_root():
    for cls in (
        sc.InvalidRequest,
        sc.MissingApiKey,
        sc.QuotaExceeded,
        sc.InvalidApiKey,
        sc.DecodingError,
        sc.ConnectError,
        sc.RequestTimeout,
        sc.ServerError,
    ):
        assert issubclass(cls, sc.SimilarImagesError)


def test_missing_key_fails_before_any_network_call(scripted_api):
    client = sc.SimilarImagesClient(base_url=scripted_api.url, cache=False, usage=None)
    with pytest.raises(sc.MissingApiKey, match="SIMAGES_API_KEY"):
        client.search(text="cat")
    assert scripted_api.received == []


def test_invalid_request_fails_before_any_network_call(scripted_api):
    with make_client(scripted_api) as client:
        with pytest.raises(sc.InvalidRequest) as info:
            client.search(text="cat", num_similar=51)
        assert info.value.field == "num_similar"
        with pytest.raises(sc.InvalidRequest):
            client.search(text="cat", url="https://example.com/x.jpg")
        with pytest.raises(sc.ImageEncodingError):
            client.search(image=b"this is not an image")
    assert scripted_api.received == []


# --- retries, backoff, timeouts ----------------------------------------------------


def test_5xx_and_429_are_retried_then_succeed(scripted_api):
    scripted_api.script(Reply(503, b"busy"), Reply(429, b"slow down"), scripted_api.success(SAMPLE_BODY))
    with make_client(scripted_api, retry=sc.RetryPolicy(attempts=3, backoff_factor=0.01)) as client:
        result = client.search(text="cat")
    assert len(result) == 2 and len(scripted_api.received) == 3


def test_retry_after_is_honoured(scripted_api):
    scripted_api.script(Reply(503, b"busy", headers={"Retry-After": "1"}), scripted_api.success(SAMPLE_BODY))
    with make_client(scripted_api) as client:
        started = time.monotonic()
        client.search(text="cat")
        waited = time.monotonic() - started
    assert waited >= 0.9 and len(scripted_api.received) == 2


def test_exponential_backoff_grows(scripted_api):
    scripted_api.script(Reply(500, b"boom"))
    policy = sc.RetryPolicy(attempts=3, backoff_factor=0.2, backoff_jitter=0.0)
    with make_client(scripted_api, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(sc.ServerError) as info:
            client.search(text="cat")
        waited = time.monotonic() - started
    # urllib3 sleeps factor * 2**(n-1) before retry n>=2: 0 + 0.4 + 0.8 = 1.2 s at least.
    assert waited >= 1.1
    assert info.value.status == 500 and len(scripted_api.received) == 4


def test_read_timeout_raises_request_timeout_after_retries(scripted_api):
    scripted_api.script(Reply(body=b"{}", delay=1.0))
    client = make_client(scripted_api, timeouts=sc.Timeouts(connect=1, read=0.2))
    with client, pytest.raises(sc.RequestTimeout, match="in time"):
        client.search(text="cat")
    assert len(scripted_api.received) == 3  # first try + 2 retries


def test_connection_refused_raises_connect_error():
    client = sc.SimilarImagesClient(
        api_key="k",
        base_url="http://127.0.0.1:9",
        cache=False,
        usage=None,
        retry=sc.RetryPolicy(attempts=1, backoff_factor=0.01),
    )
    with pytest.raises(sc.ConnectError, match="cannot reach"):
        client.search(text="cat")


# --- malformed responses --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>oops</html>", "not a JSON object"),
        (b"[1, 2]", "not a JSON object"),
        ({"statusCode": 200}, "neither a 'body'"),
        ({"statusCode": 200, "body": "{not json"}, "not valid JSON"),
        ({"statusCode": 200, "body": "[]"}, "must be a JSON object"),
        ({"statusCode": 200, "body": json.dumps({"info": {}})}, "'body.images' is missing"),
        (
            {
                "statusCode": 200,
                "body": json.dumps({"images": [{"url": "u", "thumbnail_url": "t", "id": 1}]}),
            },
            "body.images[0].score",
        ),
        (
            {
                "statusCode": 200,
                "body": json.dumps({"images": [{"url": 3, "score": 1, "thumbnail_url": "t", "id": 1}]}),
            },
            "body.images[0].url",
        ),
        (
            {
                "statusCode": 200,
                "body": json.dumps(
                    {
                        "images": [],
                        "annotations": [
                            {
                                "image_id": 1,
                                "annotations": [
                                    {"name": "cat", "score": 1, "box": [1, 2, 3], "category_id": 1}
                                ],
                            }
                        ],
                    }
                ),
            },
            "must have 4 numbers",
        ),
        ({"statusCode": "200x", "error": "x"}, "'statusCode' must be an integer"),
    ],
)
def test_malformed_responses_raise_decoding_error_saying_what(scripted_api, body, expected):
    scripted_api.script(Reply(body=body))
    with make_client(scripted_api) as client, pytest.raises(sc.DecodingError) as info:
        client.search(text="cat", labels=True)
    assert expected in str(info.value)


def test_non_json_error_page_keeps_status_and_text(scripted_api):
    scripted_api.script(Reply(403, b"Forbidden by gateway"))
    with make_client(scripted_api) as client, pytest.raises(sc.InvalidApiKey, match="Forbidden by gateway"):
        client.search(text="cat")


# --- batch, cache, usage ---------------------------------------------------------


def test_search_many_keeps_order_and_isolates_errors(scripted_api, tmp_path):
    # A Query is validated when built, so a bad num_similar never reaches a batch.
    with pytest.raises(sc.InvalidRequest) as invalid:
        sc.Query(text="dog", num_similar=0)
    assert invalid.value.field == "num_similar"
    # A file that disappears between building the query and running it fails in the batch.
    vanishing = tmp_path / "gone.png"
    Image.new("RGB", (8, 8)).save(vanishing)
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    queries = [
        sc.Query(text="cat"),
        sc.Query(image=b"not an image"),
        sc.Query(url="https://example.com/a.jpg", num_similar=2),
        sc.Query(image=vanishing),
    ]
    vanishing.unlink()
    with make_client(scripted_api) as client:
        items = client.search_many(queries, max_workers=4)
    assert [item.query for item in items] == queries
    assert [item.ok for item in items] == [True, False, True, False]
    assert isinstance(items[1].error, sc.ImageEncodingError)
    assert isinstance(items[3].error, sc.InvalidRequest) and items[3].error.field == "image"
    assert "image file not found" in str(items[3].error)
    assert len(items[0].result.images) == 2
    assert len(scripted_api.received) == 2


def test_cache_serves_repeated_request_without_network(scripted_api, tmp_path):
    scripted_api.script(scripted_api.success(SAMPLE_BODY_WITH_LABELS))
    ledger = sc.UsageLedger(tmp_path / "usage")
    with make_client(scripted_api, cache=tmp_path / "cache", usage=ledger) as client:
        first = client.search(text="cat", labels=True)
        second = client.search(text="cat", labels=True)
        third = client.search(text="cat", labels=False)  # another request, another key
        today = client.usage_today()
    assert not first.from_cache and second.from_cache and not third.from_cache
    assert second.images == first.images
    assert len(scripted_api.received) == 2
    assert (today.sent, today.cached, today.failed) == (2, 1, 0)


def test_errors_are_not_cached_and_are_counted(scripted_api, tmp_path):
    scripted_api.script(Reply(402, {"statusCode": 402, "error": "limit"}), scripted_api.success(SAMPLE_BODY))
    with make_client(scripted_api, cache=tmp_path / "cache") as client:
        with pytest.raises(sc.QuotaExceeded):
            client.search(text="cat")
        assert len(client.search(text="cat")) == 2
        assert client.usage_today().failed == 1 and client.usage_today().sent == 1


def test_cache_expires_after_ttl(scripted_api, tmp_path):
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    cache = sc.ResponseCache(tmp_path / "cache", ttl=0.3)
    with make_client(scripted_api, cache=cache) as client:
        client.search(text="cat")
        assert client.search(text="cat").from_cache
        time.sleep(0.5)
        assert not client.search(text="cat").from_cache
    assert len(scripted_api.received) == 2


def test_cache_off_by_environment(scripted_api, monkeypatch):
    monkeypatch.setenv("SIMAGES_CACHE", "off")
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    with sc.SimilarImagesClient(api_key="k", base_url=scripted_api.url) as client:
        assert client.cache is None
        client.search(text="cat")
        client.search(text="cat")
    assert len(scripted_api.received) == 2


def test_usage_ledger_is_shared_across_clients(scripted_api, tmp_path):
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    for _ in range(2):
        with make_client(scripted_api, usage=sc.UsageLedger(tmp_path / "usage")) as client:
            client.search(text="cat")
    assert sc.UsageLedger(tmp_path / "usage").day().sent == 2


def test_cache_and_ledger_are_safe_under_concurrent_use(scripted_api, tmp_path):
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    ledger = sc.UsageLedger(tmp_path / "usage")
    queries = [sc.Query(text=f"q{i % 4}") for i in range(32)]
    with make_client(scripted_api, cache=tmp_path / "cache", usage=ledger) as client:
        items = client.search_many(queries, max_workers=8)
        today = client.usage_today()
    assert all(item.ok and len(item.result) == 2 for item in items)
    # Every request was either sent or served from cache, and the ledger saw each exactly once.
    assert today.sent + today.cached == 32 and today.failed == 0
    assert today.sent == len(scripted_api.received) >= 4
    assert len(sc.ResponseCache(tmp_path / "cache")) == 4
