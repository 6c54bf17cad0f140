"""A worker process that fetches and fingerprints images, so that screening thousands of candidates
leaves the caller's process (and its GIL) to its own work.

An expansion screens every candidate from its thumbnail: one more HTTP request, a decode and 22
hashes per image, ~1 ms of CPU, most of it holding Python's GIL. Done on the caller's threads,
that work slowed every download and database write of the same run (and, in the FiftyOne App,
the App itself): measured in ``bench/bench_fo_expand.py``, DESIGN.md "Image identity". Here one
worker process fetches on its own threads, under the caller's ``FetchPolicy``, and hashes; the
caller only sends a URL or a file path and gets a ``Fingerprint`` back through a pipe. It is
started as ``python -m simages_core._fingerprint_worker`` rather than by ``multiprocessing``:
forking would copy the caller's threads, database client and event loop, and spawning re-runs the
caller's main script in the child, which a plain FiftyOne script (no ``if __name__ ==
"__main__"`` guard) does not survive.

If the worker cannot start or dies, every pending and later request answers ``None``: screening
then falls back to the downloaded file (a copy costs its download, never a lost image).

Asking never waits on the pipe: a request is queued, and one writer thread sends whatever has
queued up as one message (the worker answers in batches the same way). The caller's threads are
often the ones that just got a search answer; measured in ``bench/bench_fo_expand.py``, writing
to the pipe from them (and holding the lock the answers are read under meanwhile) kept a search
thread out of the search pool for 17 ms an answer, and the run's searches 11% short of their pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import Literal

from ._fingerprint_worker import queued_batches
from .fetch import FetchPolicy
from .identity import Fingerprint

__all__ = ["FingerprintWorker"]

logger = logging.getLogger("simages_core")

_Kind = Literal["url", "file"]


class FingerprintWorker:
    """Fingerprints of image URLs (fetched under ``policy``) and files, computed in a worker process.

    Thread-safe; use as a context manager. ``concurrency`` fetches run at once in the worker.
    """

    def __init__(self, policy: FetchPolicy, *, concurrency: int = 16) -> None:
        if policy.resolver is not None:
            # An injected resolver (tests) is a function of the caller's; it stays in the caller.
            raise ValueError("a FetchPolicy with an injected resolver cannot be sent to a worker process")
        if not sys.executable:  # an embedded interpreter: no Python to start
            raise OSError("no Python executable to start a worker process with (sys.executable is empty)")
        self._lock = threading.Lock()
        self._pending: dict[int, Future[Fingerprint | None]] = {}
        self._next = 0
        self._closed = False
        # The child imports simages_core from where this process found it (an editable install,
        # a plugin folder on sys.path, ...).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "simages_core._fingerprint_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._requests = self._process.stdin
        self._answers = self._process.stdout
        self._send((policy, concurrency))
        self._outbox: queue.SimpleQueue[tuple[int, _Kind, str] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="simages-fingerprints-writer", daemon=True)
        self._writer.start()
        self._reader = threading.Thread(target=self._read, name="simages-fingerprints-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The worker process's id."""
        return self._process.pid

    def url(self, url: str) -> Future[Fingerprint | None]:
        """The fingerprint of the image at ``url``; ``None`` when it cannot be fetched or read."""
        return self._submit("url", url)

    def file(self, path: str | os.PathLike[str]) -> Future[Fingerprint | None]:
        """The fingerprint of an image file; ``None`` when it cannot be read."""
        return self._submit("file", os.fspath(path))

    def _send(self, message: object) -> bool:
        try:
            pickle.dump(message, self._requests, protocol=pickle.HIGHEST_PROTOCOL)
            self._requests.flush()
            return True
        except (OSError, ValueError):  # the worker is gone: the reader answers what is pending
            return False

    def _submit(self, kind: _Kind, value: str) -> Future[Fingerprint | None]:
        future: Future[Fingerprint | None] = Future()
        with self._lock:
            if self._closed:
                future.set_result(None)
                return future
            token = self._next
            self._next += 1
            self._pending[token] = future
        self._outbox.put((token, kind, value))
        return future

    def _write(self) -> None:
        """Send what has queued up, one message a batch; at ``None`` (closing), end the requests."""
        for batch in queued_batches(self._outbox):
            if not self._send(batch):
                break  # the worker is gone: the reader answers what is pending
        with contextlib.suppress(OSError):
            self._requests.close()  # end of requests: the worker answers what it has, then exits

    def _read(self) -> None:
        try:
            while True:
                answers = pickle.load(self._answers)
                with self._lock:
                    ready = [(self._pending.pop(token, None), fp) for token, fp in answers]
                for future, fp in ready:
                    if future is not None:
                        future.set_result(fp if isinstance(fp, Fingerprint) else None)
        except (EOFError, OSError, pickle.UnpicklingError, ValueError, TypeError):
            pass  # closed, or the worker died
        finally:
            with self._lock:
                self._closed = True
                pending, self._pending = self._pending, {}
            if pending:
                logger.warning(
                    "the fingerprint worker stopped (exit code %s): %d image(s) are screened from their download",
                    self._process.poll(),
                    len(pending),
                )
            for future in pending.values():
                future.set_result(None)

    def close(self) -> None:
        """Stop the worker once what it was asked is answered (what is still pending answers ``None``)."""
        with self._lock:
            self._closed = True
        self._outbox.put(None)  # after what is queued: the writer sends it, then ends the requests
        self._writer.join(timeout=30)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=5)
        self._answers.close()

    def __enter__(self) -> FingerprintWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
