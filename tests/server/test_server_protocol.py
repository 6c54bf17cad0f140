"""The local server over loopback: every documented request and error form, via the core client and raw HTTP."""

from __future__ import annotations

import base64
import json

import pytest
import requests

import simages_core as sc

pytestmark = pytest.mark.integration

CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "OPTIONS,POST"}


def _client(local_api, **kw) -> sc.SimilarImagesClient:
    return sc.SimilarImagesClient(
        api_key=local_api.api_key, base_url=local_api.base_url, cache=False, usage=None, **kw
    )


def _post(local_api, body, key="__default__", raw=False):
    headers = {"content-type": "application/json"}
    if key == "__default__":
        key = local_api.api_key
    if key is not None:
        headers["x-api-key"] = key
    data = body if raw else json.dumps(body)
    return requests.post(local_api.base_url + "/", data=data, headers=headers, timeout=30)


# --- raw HTTP: the exact documented shapes --------------------------------------


def test_raw_success_envelope_has_json_string_body_and_cors(local_api):
    response = _post(local_api, {"text": "cat", "num_similar": 3})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    envelope = response.json()
    assert set(envelope) == {"statusCode", "body", "headers"}
    assert envelope["statusCode"] == 200 and envelope["headers"] == CORS
    assert isinstance(envelope["body"], str)
    body = json.loads(envelope["body"])
    assert set(body) == {"info", "images"}
    assert len(body["images"]) == 3
    for image in body["images"]:
        assert set(image) == {"url", "score", "thumbnail_url", "id"}
        assert image["url"].startswith(local_api.base_url + "/images/")
        assert image["thumbnail_url"].endswith(".webp")


def test_raw_annotations_follow_the_documented_shape(local_api):
    body = json.loads(
        _post(
            local_api,
            {"url": local_api.image_url("coffee.jpg"), "num_similar": 2, "get_labels": "coco_yolov7"},
        ).json()["body"]
    )
    first = body["annotations"][0]
    assert set(first) == {"image_id", "height", "width", "annotations"}
    assert first["image_id"] == body["images"][0]["id"] == local_api.record("coffee.jpg").id
    assert (first["width"], first["height"]) == (600, 400)
    names = sorted(a["name"] for a in first["annotations"])
    assert names == ["cup", "spoon"]
    cup = next(a for a in first["annotations"] if a["name"] == "cup")
    assert cup["box"] == [172, 18, 412, 300] and cup["category_id"] == 41 and cup["score"] == 1.0


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [
        (None, 401, "Missing an API key"),
        ("", 401, "Missing an API key"),
        ("wrong-key", 403, "Invalid API key"),
    ],
)
def test_raw_auth_errors_have_the_documented_body(local_api, key, status, message):
    response = _post(local_api, {"text": "cat"}, key=key)
    assert response.status_code == status
    assert response.json() == {"statusCode": status, "error": message, "headers": CORS}


def test_options_preflight(local_api):
    response = requests.options(local_api.base_url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "x-api-key" in response.headers["Access-Control-Allow-Headers"]


def test_health(local_api):
    health = requests.get(local_api.base_url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["images"] == len(local_api.records())


def test_images_and_thumbnails_are_served(local_api):
    record = local_api.record("chelsea.jpg")
    original = requests.get(f"{local_api.base_url}/images/{record.id}", timeout=10)
    assert original.status_code == 200 and original.headers["content-type"] == "image/jpeg"
    assert original.content == (local_api.images_dir / "chelsea.jpg").read_bytes()
    thumb = requests.get(f"{local_api.base_url}/thumbnails/{record.id}.webp", timeout=10)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    assert thumb.content[8:12] == b"WEBP"
    assert requests.get(f"{local_api.base_url}/images/{'0' * 16}", timeout=10).status_code == 404


# --- through the core client: every request form ----------------------------------


def test_url_of_own_image_returns_it_first_with_its_labels(local_api):
    with _client(local_api) as client:
        result = client.search(url=local_api.image_url("motorcycle_left.jpg"), num_similar=5, labels=True)
    top = result.images[0]
    assert top.id == local_api.record("motorcycle_left.jpg").id and top.score == pytest.approx(1.0)
    assert [d.name for d in top.detections] == ["motorcycle"]
    assert top.detections[0].box == (92, 95, 685, 450)


def test_image_query_finds_its_near_duplicates(local_api):
    with _client(local_api) as client:
        result = client.search(image=local_api.images_dir / "chelsea_resized.jpg", num_similar=4)
    files = [next(r.file for r in local_api.records() if r.id == im.id) for im in result.images]
    assert all(f.startswith("chelsea") for f in files)
    assert [im.score for im in result.images] == sorted((im.score for im in result.images), reverse=True)


def test_text_query_matches_coco_classes_with_labels(local_api):
    with _client(local_api) as client:
        result = client.search(text="two motorbikes", num_similar=10, labels=True)
    assert result.images
    for image in result.images:
        assert any(d.name == "motorcycle" for d in image.detections)


def test_text_query_without_match_returns_no_images(local_api):
    with _client(local_api) as client:
        assert client.search(text="zebra", num_similar=5).images == ()


def test_unlabelled_image_gets_an_empty_list_never_boxes(local_api):
    with _client(local_api) as client:
        result = client.search(url=local_api.image_url("rocket.jpg"), num_similar=1, labels=True)
    assert result.images[0].detections == ()


def test_without_labels_no_annotations(local_api):
    with _client(local_api) as client:
        result = client.search(url=local_api.image_url("coffee.jpg"), num_similar=2)
    assert all(im.detections is None for im in result.images)


def test_num_similar_default_and_max(local_api):
    assert len(json.loads(_post(local_api, {"text": "person"}).json()["body"])["images"]) == 1
    body = json.loads(
        _post(local_api, {"url": local_api.image_url("coffee.jpg"), "num_similar": 50}).json()["body"]
    )
    assert len(body["images"]) == min(50, len(local_api.records()))


def test_client_maps_server_errors(local_api):
    with (
        sc.SimilarImagesClient(
            api_key="nope", base_url=local_api.base_url, cache=False, usage=None
        ) as client,
        pytest.raises(sc.InvalidApiKey) as info,
    ):
        client.search(text="cat")
    assert info.value.status == 403 and "nope" not in str(info.value)


def test_image_sent_as_base64_by_hand(local_api):
    data = base64.b64encode((local_api.images_dir / "horse.jpg").read_bytes()).decode()
    body = json.loads(
        _post(local_api, {"image": data, "num_similar": 1, "get_labels": "coco_yolov7"}).json()["body"]
    )
    assert body["annotations"][0]["annotations"][0]["name"] == "horse"
