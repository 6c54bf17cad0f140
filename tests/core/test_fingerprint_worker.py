"""The fingerprint worker process: the same fingerprints as in-process, failures as ``None``, the
fetch guard applied in the worker, and a worker that dies never hangs or loses a caller's run."""

from __future__ import annotations

import io
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simages_core.fetch import FetchPolicy
from simages_core.fingerprint_worker import FingerprintWorker
from simages_core.identity import fingerprint

from . import fetch_support
from .fetch_support import ImageHost, Route, loopback_policy

host = fetch_support.host


def _photo_bytes(seed: int, fmt: str = "WEBP") -> bytes:
    rng = np.random.default_rng(seed)
    # Smooth gradients plus a little noise: a photo-like image whose hash is not degenerate.
    y, x = np.mgrid[0:96, 0:128]
    base = np.stack([x * 2 + seed * 7, y * 2 + seed * 13, (x + y) + seed * 3], axis=-1) % 256
    pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _policy() -> FetchPolicy:
    # The local server and the FiftyOne plugin's policy: any unicast address, no injected resolver.
    return FetchPolicy(untrusted_caller=False, retries=0, timeout=5)


def test_urls_and_files_give_the_in_process_fingerprints(host: ImageHost, tmp_path: Path) -> None:
    thumbs = {f"/t/{i}.webp": _photo_bytes(i) for i in range(6)}
    for path, body in thumbs.items():
        host.route(path, Route(200, body, {"content-type": "image/webp"}))
    file = tmp_path / "photo.jpg"
    file.write_bytes(_photo_bytes(9, "JPEG"))
    with FingerprintWorker(_policy(), concurrency=4) as worker:
        assert worker.pid != os.getpid()
        futures = {path: worker.url(f"http://127.0.0.1:{host.port}{path}") for path in thumbs}
        from_file = worker.file(file)
        assert {path: f.result(timeout=30) for path, f in futures.items()} == {
            path: fingerprint(body) for path, body in thumbs.items()
        }
        assert from_file.result(timeout=30) == fingerprint(file)


def test_what_cannot_be_read_is_none_and_the_worker_goes_on(host: ImageHost, tmp_path: Path) -> None:
    host.route("/t/html.webp", Route(200, b"<html>no</html>", {"content-type": "text/html"}))
    host.route("/t/garbage.webp", Route(200, b"not an image", {"content-type": "image/webp"}))
    host.route("/t/good.webp", Route(200, _photo_bytes(1), {"content-type": "image/webp"}))
    (tmp_path / "empty.jpg").write_bytes(b"")
    base = f"http://127.0.0.1:{host.port}"
    with FingerprintWorker(_policy()) as worker:
        bad = [
            worker.url(f"{base}/t/missing.webp"),  # 404
            worker.url(f"{base}/t/html.webp"),  # wrong content type
            worker.url(f"{base}/t/garbage.webp"),  # not decodable
            worker.url("not a url"),
            worker.file(tmp_path / "missing.jpg"),
            worker.file(tmp_path / "empty.jpg"),
        ]
        good = worker.url(f"{base}/t/good.webp")
        assert [f.result(timeout=30) for f in bad] == [None] * len(bad)
        assert good.result(timeout=30) == fingerprint(_photo_bytes(1))


def test_the_fetch_guard_applies_in_the_worker(host: ImageHost) -> None:
    # An untrusted caller's policy refuses loopback: the worker must refuse before connecting.
    host.route("/t/good.webp", Route(200, _photo_bytes(1), {"content-type": "image/webp"}))
    with FingerprintWorker(FetchPolicy(untrusted_caller=True, retries=0)) as worker:
        assert worker.url(f"http://127.0.0.1:{host.port}/t/good.webp").result(timeout=30) is None
    assert host.hits("/t/good.webp") == 0


def test_a_policy_with_an_injected_resolver_stays_in_the_caller() -> None:
    with pytest.raises(ValueError, match="resolver"):
        FingerprintWorker(loopback_policy())


def test_a_killed_worker_answers_none_and_never_hangs(host: ImageHost) -> None:
    # Slow thumbnails keep requests pending while the worker is killed.
    host.route("/t/slow.webp", Route(200, _photo_bytes(2), {"content-type": "image/webp"}, drip=0.05))
    worker = FingerprintWorker(_policy(), concurrency=2)
    try:
        pending = [worker.url(f"http://127.0.0.1:{host.port}/t/slow.webp") for _ in range(4)]
        os.kill(worker.pid, signal.SIGKILL)
        assert [f.result(timeout=30) for f in pending] == [None] * 4
        assert worker.url(f"http://127.0.0.1:{host.port}/t/slow.webp").result(timeout=30) is None
    finally:
        worker.close()


def test_close_answers_what_was_asked_and_later_requests_are_none(host: ImageHost) -> None:
    host.route("/t/good.webp", Route(200, _photo_bytes(3), {"content-type": "image/webp"}))
    worker = FingerprintWorker(_policy())
    asked = worker.url(f"http://127.0.0.1:{host.port}/t/good.webp")
    worker.close()
    assert asked.result(timeout=30) == fingerprint(_photo_bytes(3))
    assert worker.url(f"http://127.0.0.1:{host.port}/t/good.webp").result(timeout=1) is None


def test_asking_never_waits_on_a_busy_worker(tmp_path: Path) -> None:
    # A stopped worker reads nothing: far more requests than its pipe holds are still taken at once
    # (callers are often search threads that must go back to searching), and all answered later.
    file = tmp_path / "photo.jpg"
    file.write_bytes(_photo_bytes(5, "JPEG"))
    worker = FingerprintWorker(_policy())
    futures: list = []
    try:
        os.kill(worker.pid, signal.SIGSTOP)
        threads = [
            threading.Thread(target=lambda: futures.extend(worker.file(file) for _ in range(1_000)))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads) and len(futures) == 4_000
        assert not any(f.done() for f in futures)
        os.kill(worker.pid, signal.SIGCONT)
        assert {f.result(timeout=60) for f in futures} == {fingerprint(file)}
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        worker.close()
