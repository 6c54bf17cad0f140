"""The target dataset's fingerprints: computed once for the samples lacking one, in batches with progress.

``iter_target_fingerprints`` does it in the caller's thread (an import screens a handful of
candidates, after it). ``TargetPrinting`` does it on a thread of its own while an expansion
starts: the run's first searches, thumbnails and downloads do not wait for a thousand sample
files to be hashed. Candidates screened before it is done are checked again against the whole
target before they are added (``Screening.screen_downloads``), so none is ever added as a new
sample while a copy of it is in the dataset; a copy of a sample not yet fingerprinted is then
recognised after its download rather than before it (only in a run's first moments).
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import fiftyone as fo

from simages_core.fingerprint_worker import FingerprintWorker
from simages_core.identity import CopyIndex, Fingerprint

from ._find_fingerprints import FINGERPRINT_FIELD, FINGERPRINT_WORKERS, add_stored, file_fingerprint
from ._outcomes import Progress

FINGERPRINT_BATCH = 256
"""Samples fingerprinted per batch: each batch is written with one ``set_values`` and reported."""


@dataclass(frozen=True)
class TargetFingerprints:
    """The target's fingerprints by sample id, and what this run had to compute to get them."""

    index: CopyIndex
    computed: int = 0
    """Samples fingerprinted by this run (the others had the field already)."""
    unreadable: int = 0
    """Samples whose file could not be read: they get no fingerprint and are not screened against."""


def iter_target_fingerprints(
    dataset: fo.Dataset | None,
    threshold: int,
    *,
    span: tuple[float, float] = (0.0, 1.0),
    max_workers: int = FINGERPRINT_WORKERS,
    batch_size: int = FINGERPRINT_BATCH,
    worker: FingerprintWorker | None = None,
    index: CopyIndex | None = None,
    stop: threading.Event | None = None,
) -> Generator[Progress, None, TargetFingerprints]:
    """Fingerprint the samples of ``dataset`` lacking one (stored in ``simages_fingerprint``), in batches.

    In ``worker`` when given (an expansion's worker process), else on ``max_workers`` threads.

    Yields ``Progress`` within ``span`` after each batch and returns every fingerprint in a
    ``CopyIndex`` keyed by sample id (``index`` when given, filled as the batches are done). Only
    that field is written, and only on samples that lacked it (or held something that is not a
    fingerprint). ``stop`` set ends it after the batch under way.
    """
    index = CopyIndex(threshold) if index is None else index
    if dataset is None or not len(dataset):
        return TargetFingerprints(index)
    missing = add_stored(dataset, index)
    if not missing:
        return TargetFingerprints(index)
    low, high = span
    computed = unreadable = 0
    yield Progress(low, f"Fingerprinting {len(missing)} sample(s) of {dataset.name!r}")
    chunks = [missing[start : start + batch_size] for start in range(0, len(missing), batch_size)]
    with ThreadPoolExecutor(max(1, min(max_workers, len(missing))), thread_name_prefix="simages-fp") as pool:

        def submit(chunk: list[tuple[str, str]]) -> list[Future[Fingerprint | None]]:
            if worker is not None:
                return [worker.file(path) for _, path in chunk]
            return [pool.submit(file_fingerprint, path) for _, path in chunk]

        # The next chunk is submitted before this one is awaited, so hashing never waits for the
        # database write of the chunk before (nor for the caller reading its progress).
        ahead = submit(chunks[0])
        done = 0
        for position, chunk in enumerate(chunks):
            if stop is not None and stop.is_set():
                break
            futures, ahead = ahead, submit(chunks[position + 1]) if position + 1 < len(chunks) else []
            prints = [future.result() for future in futures]
            found = {
                sample_id: fp for (sample_id, _), fp in zip(chunk, prints, strict=True) if fp is not None
            }
            if found:
                dataset.set_values(
                    FINGERPRINT_FIELD, {k: fp.to_hex() for k, fp in found.items()}, key_field="id"
                )
            for sample_id, fp in found.items():
                index.add(sample_id, fp)
            computed += len(found)
            unreadable += len(chunk) - len(found)
            done += len(chunk)
            yield Progress(
                low + (high - low) * done / len(missing), f"Fingerprinted {done}/{len(missing)} samples"
            )
    return TargetFingerprints(index, computed, unreadable)


class TargetPrinting:
    """``iter_target_fingerprints`` on a background thread; ``index`` fills as it goes.

    ``complete`` says whether every sample is in; ``wait`` returns what was computed (raising what
    the thread raised); ``latest`` is its last progress, for a caller that reports while it waits.
    ``close`` stops it after the batch under way and waits for it.
    """

    def __init__(
        self,
        dataset: fo.Dataset | None,
        threshold: int,
        worker: FingerprintWorker | None,
        span: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        if dataset is not None and len(dataset) and not dataset.has_sample_field(FINGERPRINT_FIELD):
            # Declared here, on the run's thread: the schema does not change under its reads later.
            dataset.add_sample_field(FINGERPRINT_FIELD, fo.StringField)
        self.index = CopyIndex(threshold)
        self.latest: Progress | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._result: TargetFingerprints | None = None
        self._error: BaseException | None = None
        steps = iter_target_fingerprints(
            dataset, threshold, span=span, worker=worker, index=self.index, stop=self._stop
        )
        self._thread = threading.Thread(
            target=self._run, args=(steps,), name="simages-target-prints", daemon=True
        )
        self._thread.start()

    def _run(self, steps: Generator[Progress, None, TargetFingerprints]) -> None:
        try:
            while True:
                self.latest = next(steps)
        except StopIteration as end:
            self._result = end.value
        except BaseException as exc:  # handed to the run's thread by ``wait``
            self._error = exc
        finally:
            self._done.set()

    def complete(self) -> bool:
        return self._done.is_set() and self._error is None

    def wait(self, timeout: float | None = None) -> TargetFingerprints | None:
        """What was computed once done (``None`` if ``timeout`` passed first)."""
        if not self._done.wait(timeout):
            return None
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def await_printing(printing: TargetPrinting) -> Generator[Progress, None, TargetFingerprints]:
    """Wait for the target's fingerprints, passing on the thread's progress meanwhile."""
    shown = None
    while (done := printing.wait(timeout=0.5)) is None:
        if printing.latest is not None and printing.latest is not shown:
            shown = printing.latest
            yield shown
    return done
