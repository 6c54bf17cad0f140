"""Fingerprints of existing tasks for ``expand``'s screening: what the scan notes, the local store, and
fetching each task image once (a loopback image server counts the downloads)."""

from __future__ import annotations

import functools
import http.server
import io
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from simages_core.identity import Fingerprint, fingerprint
from simages_label_studio.expand_tasks import SOURCE_TASK_KEY, scan_project
from simages_label_studio.task_fingerprints import (
    FINGERPRINT_KEY,
    TaskFingerprintStore,
    TaskImageRef,
    fingerprint_tasks,
)
from simages_label_studio.task_images import TaskImageResolver

LS = "http://label-studio.test:8080"
FP = Fingerprint(0x0123456789ABCDEF, 0xFEDCBA9876543210)


def test_the_scan_keeps_recorded_fingerprints_and_what_to_fetch_for_the_others():
    tasks = [
        SimpleNamespace(id=1, data={"image": "http://a.test/1.jpg"}),
        SimpleNamespace(
            id=2, data={"image": "http://api.test/images/x", SOURCE_TASK_KEY: 1, FINGERPRINT_KEY: FP.to_hex()}
        ),
        # Made by an older (or unscreened) run: its thumbnail is the smallest image that works.
        SimpleNamespace(
            id=3,
            data={
                "image": "http://api.test/images/y",
                SOURCE_TASK_KEY: 1,
                "simages_thumbnail_url": "http://api.test/t/y",
            },
        ),
        SimpleNamespace(id=4, data={"image": "/data/upload/1/cat.jpg", FINGERPRINT_KEY: "not hex"}),
        SimpleNamespace(id=5, data={}),  # no image: nothing to fingerprint
    ]
    scan, _ = scan_project(tasks, "image")
    assert scan.fingerprints == [(2, FP)]
    assert scan.to_fingerprint == [
        TaskImageRef(1, "http://a.test/1.jpg", "http://a.test/1.jpg"),
        TaskImageRef(3, "http://api.test/images/y", "http://api.test/t/y"),
        TaskImageRef(4, "/data/upload/1/cat.jpg", "/data/upload/1/cat.jpg"),
    ]


def test_the_store_keys_by_label_studio_project_task_and_image(tmp_path):
    task = TaskImageRef(7, "/data/upload/1/a.jpg", "/data/upload/1/a.jpg")
    store = TaskFingerprintStore(tmp_path / "store", LS, 1)
    store.put(task, FP)
    store.close()
    again = TaskFingerprintStore(tmp_path / "store", LS, 1)  # another run: on disk
    assert again.get(task) == FP
    assert again.get(TaskImageRef(7, "/data/upload/1/b.jpg", "/data/upload/1/b.jpg")) is None  # image changed
    assert again.get(TaskImageRef(8, task.ref, task.ref)) is None
    again.close()
    for other in (
        TaskFingerprintStore(tmp_path / "store", LS, 2),
        TaskFingerprintStore(tmp_path / "store", "http://other.test", 1),
    ):
        assert other.get(task) is None
        other.close()


def test_a_store_that_cannot_be_opened_costs_downloads_not_the_run(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder would go")
    task = TaskImageRef(1, "http://a.test/1.jpg", "http://a.test/1.jpg")
    with caplog.at_level(logging.WARNING, logger="simages_label_studio.expand"):
        store = TaskFingerprintStore(blocker, LS, 1)
        store.put(task, FP)
        assert store.get(task) is None
        store.close()
    assert "cannot open" in caplog.text and "going on without it" in caplog.text


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    gets: list[str]

    def do_GET(self) -> None:
        self.gets.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server(tmp_path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, folder, paths requested) of a loopback HTTP server."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = type("Handler", (_CountingHandler,), {"gets": []})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder, handler.gets
    finally:
        server.shutdown()
        server.server_close()


def test_task_images_are_fetched_once_and_unreadable_ones_are_counted(image_server, tmp_path):
    base, folder, gets = image_server
    buffer = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").save(buffer, format="JPEG")
    (folder / "photo.jpg").write_bytes(buffer.getvalue())
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    tasks = [
        TaskImageRef(i, f"{base}/{name}", f"{base}/{name}")
        for i, name in enumerate(["photo.jpg", "missing.jpg", "notes.txt", "broken.jpg"], 1)
    ]
    progress: list[tuple[int, int]] = []

    def run() -> object:
        store = TaskFingerprintStore(tmp_path / "store", LS, 1)
        # Task URLs are guarded: loopback only because this resolver is told it may.
        with (
            TaskImageResolver(None, None, timeout=5, allow_networks=("127.0.0.0/8",)) as resolver,
            ThreadPoolExecutor(4) as pool,
        ):
            try:
                return fingerprint_tasks(
                    tasks,
                    len(tasks),
                    store=store,
                    resolver=resolver,
                    executor=pool,
                    window=2,
                    progress=lambda d, t: progress.append((d, t)),
                )
            finally:
                store.close()

    first = run()
    assert first.found == [(1, fingerprint(buffer.getvalue()))] and (first.fetched, first.cached) == (1, 0)
    assert sorted(first.unreadable) == [2, 3, 4]
    assert "answered 404" in first.unreadable[2] and "not an image" in first.unreadable[3]
    assert progress[-1] == (4, 4)
    assert gets.count("/photo.jpg") == 1

    second = run()  # the readable image comes from the store; the others are tried again
    assert second.found == first.found and (second.fetched, second.cached) == (0, 1)
    assert gets.count("/photo.jpg") == 1 and gets.count("/missing.jpg") == 2
