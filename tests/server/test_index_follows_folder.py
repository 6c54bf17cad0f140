"""The index follows its folder: re-indexing removes deleted files, re-embeds changed ones, screens new
ones for copies; a running server switches generations between requests; a build killed at any write
step leaves a usable index; a format-1 (flat) index still loads and is upgraded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from simages_server import generations as gens
from simages_server.app import ServerSettings, SimilarImagesApp
from simages_server.cli import main as server_main
from simages_server.index import ImageIndex, IndexedImage
from simages_server.indexing import build_index
from simages_server.keys import digest
from simages_server.testing import ServerProcess

pytestmark = pytest.mark.integration

API_KEY = "follow-test-key"
KILLED_BUILD = Path(__file__).with_name("build_killed_at.py")


def _photo(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A distinct picture: smooth colour fields (so copies of it are recognisable) plus a little noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    channels = [
        np.sin(rng.uniform(2, 9) * x + rng.uniform(0, 6)) * np.cos(rng.uniform(2, 9) * y) for _ in range(3)
    ]
    pixels = (np.stack(channels, axis=-1) * 110 + 128 + rng.normal(0, 6, (h, w, 3))).clip(0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def _folder(path: Path, count: int, start: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        _photo(i).save(path / f"p{i:02d}.png")
    return path


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _expected_files(root: Path) -> set[str]:
    """What a clean index folder holds: the pointer, the lock, the current and previous generations, and
    the thumbnails those name. Nothing else (no temp file, no unfinished generation)."""
    pointer = gens.read_pointer(root)
    kept = [pointer.folder] + (
        [root / pointer.previous] if pointer.previous not in (None, gens.LEGACY) else []
    )
    files = {gens.POINTER, gens.LOCK}
    for folder in kept:
        files |= {f"{folder.name}/{p.name}" for p in folder.iterdir()}
        with (folder / gens.MANIFEST).open() as fh:
            files |= {f"thumbnails/{IndexedImage.from_json(json.loads(line)).thumbnail_name}" for line in fh}
    return files


def _search(base_url: str, image_id: str, k: int = 8) -> requests.Response:
    return requests.post(
        base_url + "/",
        json={"url": f"{base_url}/images/{image_id}", "num_similar": k, "get_labels": "coco_yolov7"},
        headers={"x-api-key": API_KEY},
        timeout=30,
    )


def _answer(response: requests.Response) -> tuple:
    """What must be consistent within one generation: ids, scores, sizes and thumbnail URLs, in order."""
    assert response.status_code == 200, response.text
    body = json.loads(response.json()["body"])
    sizes = {a["image_id"]: (a["width"], a["height"]) for a in body.get("annotations", [])}
    return tuple((i["id"], i["score"], sizes.get(i["id"]), i["thumbnail_url"]) for i in body["images"])


def _change_folder(images: Path) -> dict[str, Path]:
    """Delete one file, replace one (new bytes and size), touch one (same bytes), add two."""
    gone, replaced, touched = images / "p00.png", images / "p01.png", images / "p02.png"
    gone.unlink()
    _photo(101, (80, 60)).save(replaced)
    later = time.time() + 5
    os.utime(touched, (later, later))
    _photo(102).save(images / "p90.png")
    _photo(103).save(images / "p91.png")
    return {"gone": gone, "replaced": replaced, "touched": touched}


def test_reindexing_follows_deleted_replaced_touched_and_new_files(tmp_path):
    images = _folder(tmp_path / "images", 8)
    out = tmp_path / "index"
    first = build_index(images, out, progress=False)
    assert (first.added, first.total, first.generation) == (8, 8, 1)
    before = ImageIndex.load(out)
    old_replaced = next(r for r in before.records if r.file == "p01.png")
    assert old_replaced.digest and old_replaced.fingerprint and old_replaced.size and old_replaced.mtime_ns

    _change_folder(images)
    report = build_index(images, out, progress=False)
    assert (report.added, report.changed, report.removed, report.unchanged) == (2, 1, 1, 6)
    assert (report.total, report.generation, report.committed) == (9, 2, True)

    after = ImageIndex.load(out)
    files = {r.file: r for r in after.records}
    assert "p00.png" not in files and {"p90.png", "p91.png"} <= set(files)
    replaced = files["p01.png"]
    assert replaced.id == old_replaced.id  # same path, same id (URLs handed out stay valid)
    assert (replaced.width, replaced.height) == (80, 60) and replaced.size == (
        images / "p01.png"
    ).stat().st_size
    assert replaced.digest != old_replaced.digest and replaced.thumb != old_replaced.thumb
    with Image.open(after.thumbnail_path(replaced.id)) as thumb:
        assert thumb.size == (80, 60)
    # Each row is its own image's: a query with an image's row finds that image first.
    for record in after.records:
        position = after.position(record.id)
        assert (
            position is not None
            and after.nearest(np.asarray(after.embeddings[position]), 1)[0][0] == position
        )
    # Unchanged files keep their ids and rows.
    for record in before.records:
        if record.file in ("p03.png", "p04.png", "p05.png"):
            np.testing.assert_array_equal(
                after.embeddings[after.position(record.id)], before.embeddings[before.position(record.id)]
            )
    touched = files["p02.png"]
    assert touched.mtime_ns == (images / "p02.png").stat().st_mtime_ns and touched.thumb is not None

    # A third run finds nothing to do and writes no generation.
    again = build_index(images, out, progress=False)
    assert (again.committed, again.generation, again.unchanged, again.added) == (False, 2, 9, 0)
    assert _files(out) == _expected_files(out)
    # Readable by a server running as another user (temp files are created 0600).
    assert all(
        p.stat().st_mode & 0o044 == 0o044 for p in out.rglob("*") if p.is_file() and p.name != gens.LOCK
    )


def test_running_server_follows_reindexing_with_queries_in_flight(tmp_path):
    images = _folder(tmp_path / "images", 12)
    out = tmp_path / "index"
    build_index(images, out, progress=False)
    old = ImageIndex.load(out)
    ids = {r.file: r.id for r in old.records}
    probes = [ids[f"p{i:02d}.png"] for i in (1, 3, 4, 5, 6, 7)]
    server = ServerProcess(
        out, api_keys=(API_KEY,), state=tmp_path / "state", log_path=tmp_path / "server.log",
        extra_args=("--reload-interval", "0.1"),
    )  # fmt: skip
    with server:
        health = requests.get(server.url + "/health", timeout=10).json()
        assert health["index"] == {"generation": 1, "images": 12, "labelled": 0, "ann": 0}
        old_answers = {p: _answer(_search(server.url, p)) for p in probes}
        assert any(ids["p00.png"] in [a[0] for a in answer] for answer in old_answers.values())

        answers: list[tuple[str, tuple]] = []
        errors: list[str] = []
        stop = threading.Event()

        def ask(offset: int) -> None:
            with requests.Session() as http:
                i = offset
                while not stop.is_set():
                    probe = probes[i % len(probes)]
                    i += 1
                    try:
                        response = http.post(
                            server.url + "/", headers={"x-api-key": API_KEY}, timeout=30,
                            json={"url": f"{server.url}/images/{probe}", "num_similar": 8, "get_labels": "coco_yolov7"},
                        )  # fmt: skip
                        answers.append((probe, _answer(response)))
                    except Exception as exc:  # any failure is a finding, reported below
                        errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        try:
            changed = _change_folder(images)
            report = build_index(images, out, progress=False)
            assert report.generation == 2
            deadline = time.monotonic() + 30
            while requests.get(server.url + "/health", timeout=10).json()["index"]["generation"] != 2:
                assert time.monotonic() < deadline, "the server never switched to generation 2"
                time.sleep(0.05)  # polling the server's state: no event to wait on across processes
            after_swap = len(answers)
            while len(answers) < after_swap + 40:  # queries keep flowing across and after the swap
                assert time.monotonic() < deadline and not errors, errors[:3]
                time.sleep(0.01)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        new_answers = {p: _answer(_search(server.url, p)) for p in probes}
        assert not errors, errors[:3]
        assert new_answers != old_answers
        seen_old = seen_new = 0
        for probe, answer in answers:
            assert answer in (old_answers[probe], new_answers[probe]), (probe, answer)
            seen_old += answer == old_answers[probe]
            seen_new += answer == new_answers[probe]
        assert seen_old and seen_new

        health = requests.get(server.url + "/health", timeout=10).json()
        assert health["index"] == {"generation": 2, "images": 13, "labelled": 0, "ann": 0}
        # The deleted photo is gone from every answer, and its URL is a 404.
        gone_id = ids[changed["gone"].name]
        assert all(gone_id not in [a[0] for a in answer] for answer in new_answers.values())
        assert requests.get(f"{server.url}/images/{gone_id}", timeout=10).status_code == 404
        assert requests.get(f"{server.url}/thumbnails/{gone_id}.webp", timeout=10).status_code == 404
        # The replaced file finds itself first, with its new size and its new thumbnail.
        replaced_id = ids[changed["replaced"].name]
        found = _answer(_search(server.url, replaced_id))
        assert found[0][:3] == (replaced_id, 1.0, (80, 60))
        thumb = requests.get(found[0][3], timeout=10)
        assert thumb.status_code == 200
        new_index = ImageIndex.load(out)
        assert thumb.content == new_index.thumbnail_path(replaced_id).read_bytes()
        assert (
            requests.get(f"{server.url}/images/{replaced_id}", timeout=10).content
            == changed["replaced"].read_bytes()
        )
    assert "now serving generation 2" in (tmp_path / "server.log").read_text()


def test_a_new_generation_that_does_not_load_keeps_the_old_one_served(tmp_path, caplog):
    images = _folder(tmp_path / "images", 4)
    out = tmp_path / "index"
    build_index(images, out, progress=False)
    app = SimilarImagesApp(
        ImageIndex.load(out), ServerSettings(key_digests=frozenset(), quota_path=tmp_path / "q.sqlite")
    )
    _photo(50).save(images / "p50.png")
    build_index(images, out, progress=False)
    manifest = gens.read_pointer(out).folder / gens.MANIFEST
    manifest.write_text(manifest.read_text().splitlines()[0] + "\n")  # 1 record for 5 rows
    assert app.reload_index() is False
    assert app.index.generation == 1 and len(app.index) == 4
    assert "kept serving generation 1" in caplog.text and "inconsistent" in caplog.text
    assert app.reload_index() is False  # not retried until the pointer changes again
    assert caplog.text.count("kept serving generation 1") == 1


def test_one_writer_at_a_time(tmp_path):
    images = _folder(tmp_path / "images", 2)
    with gens.write_lock(tmp_path / "index"), pytest.raises(gens.IndexLocked, match="run one at a time"):
        build_index(images, tmp_path / "index", progress=False)
    assert not (tmp_path / "index" / gens.POINTER).exists()


# --- killed builds ----------------------------------------------------------------------------


def _killed_build(step: int, images: Path, out: Path, ann: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(KILLED_BUILD), str(step), str(images), str(out), ann],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _answers_in_process(index_dir: Path, tmp_path: Path) -> tuple[str, str]:
    """The app over what is on disk, asked over WSGI for an image's neighbours and thumbnail: (top id, asked id)."""
    from werkzeug.test import Client

    index = ImageIndex.load(index_dir)
    settings = ServerSettings(
        key_digests=frozenset({digest(API_KEY)}), quota_path=tmp_path / "q.sqlite", daily_limit=0
    )
    client = Client(SimilarImagesApp(index, settings))
    record = index.records[-1]
    response = client.post(
        "/",
        json={"url": f"http://localhost/images/{record.id}", "num_similar": 3},
        headers={"x-api-key": API_KEY},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert client.get(f"/thumbnails/{record.id}.webp").status_code == 200
    return json.loads(response.get_json()["body"])["images"][0]["id"], record.id


def test_a_build_killed_at_any_write_step_leaves_a_usable_index(tmp_path):
    ann = "on"  # the ANN file is one more step; without it the steps are the same less that one
    images = _folder(tmp_path / "images", 6)
    base = tmp_path / "base"
    build_index(images, base, progress=False, ann=ann)
    _photo(60).save(images / "p60.png")
    build_index(images, base, progress=False, ann=ann)  # two generations: the run below removes the first
    old_files = {r.file for r in ImageIndex.load(base).records}
    _change_folder(images)
    # The whole run once, to count its steps and know the new index.
    complete = tmp_path / "complete"
    shutil.copytree(base, complete)
    done = _killed_build(0, images, complete, ann)
    assert done.returncode == 0, done.stderr
    calls = done.stdout.split("calls=")[1].split()[0].split(",")
    assert {"replace", "fsync", "rmtree", "unlink"} <= set(calls)  # commit, flushes, and the clean-up after
    commit = len(calls) - calls[::-1].index("replace")  # the pointer's rename: the last os.replace
    new_files = {r.file for r in ImageIndex.load(complete).records}
    assert new_files != old_files

    served: list[Path] = []
    for step in range(1, len(calls) + 1):
        out = tmp_path / f"killed-{step}"
        shutil.copytree(base, out)
        killed = _killed_build(step, images, out, ann)
        assert killed.returncode == -9, (step, killed.stdout, killed.stderr)
        left = ImageIndex.load(out)  # the previous index or the new one, never neither
        assert {r.file for r in left.records} == (old_files if step <= commit else new_files), step
        assert left.generation == (2 if step <= commit else 3) and left.ann is not None
        top, asked = _answers_in_process(out, tmp_path)
        assert top == asked, step
        if step in (
            commit,
            commit + 1,
        ):  # killed just before and just after the commit: served for real below
            served.append(shutil.copytree(out, tmp_path / f"served-{step}"))
        # The next run finishes the job and leaves nothing behind.
        report = build_index(images, out, progress=False, ann=ann)
        assert {r.file for r in ImageIndex.load(out).records} == new_files
        assert report.generation == 3 and report.committed == (step <= commit)  # an unfinished 3 was removed
        assert _files(out) == _expected_files(out), step
    for folder in served:
        with ServerProcess(folder, api_keys=(API_KEY,), state=tmp_path / "state") as server:
            record = ImageIndex.load(folder).records[-1]
            assert _answer(_search(server.url, record.id))[0][0] == record.id
            assert requests.get(f"{server.url}/thumbnails/{record.id}.webp", timeout=10).status_code == 200
        assert _files(folder) == _expected_files(folder)  # serve removed what the killed run left


def test_serve_removes_what_a_killed_build_left(tmp_path):
    images = _folder(tmp_path / "images", 5)
    out = tmp_path / "index"
    build_index(images, out, progress=False)
    _change_folder(images)
    shutil.copytree(out, tmp_path / "probe")
    done = _killed_build(0, images, tmp_path / "probe", "off")  # the same run to the end: how many steps
    assert done.returncode == 0, done.stderr
    # Killed just before the pointer's rename (the run's last os.replace): a whole unfinished generation
    # and a temp pointer are left.
    calls = done.stdout.split("calls=")[1].split()[0].split(",")
    step = len(calls) - calls[::-1].index("replace")
    trial = tmp_path / "trial"
    shutil.copytree(out, trial)
    assert _killed_build(step, images, trial, "off").returncode == -9
    assert list(trial.glob(".index.json.*.tmp"))
    assert ImageIndex.load(trial).generation == 1 and (trial / "gen-000002").is_dir()
    with ServerProcess(trial, api_keys=(API_KEY,), state=tmp_path / "state") as server:
        assert requests.get(server.url + "/health", timeout=10).json()["index"]["generation"] == 1
        assert _files(trial) == _expected_files(trial)
    assert not (trial / "gen-000002").exists() and not list(trial.glob(".index.json.*"))


# --- the format-1 (flat) layout ------------------------------------------------------------


def _write_format_1(source: Path, target: Path, *, with_ann: bool) -> None:
    """The flat layout earlier versions wrote: metadata in index.json beside the manifest (no size, mtime,
    digest or fingerprint), the rows, ``ann-<count>.faiss`` and ``thumbnails/{id}.webp``."""
    index = ImageIndex.load(source)
    target.mkdir()
    (target / "thumbnails").mkdir()
    meta = {
        "format": 1, "embedder": index.embedder, "dim": int(index.embeddings.shape[1]), "count": len(index),
        "images_dir": str(index.images_dir), "models": index.models,
    }  # fmt: skip
    if with_ann:
        assert index.ann is not None and index.ann_info is not None
        info = index.ann.write(target)  # ann-<count>.faiss, as format 1 named it
        meta["ann"] = info.to_json()
    lines = []
    for record in index.records:
        raw = record.to_json()
        for name in ("size", "mtime_ns", "digest", "fingerprint", "thumb"):
            raw.pop(name, None)
        lines.append(json.dumps(raw) + "\n")
        shutil.copyfile(index.thumbnail_path(record.id), target / "thumbnails" / f"{record.id}.webp")
    (target / "manifest.jsonl").write_text("".join(lines))
    np.save(target / "embeddings.npy", np.asarray(index.embeddings))
    (target / "index.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("with_ann", [False, True])
def test_a_format_1_index_is_served_and_upgraded(tmp_path, capsys, with_ann):
    images = _folder(tmp_path / "images", 6)
    build_index(images, tmp_path / "new", progress=False, ann="on" if with_ann else "off")
    old = tmp_path / "old"
    _write_format_1(tmp_path / "new", old, with_ann=with_ann)
    legacy = ImageIndex.load(old)
    assert legacy.generation == 0 and all(r.digest is None and r.fingerprint is None for r in legacy.records)
    with ServerProcess(old, api_keys=(API_KEY,), state=tmp_path / "state") as server:
        assert requests.get(server.url + "/health", timeout=10).json()["index"]["generation"] == 0
        record = legacy.records[2]
        assert _answer(_search(server.url, record.id))[0][0] == record.id
        assert requests.get(f"{server.url}/thumbnails/{record.id}.webp", timeout=10).status_code == 200

    # A file replaced since (other pixel size): the upgrade sees it; the others are adopted as they are.
    _photo(77, (90, 70)).save(images / "p04.png")
    assert server_main(["index", str(images), "--out", str(old), "--ann", "on" if with_ann else "off"]) == 0
    printed = capsys.readouterr().out
    assert "upgraded the index to the current on-disk format" in printed
    assert "changed 1, removed 0, unchanged 5" in printed
    upgraded = ImageIndex.load(old)
    assert upgraded.generation == 1 and all(r.digest and r.fingerprint for r in upgraded.records)
    assert [r.id for r in upgraded.records] == [r.id for r in legacy.records]
    unchanged = [r for r in upgraded.records if r.file != "p04.png"]
    # Adopted records keep their thumbnails and rows; their fingerprints come from those thumbnails.
    assert all(r.thumb is None and upgraded.thumbnail_path(r.id).is_file() for r in unchanged)
    assert (upgraded.ann is not None) == with_ann
    # The flat files stay while the previous generation is the format-1 one (a server may still read
    # them), and go with the next generation.
    assert (old / "manifest.jsonl").is_file()
    _photo(78).save(images / "p78.png")
    build_index(images, old, progress=False, ann="on" if with_ann else "off")
    assert not (old / "manifest.jsonl").exists() and not list(old.glob("ann-*.faiss"))
    assert _files(old) == _expected_files(old)


# --- copies -----------------------------------------------------------------------------------


def _real_photos(folder: Path) -> Path:
    from skimage import data

    folder.mkdir(parents=True)
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        Image.fromarray(getattr(data, name)()).convert("RGB").save(folder / f"{name}.jpg", quality=92)
    return folder


def _add_copies(folder: Path) -> None:
    with Image.open(folder / "chelsea.jpg") as cat:
        cat.resize((cat.width // 2, cat.height // 2)).save(folder / "new" / "cat_small.jpg", quality=70)
        cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "new" / "cat_mirrored.jpg", quality=85)
    from skimage import data

    camera = Image.fromarray(data.camera()).convert("RGB")
    camera.save(folder / "new" / "camera.jpg", quality=92)
    camera.resize((256, 256)).save(folder / "new" / "camera_256.jpg", quality=80)  # a copy of another new one


def test_new_copies_of_indexed_images_are_reported_and_skipped_on_request(tmp_path, capsys):
    images = _real_photos(tmp_path / "images")
    for out in (tmp_path / "listed", tmp_path / "skipped"):
        build_index(images, out, progress=False)
    (images / "new").mkdir()
    _add_copies(images)

    listed = build_index(images, tmp_path / "listed", progress=False)
    found = {c.file: c.copy_of for c in listed.copies}
    assert found == {
        "new/cat_small.jpg": "chelsea.jpg",
        "new/cat_mirrored.jpg": "chelsea.jpg",
        "new/camera_256.jpg": "new/camera.jpg",
    }
    assert listed.added == 4 and not listed.copies_skipped

    args = ["index", str(images), "--out", str(tmp_path / "skipped"), "--skip-copies"]
    assert server_main(args) == 0
    printed = capsys.readouterr().out
    assert "indexed 1 new image(s); 5 in" in printed
    assert "3 new image(s) are copies of indexed ones (not added):" in printed
    assert "new/cat_mirrored.jpg is a copy of chelsea.jpg" in printed
    files = {r.file for r in ImageIndex.load(tmp_path / "skipped").records}
    assert "new/camera.jpg" in files and not files & set(found)
    # The next run reports them again and still leaves them out; no thumbnail of theirs is kept.
    again = build_index(images, tmp_path / "skipped", progress=False, skip_copies=True)
    assert {c.file for c in again.copies} == set(found) and again.added == 0 and not again.committed
    assert _files(tmp_path / "skipped") == _expected_files(tmp_path / "skipped")
    with pytest.raises(ValueError, match="copy threshold"):
        build_index(images, tmp_path / "skipped", progress=False, copy_threshold=65)
