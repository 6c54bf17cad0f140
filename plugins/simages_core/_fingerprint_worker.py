"""The worker process of ``simages_core.fingerprint_worker``: ``python -m simages_core._fingerprint_worker``.

Reads pickled requests from stdin (first the ``FetchPolicy`` and the concurrency, then lists of
``(token, "url" | "file", value)`` until end of input), answers lists of ``(token, Fingerprint |
None)`` on stdout, each list what was ready since the last, and exits once every request is
answered.
"""

from __future__ import annotations

import pickle
import queue
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, TypeVar

from ._result_fingerprints import file_fingerprint, url_fingerprint
from .fetch import Fetcher, FetchPolicy
from .identity import Fingerprint

_T = TypeVar("_T")
_FILE_THREADS = 2
"""Decoding releases the GIL for part of its time, so two threads keep one core busy."""


def queued_batches(items: queue.SimpleQueue[_T | None]) -> Iterator[list[_T]]:
    """What has queued up, a list at a time (waiting for the first item), until ``None`` is taken."""
    while True:
        batch = []
        item = items.get()
        while item is not None:
            batch.append(item)
            try:
                item = items.get_nowait()
            except queue.Empty:
                break
        if batch:
            yield batch
        if item is None:
            return


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    policy, concurrency = pickle.load(requests)
    if not isinstance(policy, FetchPolicy) or not isinstance(concurrency, int) or concurrency < 1:
        raise SystemExit(2)
    ready: queue.SimpleQueue[tuple[int, Fingerprint | None] | None] = queue.SimpleQueue()

    def answer(fetcher: Fetcher, token: int, kind: str, value: str) -> None:
        fp = None
        try:
            fp = url_fingerprint(value, fetcher) if kind == "url" else file_fingerprint(value)
        finally:  # answered whatever happens: the caller waits for every token
            ready.put((token, fp))

    def send() -> None:
        # One writer: what is ready goes out together, and no hashing thread waits on the pipe.
        for batch in queued_batches(ready):
            pickle.dump(batch, answers, protocol=pickle.HIGHEST_PROTOCOL)
            answers.flush()

    sender = threading.Thread(target=send, name="simages-fp-answers")
    sender.start()
    # URLs wait on the network, files only on the CPU: files get a pool of their own, of as few
    # threads as keep a core busy (more would only take turns on this process's GIL), and are never
    # queued behind a burst of thumbnails, nor thumbnails behind a dataset's files.
    try:
        with (
            Fetcher(policy, pool_size=concurrency) as fetcher,
            ThreadPoolExecutor(concurrency, thread_name_prefix="simages-fp-url") as url_pool,
            ThreadPoolExecutor(_FILE_THREADS, thread_name_prefix="simages-fp-file") as file_pool,
        ):
            while True:
                try:
                    batch = pickle.load(requests)
                except EOFError:
                    break  # the caller closed its end: answer what is under way, then exit
                for token, kind, value in batch:
                    (url_pool if kind == "url" else file_pool).submit(answer, fetcher, token, kind, value)
    finally:
        ready.put(None)  # after every answer: the pools are shut down (and waited for) above
        sender.join()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
