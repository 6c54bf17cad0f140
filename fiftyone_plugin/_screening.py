"""Screening candidates against the target dataset: its samples' fingerprints and the copies among new images.

The fingerprints of the target's samples live in one field (``simages_fingerprint``, the core's
hex form), computed once for the samples lacking it; nothing else on a sample is written. A
candidate is fingerprinted from its thumbnail before its full image is downloaded (from the file
once downloaded when the thumbnail cannot be read), then checked against the target and against
what the same run already accepted.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import fiftyone as fo

from simages_core import SearchResult, SimilarImage
from simages_core.fetch import Fetcher, FetchPolicy
from simages_core.fingerprint_worker import FingerprintWorker
from simages_core.identity import (
    COPY_DISTANCE,
    CopyIndex,
    Fingerprint,
    FingerprintCache,
    collapse_copies,
    fingerprint_results,
    url_fingerprint,
)

from ._downloads import DownloadOutcome
from ._find_fingerprints import (
    dataset_fingerprints,
    file_fingerprint,
)
from ._outcomes import FindSimilarResult

logger = logging.getLogger("simages_fiftyone")


@dataclass(frozen=True)
class CopyVerdict:
    """A candidate that is a copy: of a target sample (``sample_id``), or of an image this run accepted."""

    sample_id: str | None = None
    image_id: str | None = None
    distance: int = 0


class CopyScreen:
    """Decides candidate by candidate, in the caller's order (one thread), which ones are copies.

    A candidate is a copy when its fingerprint is within the threshold of a target sample's or of a
    candidate this run accepted before it; otherwise it is accepted, and later copies of it are
    caught. Accepted candidates become target samples once added (``added``).
    """

    def __init__(self, target: CopyIndex, target_complete: Callable[[], bool] = lambda: True) -> None:
        self.target = target
        self.target_complete = target_complete
        """Whether every target sample is in ``target`` yet (an expansion fingerprints them while it
        starts searching: a candidate accepted before then is checked again before it is added)."""
        self.threshold = target.threshold
        self._accepted = CopyIndex(target.threshold)
        self._accepted_prints: dict[str, Fingerprint] = {}
        self.late: dict[str, str] = {}
        """Accepted candidates found to copy a target sample only when checked again (image -> sample)."""

    def check(self, image_id: str, fp: Fingerprint) -> CopyVerdict | None:
        """``None`` (and the candidate is accepted), or what it is a copy of."""
        match = self.target.find(fp)
        if match is not None:
            return CopyVerdict(sample_id=match.key, distance=match.distance)
        match = self._accepted.find(fp)
        if match is not None:
            return CopyVerdict(image_id=match.key, distance=match.distance)
        self._accepted.add(image_id, fp)
        self._accepted_prints[image_id] = fp
        return None

    def added(self, sample_ids: Mapping[str, str], prints: Mapping[str, Fingerprint]) -> None:
        """A batch's accepted candidates (``prints``) are settled; those that went in (API image id ->
        new sample id) are target samples now.

        The batch's candidates leave the run's own index: what went in is found in the target, and a
        candidate whose download failed no longer makes later ones copies. Candidates of a batch
        screened meanwhile (an expansion screens the next batch before it adds this one) stay.
        """
        for image_id, sample_id in sample_ids.items():
            fp = prints.get(image_id)
            if fp is not None:
                self.target.add(sample_id, fp)
        if any(image_id in self._accepted_prints for image_id in prints):
            for image_id in prints:
                self._accepted_prints.pop(image_id, None)
            self._accepted = CopyIndex(self.threshold, self._accepted_prints.items())


class Screening:
    """What screening decided for one batch of candidates (API image id -> ...), in the caller's order.

    Without a ``CopyScreen`` (screening off) nothing is a copy and nothing is fingerprinted.
    """

    def __init__(self, screen: CopyScreen | None = None) -> None:
        self.screen = screen
        self.prints: dict[str, Fingerprint] = {}
        """Fingerprints of the accepted candidates, stored on their samples."""
        self.copies: dict[str, CopyVerdict] = {}
        self.unprinted: list[str] = []
        """Accepted without a thumbnail fingerprint: screened from the downloaded file."""
        self.resolved: dict[str, str] = {}
        """Candidate -> the sample id it copies, once the batch's samples are in (``added``)."""
        self.provisional: list[str] = []
        """Accepted before the target's fingerprints were all in: checked again before being added."""

    def check(self, image_id: str, fp: Fingerprint | None) -> bool:
        """Screen one candidate; ``True`` if it is to be downloaded."""
        if self.screen is None:
            return True
        if fp is None:
            self.unprinted.append(image_id)
            return True
        complete = self.screen.target_complete()  # read first: a sample fingerprinted during the check
        verdict = self.screen.check(image_id, fp)
        if verdict is not None:
            self.copies[image_id] = verdict
            return False
        self.prints[image_id] = fp
        if not complete:
            self.provisional.append(image_id)
        return True

    def screen_downloads(self, outcomes: list[DownloadOutcome]) -> list[DownloadOutcome]:
        """The outcomes to keep, once the target's fingerprints are all in: a download screened only
        now (no thumbnail fingerprint), or accepted before the target was complete, that turns out
        to be a copy has its file removed at once and is dropped."""
        if self.screen is None or not (self.unprinted or self.provisional):
            return outcomes
        waiting = set(self.unprinted)
        provisional = set(self.provisional)
        kept = []
        for outcome in outcomes:
            key = outcome.job.key
            if outcome.ok and outcome.path is not None:
                if key in waiting:
                    fp = file_fingerprint(outcome.path)
                    copy = fp is not None and not self.check(key, fp)
                else:
                    copy = key in provisional and self._copies_target_late(key)
                if copy:
                    outcome.path.unlink(missing_ok=True)
                    continue
            kept.append(outcome)
        return kept

    def _copies_target_late(self, image_id: str) -> bool:
        """Check an accepted candidate again, against the target now complete."""
        assert self.screen is not None
        match = self.screen.target.find(self.prints[image_id])
        if match is None:
            return False
        self.copies[image_id] = CopyVerdict(sample_id=match.key, distance=match.distance)
        self.screen.late[image_id] = match.key  # later candidates found to copy it copy that sample
        return True

    def added(self, new_sample_ids: dict[str, str]) -> None:
        """The accepted candidates that went in (API image id -> sample id): the target's from now on."""
        if self.screen is None:
            return
        self.screen.added(new_sample_ids, self.prints)
        for candidate, verdict in self.copies.items():
            if candidate in self.resolved:
                continue
            if verdict.sample_id is not None:
                self.resolved[candidate] = verdict.sample_id
            else:
                image_id = str(verdict.image_id)
                self.resolved[candidate] = new_sample_ids.get(image_id) or self.screen.late.get(
                    image_id, f"simages_id:{image_id}"
                )


