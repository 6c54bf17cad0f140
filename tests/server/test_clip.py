"""The CLIP model folder: loading, preprocessing, tokenisation, search over a real server, bad folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import requests
from model_fixtures import clip_folder, yolo_end2end
from onnx import TensorProto, helper
from PIL import Image
from tokenizers import Tokenizer

import simages_core as sc
from simages_server.clip import ClipEmbedder, ClipPreprocess
from simages_server.detector import YoloDetector
from simages_server.index import ImageIndex
from simages_server.indexing import build_index
from simages_server.models import ModelError
from simages_server.testing import ServerProcess

SHADES = {
    "red": [(250, 10, 10), (200, 30, 20), (160, 0, 0)],
    "green": [(10, 240, 10), (30, 180, 40)],
    "blue": [(10, 10, 250), (40, 20, 190)],
}


def _colour_folder(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for colour, shades in SHADES.items():
        for i, rgb in enumerate(shades):
            Image.new("RGB", (64 + 16 * i, 48), rgb).save(folder / f"{colour}_{i}.png")
    return folder


def _files(index, hits):
    return [index.records[index.position(h.id)].file for h in hits]


@pytest.mark.parametrize(("tokenizer", "dtype"), [("wordlevel", np.int64), ("bpe", np.int32)])
def test_text_and_image_queries_use_clip_over_http(tmp_path, tokenizer, dtype):
    model = clip_folder(tmp_path / "clip", tokenizer=tokenizer, token_dtype=dtype)
    build_index(_colour_folder(tmp_path / "images"), tmp_path / "index", embedder=ClipEmbedder(model), progress=False)
    index = ImageIndex.load(tmp_path / "index")
    assert index.models["embedder"]["kind"] == "clip" and index.embedder.startswith("clip:")
    assert index.models["embedder"]["folder"] == str(model.resolve())
    # serve with no flags: the models recorded in the index
    with ServerProcess(tmp_path / "index", log_path=tmp_path / "server.log") as server:
        health = requests.get(server.url + "/health", timeout=5).json()
        assert health["models"]["embedder"]["name"] == index.embedder and health["models"]["detector"] is None
        with sc.SimilarImagesClient(api_key=server.api_key, base_url=server.url, cache=False, usage=None) as c:
            red = c.search(text="a photo of red", num_similar=7)
            green = c.search(image=Image.new("RGB", (30, 50), (20, 220, 30)), num_similar=7)
            blue = c.search(text="the BLUE colour", num_similar=2)
    assert [f.split("_")[0] for f in _files(index, red.images)][:3] == ["red"] * 3
    assert red.images[0].score == pytest.approx(1.0, abs=1e-4)  # cosine: pure red is the red direction
    assert red.images[-1].score < 0.3
    assert [f.split("_")[0] for f in _files(index, green.images)][:2] == ["green"] * 2
    assert [f.split("_")[0] for f in _files(index, blue.images)] == ["blue"] * 2


@pytest.mark.parametrize(("tokenizer", "dtype"), [("wordlevel", np.int32), ("bpe", np.int64)])
def test_text_model_receives_the_tokenizer_ids_padded_in_its_dtype(tmp_path, tokenizer, dtype):
    length = 12
    model = clip_folder(tmp_path / "clip", dim=length, context_length=length, tokenizer=tokenizer, token_dtype=dtype, text="echo")
    embedder = ClipEmbedder(model)
    reference = Tokenizer.from_file(str(model / "textual" / "tokenizer.json"))
    reference.enable_truncation(length)  # the library truncates (keeping a BPE end token); we pad by hand
    pad = json.loads((model / "textual" / "tokenizer_config.json").read_text())["pad_token"]
    texts = ["a photo of red", "green " * 30]  # the second is truncated to the context length
    expected = []
    for text in texts:
        ids = reference.encode(text).ids
        expected.append(ids + [reference.token_to_id(pad)] * (length - len(ids)))
    tokens = embedder.tokenize(texts)
    assert tokens.dtype == dtype and tokens.tolist() == expected
    # The echo model returns what it was fed (normalised): the exact ids reached it.
    fed = np.asarray(expected, np.float32)
    assert np.allclose(embedder.embed_texts(texts), fed / np.linalg.norm(fed, axis=1, keepdims=True), atol=1e-6)


def test_preprocess_shortest_crops_the_centre_and_squash_keeps_everything():
    stripes = Image.new("RGB", (300, 100), (250, 0, 0))
    stripes.paste((0, 250, 0), (100, 0, 200, 100))
    stripes.paste((0, 0, 250), (200, 0, 300, 100))
    common = {"size": 32, "interpolation": "bilinear", "mean": [0, 0, 0], "std": [1, 1, 1]}
    shortest = ClipPreprocess.load_dict({**common, "resize_mode": "shortest"})(stripes)
    squash = ClipPreprocess.load_dict({**common, "resize_mode": "squash"})(stripes)
    assert shortest.shape == squash.shape == (3, 32, 32)
    assert np.allclose(shortest.mean(axis=(1, 2)), (0, 250 / 255, 0), atol=0.02)  # only the green third
    assert np.allclose(squash.mean(axis=(1, 2)), (250 / 255 / 3,) * 3, atol=0.02)


def test_reindexing_labels_without_reembedding_and_refuses_another_clip(tmp_path):
    images = _colour_folder(tmp_path / "images")
    embedder = ClipEmbedder(clip_folder(tmp_path / "clip"))
    build_index(images, tmp_path / "index", embedder=embedder, progress=False)
    before = ImageIndex.load(tmp_path / "index")
    assert all(r.detections is None for r in before.records)
    rows_before = np.array(before.embeddings)

    detector = YoloDetector(yolo_end2end(tmp_path / "yolo.onnx", [((1, 0, 0), 0, 0.9)]))
    report = build_index(images, tmp_path / "index", embedder=embedder, detector=detector, progress=False)
    assert (report.added, report.labelled, report.total) == (0, 7, 7)
    after = ImageIndex.load(tmp_path / "index")
    assert np.array_equal(after.embeddings, rows_before)
    assert after.models["detector"]["name"] == detector.name
    labels = {r.file: r.detections for r in after.records}
    assert [d.name for d in labels["red_0.png"]] == ["person"]
    assert labels["red_0.png"][0].box == (0.0, 0.0, 64.0, 48.0)
    assert labels["green_0.png"] == ()  # seen by the detector, nothing found: an empty list

    other = ClipEmbedder(clip_folder(tmp_path / "other-clip", dim=16))
    with pytest.raises(ValueError, match=r"built with clip:\w+ \(.*/clip\), not clip:\w+ \(.*/other-clip\): an index"):
        build_index(images, tmp_path / "index", embedder=other, progress=False)
    # A moved copy of the same model is the same model: growing the index with it is fine.
    shutil.copytree(tmp_path / "clip", tmp_path / "moved")
    assert build_index(images, tmp_path / "index", embedder=ClipEmbedder(tmp_path / "moved"), progress=False).added == 0


def _write_model(path, input_type, input_shape, output_shape):
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        "bad",
        [helper.make_tensor_value_info("x", input_type, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def test_bad_clip_folders_get_errors_naming_the_file(tmp_path):
    with pytest.raises(ModelError, match=r"CLIP model folder not found: .*nowhere"):
        ClipEmbedder(tmp_path / "nowhere")

    def fresh(name):
        return clip_folder(tmp_path / name)

    folder = fresh("no-tokenizer-config")
    (folder / "textual" / "tokenizer_config.json").unlink()
    with pytest.raises(ModelError, match=r"CLIP model file not found: .*textual/tokenizer_config\.json"):
        ClipEmbedder(folder)

    folder = fresh("no-embed-dim")
    (folder / "config.json").write_text(json.dumps({"text_cfg": {"context_length": 16}}))
    with pytest.raises(ModelError, match=r"no-embed-dim/config\.json: needs 'embed_dim'"):
        ClipEmbedder(folder)

    folder = fresh("flat-visual")
    _write_model(folder / "visual" / "model.onnx", TensorProto.FLOAT, ["n", 3072], ["n", 3072])
    with pytest.raises(ModelError, match=r"CLIP image model .*visual/model\.onnx: input 'x' has rank 2"):
        ClipEmbedder(folder)

    folder = fresh("text-rank")
    _write_model(folder / "textual" / "model.onnx", TensorProto.INT64, ["n", 16], ["n", 16, 8])
    with pytest.raises(ModelError, match=r"CLIP text model .*textual/model\.onnx: output has shape .*expected rank 2"):
        ClipEmbedder(folder)

    folder = fresh("float-text")
    _write_model(folder / "textual" / "model.onnx", TensorProto.FLOAT, ["n", 16], ["n", 8])
    with pytest.raises(ModelError, match=r"textual/model\.onnx: input 'x' is tensor\(float\), expected int32 or int64"):
        ClipEmbedder(folder)

    folder = fresh("bad-tokenizer")
    (folder / "textual" / "tokenizer.json").write_text('{"model": {"type": "Nonsense"}}')
    with pytest.raises(ModelError, match=r"tokenizer .*bad-tokenizer/textual/tokenizer\.json does not load"):
        ClipEmbedder(folder)

    folder = fresh("bad-pad")
    (folder / "textual" / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<nope>"}))
    with pytest.raises(ModelError, match=r"tokenizer_config\.json: 'pad_token' '<nope>' is not a token"):
        ClipEmbedder(folder)

    folder = fresh("bad-size")
    shutil.copy(folder / "visual" / "preprocess_cfg.json", tmp_path / "cfg.json")
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (folder / "visual" / "preprocess_cfg.json").write_text(json.dumps({**cfg, "size": 64}))
    with pytest.raises(ModelError, match=r"visual/model\.onnx: input shape .* does not take \[N, 3, 64, 64\]"):
        ClipEmbedder(folder)


def test_cli_reports_a_bad_model_in_one_line(tmp_path, capsys):
    from simages_server.cli import main

    images = _colour_folder(tmp_path / "images")
    code = main(["index", str(images), "--out", str(tmp_path / "index"), "--clip-model", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert code == 2 and "CLIP model folder not found" in err and "missing" in err
    assert "Traceback" not in err
