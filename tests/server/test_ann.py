"""The ANN index of the local server: threshold, search over HTTP, growth by adding, atomic writes, refusals.

Small sizes so the file runs in seconds: the thresholds are set through the same knob the
command uses (``--ann-threshold`` / ``build_index(ann_threshold=...)``). Recall is measured on
clustered synthetic rows big enough that the index really probes only part of its lists: rows
whose clusters have their own axes, and rows in a cone sharing a few dominant directions (like
CLIP embeddings), which defeat the fixed ``nprobe`` of the first version; ``nprobe`` is tuned.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from simages_server import ann as ann_module
from simages_server.ann import AnnIndex
from simages_server.ann_tuning import TARGET_RECALL, tuning_sample
from simages_server.cli import main as server_main
from simages_server.embedders import DescriptorEmbedder
from simages_server.generations import read_pointer
from simages_server.index import ImageIndex, IndexedImage, image_id_for, read_meta
from simages_server.indexing import build_index
from simages_server.testing import ServerProcess, free_port

API_KEY = "ann-test-key"


def _write_images(folder: Path, start: int, count: int) -> None:
    """Small, varied pictures: a colour family each (so the descriptor rows cluster), noise on top."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    families = np.array([(220, 40, 40), (40, 200, 60), (50, 60, 220), (230, 220, 50), (30, 30, 30)])
    for i in range(start, start + count):
        base = families[i % len(families)]
        gradient = np.linspace(0, 1, 40)[None, :, None] * rng.integers(-80, 80, 3)
        pixels = np.clip(base + gradient + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:04d}.png")


