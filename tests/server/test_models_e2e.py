"""End to end with the user's own models: a folder with no COCO file, indexed with CLIP and YOLOv7, served."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
import requests
from model_fixtures import SCENES, index_with_own_models, scene, yolo_end2end
from PIL import Image

import simages_core as sc
from simages_server.cli import main as server_main
from simages_server.embedders import DescriptorEmbedder
from simages_server.generations import read_pointer
from simages_server.index import ImageIndex
from simages_server.indexing import build_index
from simages_server.testing import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    return index_with_own_models(tmp_path_factory.mktemp("own-models"))


def _client(server):
    return sc.SimilarImagesClient(api_key=server.api_key, base_url=server.url, cache=False, usage=None)


def test_served_labels_are_the_detectors_boxes(own, tmp_path):
    assert "indexed 4 new image(s)" in own.output and "labelled 4" in own.output
    index = ImageIndex.load(own.index_dir)
    with ServerProcess(own.index_dir, state=tmp_path, log_path=tmp_path / "server.log") as server:
        health = requests.get(server.url + "/health", timeout=5).json()
        assert health["models"]["embedder"]["kind"] == "clip"
        assert health["models"]["embedder"]["name"] == index.embedder
        assert health["models"]["detector"]["kind"] == "yolov7"
        assert health["models"]["detector"]["form"] == "end2end"
        assert health["models"]["detector"]["file"] == str(own.detector.resolve())
        with _client(server) as client:
            for file_name, (_, _, objects) in SCENES.items():
                query = scene(file_name).resize((300, 240))  # an unindexed, resized copy
                result = client.search(image=query, num_similar=4, labels=True)
                top = result.images[0]
                assert index.records[index.position(top.id)].file == file_name
                assert top.score > 0.999
                assert (top.width, top.height) == SCENES[file_name][0]
                found = sorted((d.name, d.box) for d in top.detections or ())
                assert [name for name, _ in found] == sorted(name for name, _ in objects)
                for (_, box), (_, expected) in zip(found, sorted(objects), strict=True):
                    assert box == pytest.approx(expected, abs=2.0), file_name
            empty = client.search(image=scene("grey_empty.png"), num_similar=1, labels=True)
            assert empty.images[0].detections == ()  # seen by the detector, nothing in it
            text = client.search(text="a photo of red", num_similar=4)
            assert len(text.images) == 4  # CLIP ranks every image for any text


def test_coco_wins_for_the_images_it_covers(own, tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "grey_empty.png", "width": 500, "height": 500}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 62, "bbox": [10, 20, 100, 50]}],
        "categories": [{"id": 62, "name": "chair"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    copy = tmp_path / "index"
    code = server_main(
        ["index", str(own.images_dir), "--out", str(copy), "--clip-model", str(own.clip_dir),
         "--detector", str(own.detector), "--coco", str(tmp_path / "coco.json")]
    )  # fmt: skip
    assert code == 0
    labels = {r.file: r.detections for r in ImageIndex.load(copy).records}
    assert [(d.name, d.box) for d in labels["grey_empty.png"]] == [("chair", (10.0, 20.0, 110.0, 70.0))]
    assert [d.name for d in labels["yellow_person.png"]] == ["person"]  # from the detector


def test_serving_never_mixes_models(own, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIMAGES_SERVER_API_KEYS", "k")
    other = yolo_end2end(tmp_path / "other.onnx", [((0, 1, 0), 2, 0.5)])
    code = server_main(["serve", "--index", str(own.index_dir), "--detector", str(other), "--port", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "was labelled by yolov7:" in err and "yolov7-tiny-end2end.onnx" in err
    assert "other.onnx" in err
    code = server_main(["serve", "--index", str(own.index_dir), "--clip-model", str(tmp_path / "nope")])
    assert code == 2 and "CLIP model folder not found" in capsys.readouterr().err
    # A recorded model that is gone: the message says where the path came from and which flag helps.
    moved = shutil.copytree(own.index_dir, tmp_path / "index-copy")
    meta_path = read_pointer(moved).folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["models"]["detector"]["file"] = str(tmp_path / "gone.onnx")
    meta_path.write_text(json.dumps(meta))
    assert server_main(["serve", "--index", str(moved)]) == 2
    err = capsys.readouterr().err
    assert "YOLOv7 detector not found" in err and "gone.onnx" in err and "pass --detector FILE.onnx" in err
    # Growing the index with another detector is refused too: labels from two detectors would mix.
    from simages_server.clip import ClipEmbedder
    from simages_server.detector import YoloDetector

    with pytest.raises(ValueError, match="labels from two detectors would be mixed"):
        build_index(own.images_dir, own.index_dir, embedder=ClipEmbedder(own.clip_dir),
                    detector=YoloDetector(other), progress=False)  # fmt: skip


def test_a_moved_copy_of_the_models_serves_the_index(own, tmp_path):
    shutil.copytree(own.clip_dir, tmp_path / "clip-copy")
    shutil.copy(own.detector, tmp_path / "detector-copy.onnx")
    extra = ("--clip-model", str(tmp_path / "clip-copy"), "--detector", str(tmp_path / "detector-copy.onnx"))
    with ServerProcess(own.index_dir, state=tmp_path, log_path=tmp_path / "log", extra_args=extra) as server:
        models = requests.get(server.url + "/health", timeout=5).json()["models"]
    assert models["embedder"]["folder"] == str((tmp_path / "clip-copy").resolve())
    assert models["detector"]["file"] == str((tmp_path / "detector-copy.onnx").resolve())


def test_rerunning_index_with_no_flags_uses_the_recorded_models(tmp_path, capsys):
    fresh = index_with_own_models(tmp_path)
    scene("magenta_both.png").resize((400, 300)).save(fresh.images_dir / "later.png")
    assert server_main(["index", str(fresh.images_dir), "--out", str(fresh.index_dir)]) == 0
    assert "indexed 1 new image(s); 5 in" in capsys.readouterr().out
    index = ImageIndex.load(fresh.index_dir)
    later = next(r for r in index.records if r.file == "later.png")
    assert sorted(d.name for d in later.detections or ()) == ["cat", "person"]
    assert index.models["embedder"]["folder"] == str(fresh.clip_dir.resolve())


class _CountingEmbedder(DescriptorEmbedder):
    """Counts images prepared but not yet embedded: what the pipeline holds in memory."""

    def __init__(self) -> None:
        self.prepared = self.embedded = self.most_in_flight = 0
        self.lock = threading.Lock()

    def prepare(self, image):
        with self.lock:
            self.prepared += 1
            self.most_in_flight = max(self.most_in_flight, self.prepared - self.embedded)
        return super().prepare(image)

    def embed_prepared(self, batch):
        with self.lock:
            self.embedded += len(batch)
        return super().embed_prepared(batch)


def test_indexing_streams_with_a_bounded_number_of_images_in_flight(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(240):
        Image.new("RGB", (24, 24), (i, 255 - i, 7)).save(images / f"{i:03d}.png")
    embedder = _CountingEmbedder()
    report = build_index(images, tmp_path / "index", embedder=embedder, progress=False, workers=2, batch_size=8)
    assert report.added == 240 and len(ImageIndex.load(tmp_path / "index").embeddings) == 240
    assert embedder.embedded == 240
    assert embedder.most_in_flight <= (8 + 2 * 2) + 8  # the window (a batch + 2 per worker) and the batch being filled


def test_index_with_no_models_stays_the_descriptor(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(images / "a.png")
    assert server_main(["index", str(images), "--out", str(tmp_path / "index")]) == 0
    index = ImageIndex.load(tmp_path / "index")
    assert index.embedder == "descriptor-v1" and index.models["detector"] is None
    assert index.records[0].detections is None  # nothing labelled it: unknown, not empty