def thumbnail_fingerprints(
    images: Sequence[SimilarImage], fetcher: Fetcher, cache: FingerprintCache, max_workers: int
) -> dict[str, Fingerprint]:
    """Fingerprints of results by image id, from their thumbnails; one that cannot be fetched or read
    has none (its image is then screened from the downloaded file)."""
    return fingerprint_results(images, fetcher, cache=cache, max_workers=max_workers)


def start_worker(policy: FetchPolicy, concurrency: int) -> FingerprintWorker | None:
    """The run's fingerprint worker process, or ``None`` (screening then hashes on the run's threads)
    when the policy cannot travel to one (an injected resolver) or the process cannot start."""
    if policy.resolver is not None:
        return None
    try:
        return FingerprintWorker(policy, concurrency=concurrency)
    except OSError as exc:
        logger.warning("fingerprint worker not started (%s): screening on this process's threads", exc)
        return None


class ThumbnailPrints:
    """Thumbnail fingerprints of search results, fetched in the background as each search answers.

    ``start`` is called when a search finishes (a future's callback), so the thumbnails of one batch
    are fetched while the rest of it is still searching; ``take`` waits for one image's fingerprint
    when the batch is screened. Fetching and hashing run in the run's ``FingerprintWorker`` process
    when there is one (they would otherwise hold this process's GIL while it downloads and adds
    samples), else one thumbnail per task on ``workers`` threads with the run's ``Fetcher``.
    """

    def __init__(self, fetcher: Fetcher, workers: int, worker: FingerprintWorker | None = None) -> None:
        self._fetcher = fetcher
        self._worker = worker
        self._pool = (
            None if worker else ThreadPoolExecutor(max(1, workers), thread_name_prefix="simages-thumbs")
        )
        self._cache = FingerprintCache(50_000)
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[str, Future[Fingerprint | None]]] = {}

    def start(self, images: Sequence[SimilarImage]) -> None:
        with self._lock:
            for image in images:
                if image.id in self._pending:
                    continue
                url = image.thumbnail_url or image.url
                cached = self._cache.get(url)
                future: Future[Fingerprint | None]
                if cached is not None:
                    future = Future()
                    future.set_result(cached)
                elif self._worker is not None:
                    future = self._worker.url(url)
                else:
                    assert self._pool is not None
                    future = self._pool.submit(url_fingerprint, url, self._fetcher)
                self._pending[image.id] = (url, future)

    def take(self, image_id: str) -> Fingerprint | None:
        """The image's thumbnail fingerprint (waiting for it), or ``None`` if it has none."""
        with self._lock:
            pending = self._pending.pop(image_id, None)
        if pending is None:
            return None
        url, future = pending
        fp = future.result()
        if fp is not None:
            self._cache.put(url, fp)
        return fp

    def forget(self, image_ids: Iterable[str]) -> None:
        """Images that need no screening after all (duplicates): their entries are dropped."""
        with self._lock:
            for image_id in image_ids:
                self._pending.pop(image_id, None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# --- find results -------------------------------------------------------------------------------


def mark_copies(
    result: FindSimilarResult,
    dataset: fo.Dataset | None,
    fetcher: Fetcher,
    *,
    collapse: bool = True,
    threshold: int = COPY_DISTANCE,
) -> FindSimilarResult:
    """Results compared by fingerprint (from their thumbnails): near-duplicates collapsed into the
    best-scored one (``copies``, when ``collapse``) and copies of the dataset's samples marked
    (``copy_of``, unless ``dataset`` is ``None``). A result whose thumbnail cannot be read is left
    as it is."""
    prints = thumbnail_fingerprints([r.image for r in result.images], fetcher, FingerprintCache(), 16)
    ranked = list(result.images)
    if collapse:
        collapsed = collapse_copies(SearchResult(images=tuple(r.image for r in ranked)), prints, threshold)
        by_id = {r.image.id: r for r in ranked}
        ranked = [
            dataclasses.replace(by_id[image.id], image=image, rank=rank)
            for rank, image in enumerate(collapsed.images, start=1)
        ]
    if dataset is None:
        return dataclasses.replace(result, images=tuple(ranked), copies_collapsed=collapse)
    index, unscreened = dataset_fingerprints(dataset, threshold)  # cached while the dataset is unchanged
    marked = []
    for r in ranked:
        fp = prints.get(r.image.id)
        match = index.find(fp) if fp is not None else None
        marked.append(dataclasses.replace(r, copy_of=match.key) if match is not None else r)
    return dataclasses.replace(
        result, images=tuple(marked), copies_collapsed=collapse, screened=True, unscreened_samples=unscreened
    )
