"""``expand``'s copy screening: is a similar image a copy of a task's image, or of one this run took?

Candidates are fingerprinted from their thumbnails (the core's ``fingerprint_results``, through a
fetcher with the policy the backend gives the API's own URLs) on a pool of the run's own, so those
fetches overlap the searches instead of taking turns with them; the run then checks each
candidate, in source order, against one ``CopyIndex`` of the project's task images and of the
images the run accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from simages_core import SimilarImage
from simages_core.fetch import Fetcher, FetchPolicy
from simages_core.identity import CopyIndex, CopyMatch, Fingerprint, FingerprintCache, fingerprint_results

_TASK = "task:"
_IMAGE = "image:"
_PER_SEARCH = 4
"""Thumbnails of one search fetched at once (a search brings ``per_task`` candidates)."""


@dataclass(frozen=True)
class SkippedCopy:
    """A similar image not imported because it is a copy of an image the project already has."""

    source_task: int
    """The task whose search found it."""
    image_id: str
    url: str
    copy_of_task: int | None
    """The task whose image it copies: one of the project's, or one this run imported (``None`` if
    that one's import failed)."""
    copy_of_image: str | None
    """The API image id of the image it copies when that one was imported by this run."""
    distance: int
    """Bits between the two fingerprints (at most the threshold)."""


@dataclass(frozen=True)
class CopySeen:
    """A copy as the run sees it; the task of an image it imported is known only once that landed."""

    source_task: int
    image: SimilarImage
    match: CopyMatch

    def resolved(self, task_of_image: dict[str, int]) -> SkippedCopy:
        key = self.match.key
        task: int | None
        image: str | None = None
        if key.startswith(_TASK):
            task = int(key.removeprefix(_TASK))
        else:
            image = key.removeprefix(_IMAGE)
            task = task_of_image.get(image)
        return SkippedCopy(self.source_task, self.image.id, self.image.url, task, image, self.match.distance)


class CopyScreen:
    """The project's fingerprints plus the run's, and a pool that fingerprints candidates' thumbnails."""

    def __init__(self, threshold: int, policy: FetchPolicy, searches_at_once: int) -> None:
        self.index = CopyIndex(threshold)
        self.threshold = self.index.threshold
        # Each search's thumbnails are fetched together, up to _PER_SEARCH at once.
        self._fetcher = Fetcher(policy, pool_size=searches_at_once * _PER_SEARCH)
        self._cache = FingerprintCache()  # a thumbnail several searches return is fetched once
        self._pool = ThreadPoolExecutor(searches_at_once, thread_name_prefix="simages-ls-fingerprint")

    def add_tasks(self, fingerprints: Iterable[tuple[int, Fingerprint]]) -> None:
        for task_id, fp in fingerprints:
            self.index.add(f"{_TASK}{task_id}", fp)

    def submit(self, images: Sequence[SimilarImage]) -> Future[dict[str, Fingerprint]]:
        """Fingerprints of ``images`` by id, on the screen's pool (an image without one is left out)."""
        return self._pool.submit(
            fingerprint_results,
            images,
            self._fetcher,
            cache=self._cache,
            max_workers=max(1, min(_PER_SEARCH, len(images))),
        )

    def find(self, fp: Fingerprint) -> CopyMatch | None:
        return self.index.find(fp)

    def accept(self, image_id: str, fp: Fingerprint) -> None:
        """An image the run imports: later candidates are screened against it too."""
        self.index.add(f"{_IMAGE}{image_id}", fp)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._fetcher.close()
