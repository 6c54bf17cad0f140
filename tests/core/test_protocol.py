"""Request validation and envelopes: the pure protocol code both client and server use."""

from __future__ import annotations

import json

import pytest

from simages_core import Detection, InvalidRequest, SearchRequest, SearchResult, SimilarImage
from simages_core.protocol import error_envelope, parse_response, success_envelope


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "url/image/text"),
        ({"url": "https://a/b.jpg", "text": "cat"}, "url/image/text"),
        ({"url": "https://a/b.jpg", "image": "AAAA", "text": "x"}, "url/image/text"),
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
        ({"text": 5}, "text"),
        ({"image": ["x"]}, "image"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "ftp://host/x.jpg"}, "url"),
        ({"url": "https://"}, "url"),
        ({"text": "cat", "num_similar": 0}, "num_similar"),
        ({"text": "cat", "num_similar": 51}, "num_similar"),
        ({"text": "cat", "num_similar": 10**9}, "num_similar"),
        ({"text": "cat", "num_similar": "5"}, "num_similar"),
        ({"text": "cat", "num_similar": 2.0}, "num_similar"),
        ({"text": "cat", "num_similar": True}, "num_similar"),
        ({"text": "cat", "get_labels": "coco"}, "get_labels"),
        ({"text": "cat", "get_labels": True}, "get_labels"),
    ],
)
def test_invalid_requests_name_the_field(payload, field):
    with pytest.raises(InvalidRequest) as info:
        SearchRequest.from_json(payload)
    assert info.value.field == field
    assert info.value.status == 400
    assert field.split("/")[0] in str(info.value)


def test_non_object_body_is_invalid():
    with pytest.raises(InvalidRequest, match="JSON object"):
        SearchRequest.from_json(["text", "cat"])


@pytest.mark.parametrize("num_similar", [1, 25, 50])
def test_valid_request_round_trips(num_similar):
    request = SearchRequest.from_json(
        {"text": "cat", "num_similar": num_similar, "get_labels": "coco_yolov7"}
    )
    assert request.kind == "text" and request.labels_requested
    assert request.to_json() == {"text": "cat", "num_similar": num_similar, "get_labels": "coco_yolov7"}


def test_defaults_match_the_docs():
    request = SearchRequest.from_json({"url": "http://host/x.jpg"})
    assert request.num_similar == 1 and request.get_labels is None
    assert request.to_json() == {"url": "http://host/x.jpg", "num_similar": 1}


def test_success_envelope_body_is_a_json_string_and_round_trips():
    result = SearchResult(
        images=(
            SimilarImage(
                "http://h/i/1",
                0.8,
                "http://h/t/1.webp",
                "1",
                (Detection("dog", 0.7, (1, 2, 3, 4), 16),),
                10,
                20,
            ),
            SimilarImage("http://h/i/2", 0.4, "http://h/t/2.webp", "2", (), 5, 5),
        ),
        info={"url": "https://ternaus.com"},
        labels_requested=True,
    )
    envelope = success_envelope(result)
    assert envelope["statusCode"] == 200 and isinstance(envelope["body"], str)
    assert envelope["headers"] == {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "OPTIONS,POST",
    }
    parsed = parse_response(200, json.dumps(envelope).encode(), labels_requested=True)
    assert parsed.images == result.images


def test_success_envelope_without_labels_has_no_annotations():
    result = SearchResult(images=(SimilarImage("u", 1.0, "t", "1"),))
    assert "annotations" not in json.loads(success_envelope(result)["body"])


def test_error_envelope_is_documented_shape():
    assert error_envelope(403, "Invalid API key") == {
        "statusCode": 403,
        "error": "Invalid API key",
        "headers": {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "OPTIONS,POST"},
    }
