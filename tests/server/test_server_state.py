"""Daily limits across restarts, incremental indexing, concurrency, logs, and the CLIP embedder's plumbing."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from model_fixtures import clip_folder
from PIL import Image

import simages_core as sc
from simages_server.app import ServerSettings, SimilarImagesApp
from simages_server.cli import main as server_main
from simages_server.clip import ClipEmbedder
from simages_server.embedders import DescriptorEmbedder
from simages_server.index import ImageIndex
from simages_server.indexing import build_index
from simages_server.testing import ServerProcess

pytestmark = pytest.mark.integration


def _search(url, key, body=None):
    return requests.post(
        url + "/", data=json.dumps(body or {"text": "cat"}), headers={"x-api-key": key}, timeout=30
    )


def test_daily_limit_is_402_and_survives_a_restart(local_api, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    with local_api.start_server(tmp_path, daily_limit=3, state=state) as server:
        assert [_search(server.url, server.api_key).status_code for _ in range(3)] == [200, 200, 200]
        # A failed request is not counted (the API bills successes only)...
        assert _search(server.url, server.api_key, {"text": ""}).status_code == 400
        over = _search(server.url, server.api_key)
        assert over.status_code == 402 and "daily limit of 3" in over.json()["error"]
    with local_api.start_server(tmp_path, daily_limit=3, state=state) as server:
        assert _search(server.url, server.api_key).status_code == 402
        with (
            sc.SimilarImagesClient(api_key=server.api_key, base_url=server.url, cache=False, usage=None) as c,
            pytest.raises(sc.QuotaExceeded),
        ):
            c.search(text="cat")


def test_limit_is_per_key(local_api, tmp_path):
    with local_api.start_server(tmp_path, api_keys=("key-a", "key-b"), daily_limit=1) as server:
        assert _search(server.url, "key-a").status_code == 200
        assert _search(server.url, "key-a").status_code == 402
        assert _search(server.url, "key-b").status_code == 200


def test_concurrent_clients_are_served_and_limit_is_exact(local_api, tmp_path):
    with local_api.start_server(tmp_path, daily_limit=20) as server, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: _search(server.url, server.api_key).status_code, range(30)))
    assert sorted(codes) == [200] * 20 + [402] * 10


def test_log_has_one_line_per_request_without_key_or_image(local_api, tmp_path):
    with local_api.start_server(tmp_path, api_keys=("very-secret-key-42",)) as server:
        image = (local_api.images_dir / "horse.jpg").read_bytes()
        import base64

        payload = base64.b64encode(image).decode()
        _search(server.url, "very-secret-key-42", {"image": payload})
        _search(server.url, "very-secret-key-42", {"text": "horse"})
    log = (tmp_path / "server.log").read_text()
    assert "very-secret-key-42" not in log and payload[:40] not in log
    lines = [line for line in log.splitlines() if "POST / " in line]
    assert len(lines) == 2 and "kind=image" in lines[0] and "kind=text" in lines[1]


def test_incremental_index_adds_only_new_images(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0)]):
        Image.new("RGB", (64, 48), colour).save(images / f"img{i}.png")
    (images / "notes.txt").write_text("not an image")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    first = build_index(images, tmp_path / "index", progress=False)
    assert (first.added, first.total, len(first.skipped)) == (2, 2, 1)
    ids_before = [r.id for r in ImageIndex.load(tmp_path / "index").records]
    Image.new("RGB", (64, 48), (0, 0, 200)).save(images / "img2.png")
    second = build_index(images, tmp_path / "index", progress=False)
    assert (second.added, second.total) == (1, 3)
    index = ImageIndex.load(tmp_path / "index")
    assert [r.id for r in index.records][:2] == ids_before
    assert index.embeddings.shape == (3, DescriptorEmbedder().dim)
    assert all(index.thumbnail_path(r.id).is_file() for r in index.records)
    assert build_index(images, tmp_path / "index", progress=False).added == 0


def test_index_command_line(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(images / "a.jpg")
    assert server_main(["index", str(images), "--out", str(tmp_path / "idx")]) == 0
    assert "indexed 1 new image(s)" in capsys.readouterr().out
    assert server_main(["index", str(tmp_path / "missing"), "--out", str(tmp_path / "idx2")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_serve_refuses_to_start_without_keys(tmp_path, monkeypatch, demo_collection, capsys):
    monkeypatch.delenv("SIMAGES_SERVER_API_KEYS", raising=False)
    assert server_main(["serve", "--index", str(demo_collection[1])]) == 2
    assert "no API keys" in capsys.readouterr().err


# --- similarity on real photos ------------------------------------------------------


@pytest.mark.parametrize("variant", ["resized", "recompressed", "cropped", "warmer"])
def test_descriptor_ranks_near_duplicates_above_unrelated_photos(demo_collection, variant):
    demo_dir, index_dir = demo_collection
    index = ImageIndex.load(index_dir)
    embedder = DescriptorEmbedder()
    for family in ("astronaut", "chelsea", "coffee", "motorcycle_left", "camera"):
        query = embedder.embed_images(
            [Image.open(demo_dir / "images" / f"{family}_{variant}.jpg").convert("RGB")]
        )[0]
        ranked = [index.records[i].file for i, _ in index.nearest(query, len(index))]
        original_rank = ranked.index(f"{family}.jpg")
        first_unrelated = next(i for i, f in enumerate(ranked) if not f.startswith(family))
        assert original_rank < first_unrelated, (family, variant, ranked[:8])


# --- CLIP embedder plumbing (the model folders are built in tests/model_fixtures.py) -------


def test_clip_embedder_serves_image_and_text_queries(tmp_path):
    model = clip_folder(tmp_path / "clip", dim=4, size=16)
    embedder = ClipEmbedder(model)
    assert (embedder.dim, embedder.preprocess.height, embedder.supports_text) == (4, 16, True)
    vectors = embedder.embed_images(
        [Image.new("RGB", (40, 30), (250, 10, 10)), Image.new("RGB", (8, 8), (10, 10, 250))]
    )
    assert vectors.shape == (2, 4) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert float(vectors[0] @ vectors[1]) < 0.1  # red and blue point apart

    images = tmp_path / "images"
    images.mkdir()
    for name, colour in (("red", (250, 10, 10)), ("green", (10, 250, 10)), ("blue", (10, 10, 250))):
        Image.new("RGB", (48, 48), colour).save(images / f"{name}.png")
    build_index(images, tmp_path / "index", embedder=embedder, progress=False)
    assert ImageIndex.load(tmp_path / "index").embedder == embedder.name
    extra = ("--clip-model", str(model))
    with ServerProcess(tmp_path / "index", extra_args=extra, log_path=tmp_path / "log") as server:
        with sc.SimilarImagesClient(
            api_key=server.api_key, base_url=server.url, cache=False, usage=None
        ) as c:
            red = c.search(image=Image.new("RGB", (20, 20), (240, 20, 20)), num_similar=3)
            text = c.search(text="anything at all", num_similar=3)
        index = ImageIndex.load(tmp_path / "index")
        assert index.records[index.position(red.images[0].id)].file == "red.png"
        assert len(text.images) == 3  # the text encoder ranks every image


def test_clip_index_refused_by_the_descriptor_server(tmp_path):
    model = clip_folder(tmp_path / "clip", dim=4, size=16)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (16, 16)).save(images / "a.png")
    embedder = ClipEmbedder(model)
    build_index(images, tmp_path / "index", embedder=embedder, progress=False)
    with pytest.raises(ValueError, match=r"built with clip:\w+ \(.*/clip\), not descriptor-v1"):
        build_index(images, tmp_path / "index", progress=False)
    with pytest.raises(ValueError, match=r"index was built with clip:\w+, server embedder is descriptor"):
        SimilarImagesApp(
            ImageIndex.load(tmp_path / "index"),
            ServerSettings(key_digests=frozenset(), quota_path=tmp_path / "quota.sqlite"),
        )
    shutil.rmtree(tmp_path / "index")
