"""One validation path: ``Query``, ``search``, ``search_many``, ``build_request`` and ``SearchRequest`` share the rules."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import simages_core as sc
from simages_core.protocol import check_request_fields

from .conftest import SAMPLE_BODY, make_client

# Each case: Query keyword arguments, the field InvalidRequest must name, a word the message must hold.
INVALID_QUERIES = [
    pytest.param({}, "url/image/text", "exactly one", id="nothing-to-search"),
    pytest.param({"url": "https://a/b.jpg", "text": "cat"}, "url/image/text", "got url, text", id="url-and-text"),
    pytest.param({"image": b"x", "text": "cat"}, "url/image/text", "image, text", id="image-and-text"),
    pytest.param({"text": ""}, "text", "non-empty", id="empty-text"),
    pytest.param({"text": " \t\n"}, "text", "non-empty", id="blank-text"),
    pytest.param({"text": 42}, "text", "string", id="text-not-a-string"),
    pytest.param({"url": "ftp://host/x.jpg"}, "url", "http or https", id="url-ftp"),
    pytest.param({"url": "example.com/x.jpg"}, "url", "http or https", id="url-no-scheme"),
    pytest.param({"url": "http://"}, "url", "host", id="url-no-host"),
    pytest.param({"url": "http://[::1/x.jpg"}, "url", "http or https", id="url-broken-ipv6"),
    pytest.param({"url": ""}, "url", "non-empty", id="url-empty"),
    pytest.param({"text": "cat", "num_similar": 0}, "num_similar", "from 1 to 50", id="num-similar-0"),
    pytest.param({"text": "cat", "num_similar": 51}, "num_similar", "from 1 to 50", id="num-similar-51"),
    pytest.param({"text": "cat", "num_similar": -3}, "num_similar", "from 1 to 50", id="num-similar-negative"),
    pytest.param({"text": "cat", "num_similar": "5"}, "num_similar", "integer", id="num-similar-str"),
    pytest.param({"text": "cat", "num_similar": 2.0}, "num_similar", "integer", id="num-similar-float"),
    pytest.param({"text": "cat", "num_similar": True}, "num_similar", "integer", id="num-similar-bool"),
    pytest.param({"text": "cat", "labels": "yes"}, "get_labels", "True or False", id="labels-not-bool"),
    pytest.param({"image": 12345}, "image", "unsupported image type", id="image-int"),
    pytest.param({"image": b""}, "image", "empty", id="image-empty-bytes"),
    pytest.param({"image": ""}, "image", "path is empty", id="image-empty-path"),
    pytest.param({"image": "a\x00b.jpg"}, "image", "NUL", id="image-path-nul"),
    pytest.param({"image": np.zeros((4, 4, 2), np.uint8)}, "image", "not an image", id="image-array-2-channels"),
    pytest.param({"image": np.zeros((0, 4, 3), np.uint8)}, "image", "empty", id="image-array-empty"),
]


@pytest.mark.parametrize(("kwargs", "field", "words"), INVALID_QUERIES)
def test_query_is_validated_when_built(kwargs, field, words):
    with pytest.raises(sc.InvalidRequest) as info:
        sc.Query(**kwargs)
    assert info.value.field == field
    assert words in str(info.value)


@pytest.mark.parametrize(("kwargs", "field", "words"), INVALID_QUERIES)
def test_search_and_build_request_take_the_same_path(scripted_api, kwargs, field, words):
    with make_client(scripted_api) as client:
        for call in (client.search, client.build_request):
            with pytest.raises(sc.InvalidRequest) as info:
                call(**kwargs)
            assert info.value.field == field and words in str(info.value)
    assert scripted_api.received == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"text": ""},
        {"url": "ftp://x/y"},
        {"url": "http://a/b", "text": "c"},
        {"text": "cat", "num_similar": 51},
        {"text": "cat", "num_similar": "3"},
        {"text": "cat", "get_labels": "coco"},
    ],
    ids=["empty-text", "bad-url", "two-fields", "num-similar-51", "num-similar-str", "get-labels"],
)
def test_query_and_wire_request_share_one_rule_function(kwargs):
    """The same inputs give the same field and message through Query and SearchRequest."""
    wire = dict(kwargs)
    query = {k: v for k, v in kwargs.items() if k != "get_labels"}
    if "get_labels" in kwargs:
        # A Query cannot even express a wrong label set; check the shared function directly.
        with pytest.raises(sc.InvalidRequest) as direct:
            check_request_fields(None, None, "cat", 1, kwargs["get_labels"])
        with pytest.raises(sc.InvalidRequest) as via_wire:
            sc.SearchRequest.from_json(wire)
        assert (direct.value.field, direct.value.message) == (via_wire.value.field, via_wire.value.message)
        return
    with pytest.raises(sc.InvalidRequest) as via_query:
        sc.Query(**query)
    with pytest.raises(sc.InvalidRequest) as via_wire:
        sc.SearchRequest.from_json(wire)
    assert (via_query.value.field, via_query.value.message) == (via_wire.value.field, via_wire.value.message)


@pytest.mark.parametrize("as_type", [str, Path], ids=["str", "PathLike"])
def test_missing_image_file_is_reported_as_missing(tmp_path, monkeypatch, as_type):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(sc.ImageEncodingError) as info:
        sc.Query(image=as_type("photo.jpg"))
    assert info.value.field == "image"
    assert "image file not found: photo.jpg" in str(info.value)
    assert "base64" not in str(info.value) and "decod" not in str(info.value)


def test_image_folder_and_empty_file_are_named(tmp_path):
    with pytest.raises(sc.ImageEncodingError, match="folder"):
        sc.Query(image=tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(sc.ImageEncodingError, match="is empty"):
        sc.Query(image=empty)


def test_valid_queries_of_every_image_kind(tmp_path):
    path = tmp_path / "ok.png"
    Image.new("RGB", (8, 8)).save(path)
    for image in (path, str(path), os.fsencode(path).decode(), path.read_bytes(), Image.open(path),
                  np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 1), np.uint16)):  # fmt: skip
        assert sc.Query(image=image, num_similar=50, labels=True).image is image


def test_search_many_items_carry_validation_errors_met_while_running(scripted_api, tmp_path):
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    path = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(path)
    queries = [sc.Query(image=path), sc.Query(text="cat")]
    path.unlink()
    with make_client(scripted_api) as client:
        items = client.search_many(queries)
    assert isinstance(items[0].error, sc.ImageEncodingError) and items[0].error.field == "image"
    assert "image file not found" in str(items[0].error)
    assert items[1].ok


def test_search_many_refuses_what_is_neither_a_query_nor_a_mapping(scripted_api):
    with make_client(scripted_api) as client, pytest.raises(TypeError, match="mappings of their arguments, got str at 1"):
        client.search_many([sc.Query(text="cat"), "dog"])  # type: ignore[list-item]
    assert scripted_api.received == []


def test_a_batch_of_mappings_loses_nothing_to_one_missing_file(scripted_api, tmp_path):
    """Building ``Query(image="missing.jpg")`` raises before anything runs; a mapping fails its item only."""
    scripted_api.script(scripted_api.success(SAMPLE_BODY), scripted_api.success(SAMPLE_BODY))
    present = tmp_path / "present.png"
    Image.new("RGB", (8, 8)).save(present)
    specs = [
        {"image": present, "labels": True},
        {"image": tmp_path / "missing.jpg", "labels": True},
        {"text": "cat", "num_similar": 3},
    ]
    with make_client(scripted_api) as client:
        items = client.search_many(specs, max_workers=1)
    assert [item.ok for item in items] == [True, False, True]
    assert isinstance(items[1].error, sc.ImageEncodingError) and items[1].error.field == "image"
    assert f"image file not found: {tmp_path / 'missing.jpg'}" in str(items[1].error)
    assert items[1].query == specs[1]  # no Query could be built: the item as given
    assert items[0].query == sc.Query(image=present, labels=True) and items[2].query.num_similar == 3
    assert len(scripted_api.received) == 2


def test_a_mapping_with_an_unknown_or_bad_field_is_that_items_error(scripted_api):
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    with make_client(scripted_api) as client:
        items = client.search_many([{"txt": "cat"}, {"text": "cat", "num_similar": 0}, {"text": "dog"}])
    assert isinstance(items[0].error, sc.InvalidRequest) and "unknown query field(s) 'txt'" in str(items[0].error)
    assert isinstance(items[1].error, sc.InvalidRequest) and items[1].error.field == "num_similar"
    assert items[2].ok and len(scripted_api.received) == 1


def test_invalid_request_documents_every_field_name():
    doc = sc.InvalidRequest.__doc__ or ""
    for name in ("url", "image", "text", "num_similar", "get_labels", "url/image/text"):
        assert f'``"{name}"``' in doc
