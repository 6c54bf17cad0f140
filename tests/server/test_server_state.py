"""Daily limits across restarts, incremental indexing, concurrency, logs, and the ONNX embedder's plumbing."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import simages_core as sc
from simages_server.cli import main as server_main
from simages_server.embedders import DescriptorEmbedder, OnnxEmbedder
from simages_server.index import ImageIndex, build_index
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
        assert over.status_code == 402 and "day limit" in over.json()["error"]
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
    assert all((tmp_path / "index" / "thumbnails" / f"{r.id}.webp").is_file() for r in index.records)
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


# --- ONNX embedder plumbing ------------------------------------------------------------


def _tiny_onnx_models(tmp_path):
    """An image encoder (mean colour -> 4-d) and a text encoder (tokens -> 4-d), built in the test."""
    w_img = numpy_helper.from_array(np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]], np.float32), "w")
    image_graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["embeds"]),
        ],
        "image_encoder",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("embeds", TensorProto.FLOAT, ["n", 4])],
        [w_img],
    )
    rng = np.random.default_rng(0)
    w_txt = numpy_helper.from_array(rng.normal(size=(77, 4)).astype(np.float32), "w")
    text_graph = helper.make_graph(
        [
            helper.make_node("Cast", ["tokens"], ["as_float"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["as_float", "w"], ["embeds"]),
        ],
        "text_encoder",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["n", 77])],
        [helper.make_tensor_value_info("embeds", TensorProto.FLOAT, ["n", 4])],
        [w_txt],
    )
    paths = []
    for name, graph in (("image.onnx", image_graph), ("text.onnx", text_graph)):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, tmp_path / name)
        paths.append(tmp_path / name)
    return paths


def test_onnx_embedder_serves_image_and_text_queries(tmp_path):
    image_model, text_model = _tiny_onnx_models(tmp_path)
    embedder = OnnxEmbedder(image_model, text_model)
    assert (embedder.dim, embedder.side, embedder.supports_text) == (4, 16, True)
    vectors = embedder.embed_images(
        [Image.new("RGB", (40, 30), (250, 10, 10)), Image.new("RGB", (8, 8), (10, 10, 250))]
    )
    assert vectors.shape == (2, 4) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert vectors[0, 0] > vectors[0, 2] and vectors[1, 2] > vectors[1, 0]

    images = tmp_path / "images"
    images.mkdir()
    for name, colour in (("red", (250, 10, 10)), ("green", (10, 250, 10)), ("blue", (10, 10, 250))):
        Image.new("RGB", (48, 48), colour).save(images / f"{name}.png")
    build_index(images, tmp_path / "index", embedder=embedder, progress=False)
    assert ImageIndex.load(tmp_path / "index").embedder == "onnx:image.onnx"
    extra = ("--onnx-image-model", str(image_model), "--onnx-text-model", str(text_model))
    with ServerProcess(tmp_path / "index", extra_args=extra, log_path=tmp_path / "log") as server:
        with sc.SimilarImagesClient(
            api_key=server.api_key, base_url=server.url, cache=False, usage=None
        ) as c:
            red = c.search(image=Image.new("RGB", (20, 20), (240, 20, 20)), num_similar=3)
            text = c.search(text="anything at all", num_similar=3)
        index = ImageIndex.load(tmp_path / "index")
        assert index.records[index.position(red.images[0].id)].file == "red.png"
        assert len(text.images) == 3  # the text encoder ranks every image


def test_onnx_index_refused_by_the_descriptor_server(tmp_path):
    image_model, _ = _tiny_onnx_models(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (16, 16)).save(images / "a.png")
    build_index(images, tmp_path / "index", embedder=OnnxEmbedder(image_model), progress=False)
    with pytest.raises(ValueError, match=r"built with onnx:image\.onnx"):
        build_index(images, tmp_path / "index", progress=False)
    shutil.rmtree(tmp_path / "index")