def _clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit rows around ``clusters`` centres, each cluster stretched differently (not uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.lognormal(0, 0.5, (clusters, dim)).astype(np.float32) * (np.arange(1, dim + 1) ** -0.6)
    assign = rng.integers(0, clusters, n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * spread[assign]
    noise *= 0.9 / np.linalg.norm(noise, axis=1, keepdims=True)
    rows = centres[assign] + noise
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _shared_cone(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit rows as in ``bench_ann.write_shared``: a common mean direction, 8 dominant directions
    every cluster varies along with large variance, cluster offsets, a decaying-spectrum residual."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    mean, dominant, rest = basis[:, 0], basis[:, 1:9], basis[:, 9:]
    dominant_std = (0.45 * np.arange(1, 9) ** -0.5).astype(np.float32)
    offsets = rng.standard_normal((clusters, dim - 9)).astype(np.float32) @ rest.T
    offsets *= 0.5 / np.linalg.norm(offsets, axis=1, keepdims=True)
    offsets += (rng.standard_normal((clusters, 8)).astype(np.float32) * dominant_std * 0.5) @ dominant.T
    stretch = rng.permuted(np.tile(np.arange(1, dim + 1) ** -0.6, (clusters, 1)), axis=1)
    stretch = (stretch * rng.lognormal(0, 0.5, (clusters, dim))).astype(np.float32)
    which = rng.integers(0, clusters, n)
    residual = (rng.standard_normal((n, dim)).astype(np.float32) * stretch[which]) @ basis.T
    residual *= 0.35 / np.linalg.norm(residual, axis=1, keepdims=True)
    shared = (rng.standard_normal((n, 8)).astype(np.float32) * dominant_std) @ dominant.T
    rows = mean + offsets[which] + shared + residual
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _old_nprobe(nlist: int) -> int:
    """The first version's fixed formula: max(32, nlist/40), at most nlist."""
    return min(nlist, max(32, nlist // 40))


def _recall(found: list[list[int]], rows: np.ndarray, queries: np.ndarray) -> float:
    """recall@10 of ``found`` (positions, the query's own row dropped) against a full numpy sort."""
    hits = 0
    for q, answer in zip(queries, found, strict=True):
        exact = [int(i) for i in np.argsort(-(rows @ rows[q]), kind="stable")[:11] if i != q][:10]
        hits += len(set(exact) & {i for i in answer if i != q})
    return hits / (10 * len(queries))


def _search_ids(server: ServerProcess, image_id: str, k: int = 10) -> list[tuple[str, float]]:
    response = requests.post(
        server.url,
        json={"url": f"{server.url}/images/{image_id}", "num_similar": k},
        headers={"x-api-key": API_KEY},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = json.loads(response.json()["body"])
    return [(image["id"], image["score"]) for image in body["images"]]


def _serve(index_dir: Path, tmp_path: Path) -> ServerProcess:
    return ServerProcess(index_dir, api_keys=(API_KEY,), state=tmp_path / "state", log_path=tmp_path / "server.log")


def _meta(index_dir: Path) -> dict:
    return read_meta(index_dir)


def _write_meta(index_dir: Path, meta: dict) -> None:
    """Edit the current generation's metadata in place (to make it wrong)."""
    (read_pointer(index_dir).folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def _ann_path(index_dir: Path) -> Path:
    return read_pointer(index_dir).folder / _meta(index_dir)["ann"]["file"]



def _saved_without_files(tmp_path: Path, rows: np.ndarray) -> tuple[Path, Path]:
    """An index of ``rows`` whose images are placeholder files recorded with their size and mtime (so a run
    never reads them again), and five real files to grow it with: (images, index)."""
    images, out = tmp_path / "images", tmp_path / "index"
    (images / "old").mkdir(parents=True)
    records = []
    for i in range(len(rows)):
        path = images / "old" / f"r{i}.png"
        path.write_bytes(b"%d" % i)
        st = path.stat()
        records.append(
            IndexedImage(image_id_for(f"old/r{i}.png"), f"old/r{i}.png", 64, 64, size=st.st_size,
                         mtime_ns=st.st_mtime_ns, digest=f"{i:032x}", fingerprint=None)
        )  # fmt: skip
    _write_images(images, 0, 5)
    ImageIndex(out, images, records, rows, DescriptorEmbedder().name).save()
    return images, out

def test_above_threshold_ann_over_http_matches_exact_search_on_clustered_rows(tmp_path):
    """20,000 clustered rows (an index built earlier, below the threshold) grow past a threshold of
    10,000: the real indexing path builds the ANN index, and the real server searches it."""
    rows = _clustered(20_000, DescriptorEmbedder().dim, 400, seed=1)
    images, out = _saved_without_files(tmp_path, rows)
    assert "ann" not in _meta(out)

    report = build_index(images, out, progress=False, ann_threshold=10_000)
    assert report.ann is not None and (report.ann.action, report.ann.count) == ("built", 20_005)
    index = ImageIndex.load(out)
    assert index.ann is not None and isinstance(index.embeddings, np.memmap)
    assert index.ann.nprobe < index.ann.nlist  # the search really skips lists: the recall below is earned
    all_rows = np.asarray(index.embeddings)
    ids = [r.id for r in index.records]
    position = {image_id: i for i, image_id in enumerate(ids)}

    queries = np.random.default_rng(2).choice(len(rows), 100, replace=False)
    hits = 0
    with _serve(out, tmp_path) as server:
        for q in queries:
            found = _search_ids(server, ids[q])
            exact = np.argsort(-(all_rows @ all_rows[q]), kind="stable")[:10]
            hits += len({image_id for image_id, _ in found} & {ids[i] for i in exact})
            scores = [score for _, score in found]
            assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
            for image_id, score in found:  # exact cosines, as exact search reports them
                assert score == pytest.approx(float(all_rows[position[image_id]] @ all_rows[q]), abs=1e-5)
    assert "ANN search (faiss-ivf-flat" in (tmp_path / "server.log").read_text()
    recall = hits / (10 * len(queries))
    print(f"recall@10 {recall:.4f} with nprobe {index.ann.nprobe} of {index.ann.nlist} lists")
    assert recall >= 0.95, recall


def test_tuned_nprobe_holds_recall_on_shared_direction_rows_that_defeat_the_old_formula(tmp_path, capsys):
    """Rows in a cone sharing 8 dominant directions (like CLIP's): the first version's fixed nprobe
    gives recall@10 ~0.76 here; the measured one is larger, recorded, and holds ≥ 0.95 over HTTP on
    queries the tuning never saw."""
    rows = _shared_cone(20_000, DescriptorEmbedder().dim, 400, seed=1)
    images, out = _saved_without_files(tmp_path, rows)

    assert server_main(["index", str(images), "--out", str(out), "--ann-threshold", "10000"]) == 0
    recorded = _meta(out)["ann"]
    nlist, nprobe = recorded["nlist"], recorded["nprobe"]
    assert recorded["recall"] >= TARGET_RECALL and recorded["tuned_queries"] == 400
    assert nprobe > _old_nprobe(nlist) and nprobe < nlist
    printed = capsys.readouterr().out
    assert (
        f"ANN index: 20,005 rows, nprobe {nprobe} of {nlist} lists, "
        f"recall@10 {recorded['recall']:.3f} on 400 sampled queries"
    ) in printed

    index = ImageIndex.load(out)
    all_rows = np.asarray(index.embeddings)
    assert index.ann is not None and index.ann.nprobe == nprobe and index.ann.recall == recorded["recall"]
    held_out = np.setdiff1d(np.random.default_rng(2).choice(len(rows), 150, replace=False), tuning_sample(len(all_rows)))
    queries = held_out[:100]
    assert len(queries) == 100

    # The old formula on the same file: the data really is the hard kind.
    old = AnnIndex.load(index.folder, dataclasses.replace(index.ann_info, nprobe=_old_nprobe(nlist)), rows=len(all_rows))
    old_recall = _recall([[i for i, _ in old.search(all_rows[q], 11)] for q in queries], all_rows, queries)
    assert old_recall < 0.95, old_recall

    ids = [r.id for r in index.records]
    position = {image_id: i for i, image_id in enumerate(ids)}
    with _serve(out, tmp_path) as server:
        found = [[position[image_id] for image_id, _ in _search_ids(server, ids[q], 11)] for q in queries]
    served_recall = _recall(found, all_rows, queries)
    print(f"recall@10 {served_recall:.3f} at tuned nprobe {nprobe}, {old_recall:.3f} at the old {_old_nprobe(nlist)}")
    assert served_recall >= 0.95, served_recall
    assert f"nprobe {nprobe}, measured recall@10 {recorded['recall']:.3f}" in (tmp_path / "server.log").read_text()


def test_when_no_nprobe_within_the_cap_reaches_the_target_it_warns_and_searches_every_list(caplog):
    rows = _shared_cone(10_000, 128, 200, seed=3)
    caplog.set_level(logging.WARNING, logger="simages_server")
    # A cap of 10% of the lists: far below what this data needs for recall@10 0.97.
    index = AnnIndex.build(rows, max_probe_share=0.1)
    assert "is below the target 0.97 on this data; searching all" in caplog.text
    assert index.nprobe == index.nlist > 10 and index.recall == 1.0
    info = index.info("ann-x.faiss")
    assert (info.nprobe, info.recall, info.tuned_queries) == (index.nlist, 1.0, 400)
    # Every list searched: the answers are exact search's.
    for q in (0, 17, 4_242, 9_999):
        assert [i for i, _ in index.search(rows[q], 10)] == [
            int(i) for i in np.argsort(-(rows @ rows[q]), kind="stable")[:10]
        ]
    with pytest.raises(ValueError, match="target recall must be in"):
        index.tune(rows, target=1.5)


def test_threshold_decides_between_ann_and_exact_search(tmp_path):
    images = tmp_path / "images"
    _write_images(images, 0, 60)
    above = build_index(images, tmp_path / "above", progress=False, ann_threshold=50)
    below = build_index(images, tmp_path / "below", progress=False, ann_threshold=61)
    assert above.ann is not None and above.ann.action == "built" and above.ann.count == 60
    assert below.ann is None
    assert _meta(tmp_path / "above")["ann"]["count"] == 60 and "ann" not in _meta(tmp_path / "below")
    assert not list(read_pointer(tmp_path / "below").folder.glob("ann*"))

    exact = ImageIndex.load(tmp_path / "below")
    assert exact.ann is None and not isinstance(exact.embeddings, np.memmap)
    with _serve(tmp_path / "above", tmp_path / "a") as ann_server, _serve(tmp_path / "below", tmp_path / "b") as plain:
        for record in exact.records[:12]:
            # Same answer on the wire: the same ids in the same order, scores equal to float32 rounding.
            from_ann, from_exact = _search_ids(ann_server, record.id), _search_ids(plain, record.id)
            assert [i for i, _ in from_ann] == [i for i, _ in from_exact]
            assert [s for _, s in from_ann] == pytest.approx([s for _, s in from_exact], abs=1e-5)
    assert "ANN search" in (tmp_path / "a" / "server.log").read_text()
    assert "exact search" in (tmp_path / "b" / "server.log").read_text()


def test_growing_adds_to_the_loaded_ann_index_without_rebuilding(tmp_path, capsys):
    images, out = tmp_path / "images", tmp_path / "index"
    _write_images(images, 0, 60)
    assert server_main(["index", str(images), "--out", str(out), "--ann-threshold", "50"]) == 0
    printed = capsys.readouterr().out
    assert "built the ANN index over 60 rows" in printed
    assert "ANN index: 60 rows, nprobe 1 of 1 lists, recall@10 1.000 on 60 sampled queries" in printed
    first = _meta(out)["ann"]
    first_folder = read_pointer(out).folder
    centroids = AnnIndex.load(first_folder, ann_module.AnnInfo.from_json(first, out), rows=60).centroids()

    _write_images(images, 60, 25)
    assert server_main(["index", str(images), "--out", str(out), "--ann-threshold", "50"]) == 0
    printed = capsys.readouterr().out
    assert "added 25 to the ANN index (85 rows)" in printed
    grown = _meta(out)["ann"]
    assert grown["count"] == 85 and read_pointer(out).folder != first_folder
    # Tuned again after the growth, over all 85 rows (the sample is every row at this size).
    assert (grown["recall"], grown["tuned_queries"]) == (1.0, 85) and first["tuned_queries"] == 60
    assert "recall@10 1.000 on 85 sampled queries" in printed
    assert first_folder.exists()  # the previous generation stays (a server may still be on it)...
    index = ImageIndex.load(out)
    assert index.ann is not None and index.ann.count == 85
    # Same k-means centroids: the old part was loaded and extended, not trained again.
    np.testing.assert_array_equal(index.ann.centroids(), centroids)
    new_record = index.records[-1]
    assert index.nearest(np.asarray(index.embeddings[len(index) - 1]), 1)[0][0] == index.position(new_record.id)

    # Nothing new: the ANN file stays as it is, and no generation is written.
    assert server_main(["index", str(images), "--out", str(out), "--ann-threshold", "50"]) == 0
    printed = capsys.readouterr().out
    assert "ANN index unchanged (85 rows)" in printed and "nothing changed" in printed
    assert _meta(out)["ann"] == grown

    # --ann off goes back to exact search and removes the file.
    assert server_main(["index", str(images), "--out", str(out), "--ann", "off"]) == 0
    assert "removed the ANN index" in capsys.readouterr().out
    assert "ann" not in _meta(out) and not list(read_pointer(out).folder.glob("ann*"))
    assert not first_folder.exists()  # ...until two newer ones replaced it


def test_an_interrupted_ann_write_leaves_the_old_index_servable(tmp_path, monkeypatch):
    images, out = tmp_path / "images", tmp_path / "index"
    _write_images(images, 0, 60)
    build_index(images, out, progress=False, ann_threshold=50)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}

    faiss = ann_module._faiss()
    real_write = faiss.write_index

    def write_half_then_fail(index, path):
        real_write(index, path)
        with open(path, "r+b") as fh:  # a torn file, as after a crash or a full disk
            fh.truncate(Path(path).stat().st_size // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(faiss, "write_index", write_half_then_fail)
    _write_images(images, 60, 10)
    with pytest.raises(OSError, match="No space left"):
        build_index(images, out, progress=False, ann_threshold=50)
    monkeypatch.setattr(faiss, "write_index", real_write)

    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    # Nothing replaced, no unfinished generation left (the new thumbnails are removed by the next run).
    assert {k: v for k, v in after.items() if k.parts[0] != "thumbnails"} == {
        k: v for k, v in before.items() if k.parts[0] != "thumbnails"
    }
    with _serve(out, tmp_path) as server:
        record = ImageIndex.load(out).records[5]
        assert _search_ids(server, record.id)[0][0] == record.id

    # The next run completes the growth.
    report = build_index(images, out, progress=False, ann_threshold=50)
    assert report.ann is not None and (report.ann.action, report.ann.count) == ("added", 70)


def _serve_refusal(index_dir: Path) -> subprocess.CompletedProcess[str]:
    """``simages-server serve`` on an index it must refuse: it exits before binding (or times out)."""
    return subprocess.run(
        [sys.executable, "-m", "simages_server", "serve", "--index", str(index_dir), "--port", str(free_port())],
        env={**os.environ, "SIMAGES_SERVER_API_KEYS": API_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_an_ann_file_that_disagrees_with_the_manifest(tmp_path):
    images = tmp_path / "images"
    _write_images(images, 0, 70)
    small, big = tmp_path / "small", tmp_path / "big"
    # Two indexes of the same folder at different sizes: a real ANN file of another count.
    _write_images(tmp_path / "images60", 0, 60)
    build_index(tmp_path / "images60", small, progress=False, ann_threshold=50)
    build_index(images, big, progress=False, ann_threshold=50)
    meta = _meta(big)
    _ann_path(big).write_bytes(_ann_path(small).read_bytes())

    refused = _serve_refusal(big)
    assert refused.returncode == 2
    assert "holds 60 rows of dimension" in refused.stderr and "records 70" in refused.stderr
    assert "does not belong to this index" in refused.stderr

    # The metadata's own count disagreeing with the manifest is refused too, before the file is read.
    meta["ann"]["count"] = 69
    _write_meta(big, meta)
    refused = _serve_refusal(big)
    assert refused.returncode == 2 and "records an ANN index of 69 rows for 70 images" in refused.stderr

    # A missing file is named.
    meta["ann"]["count"] = 70
    meta["ann"]["file"] = "ann-999.faiss"
    _write_meta(big, meta)
    refused = _serve_refusal(big)
    assert refused.returncode == 2 and "ann-999.faiss" in refused.stderr and "is missing" in refused.stderr


def test_growing_over_a_foreign_ann_file_rebuilds_it(tmp_path, caplog):
    images, out = tmp_path / "images", tmp_path / "index"
    _write_images(images, 0, 60)
    build_index(images, out, progress=False, ann_threshold=50)
    _ann_path(out).write_bytes(b"not a faiss index")
    _write_images(images, 60, 5)
    report = build_index(images, out, progress=False, ann_threshold=50)
    assert report.ann is not None and (report.ann.action, report.ann.count) == ("built", 65)
    assert "rebuilding the ANN index: cannot read the ANN index" in caplog.text
    assert ImageIndex.load(out).ann is not None


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"kind": "hnsw"}, "'ann.kind' is 'hnsw'"),
        ({"file": "../elsewhere.faiss"}, "'ann.file' must be a file name inside the index folder"),
        ({"count": -1}, "'ann.count' must be a whole number"),
        ({"nprobe": "8"}, "'ann.nprobe' must be a whole number"),
        ({"recall": 1.5}, "'ann.recall' must be a number from 0 to 1, not 1.5"),
        ({"tuned_queries": -2}, "'ann.tuned_queries' must be a whole number"),
    ],
)
def test_a_malformed_ann_record_is_named(tmp_path, patch, message):
    images, out = tmp_path / "images", tmp_path / "index"
    _write_images(images, 0, 55)
    build_index(images, out, progress=False, ann_threshold=50)
    meta = _meta(out)
    meta["ann"].update(patch)
    _write_meta(out, meta)
    with pytest.raises(ann_module.AnnError, match=message.replace("(", r"\(")):
        ImageIndex.load(out)


def test_bad_ann_options_are_refused_before_any_work(tmp_path):
    _write_images(tmp_path / "images", 0, 3)
    with pytest.raises(ValueError, match="ann mode must be one of auto, on, off, not 'sometimes'"):
        build_index(tmp_path / "images", tmp_path / "index", progress=False, ann="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ann_threshold must be ≥ 0, not -5"):
        build_index(tmp_path / "images", tmp_path / "index", progress=False, ann_threshold=-5)
    assert not (tmp_path / "index").exists()


def test_deleted_and_replaced_files_update_the_ann_index_by_id_without_rebuilding(tmp_path):
    images, out = tmp_path / "images", tmp_path / "index"
    _write_images(images, 0, 100)
    build_index(images, out, progress=False, ann_threshold=50)
    before = ImageIndex.load(out)
    assert before.ann is not None
    centroids = before.ann.centroids()

    # 1 of 100 rows changes: the ids are updated, nprobe is not measured again (below RETUNE_SHARE).
    (images / "img0003.png").unlink()
    report = build_index(images, out, progress=False, ann_threshold=50)
    assert report.ann is not None and (report.ann.action, report.ann.count) == ("updated", 99)
    assert report.ann.deleted == 2 and report.ann.added == 1  # the hole and the last row; the last row into the hole
    meta = _meta(out)["ann"]
    assert (meta["drift"], meta["tuned_queries"]) == (1, 100)

    # 6 more (7 of 99 since the measurement): measured again, drift back to 0.
    for i in (10, 20, 30):
        (images / f"img{i:04d}.png").unlink()
    _write_images(images, 200, 3)
    report = build_index(images, out, progress=False, ann_threshold=50)
    assert report.ann is not None and report.ann.action == "updated" and report.ann.count == 99
    assert (_meta(out)["ann"]["drift"], _meta(out)["ann"]["tuned_queries"]) == (0, 99)

    index = ImageIndex.load(out)
    assert index.ann is not None
    np.testing.assert_array_equal(index.ann.centroids(), centroids)  # updated, never re-trained
    files = {r.file for r in index.records}
    assert "img0003.png" not in files and {"img0200.png", "img0202.png"} <= files
    # Every row's id is its position: each image's own row finds it first, through the ANN index.
    for position in range(len(index)):
        assert index.ann.search(np.asarray(index.embeddings[position]), 1)[0][0] == position
