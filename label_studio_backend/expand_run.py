"""One ``expand`` run: searches stream through the bounded pool, results become chunks, chunks are imported.

Split from ``expand.py`` (which finds the project and what to search) so each module has one job:
this one turns source tasks into new tasks, deduplicated across the run and against the project,
counts every search against the cap, and reports what landed.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from label_studio_sdk import LabelStudio

from simages_core import BatchItem, ConnectError, Query, SearchResult, SimilarImage, SimilarImagesError
from simages_core.identity import Fingerprint

from .context import ACCOUNT_ERRORS, AccountError, BackendContext, public_url
from .expand_chunks import Chunk, ChunkImporter
from .expand_new_tasks import new_task_data, own_prediction
from .expand_report import ExpandReport, Options
from .expand_screen import CopyScreen, CopySeen
from .expand_tasks import ProjectScan, SourceTask
from .label_config import ImageTarget
from .searched_tasks import SearchedTaskStore
from .task_fingerprints import (
    STORE_FOLDER,
    TaskFingerprints,
    TaskFingerprintStore,
    fingerprint_tasks,
)
from .task_images import TaskImageError

logger = logging.getLogger("simages_label_studio.expand")

__all__ = ["ExpandReport", "ExpandRun", "FingerprintProgress", "Options", "Progress"]

UNREACHABLE_IN_A_ROW = 3
"""Searches in a row that could not reach the API (each after the client's retries) before the run
stops: the API is down, and every other search would only spend its retries finding that out."""

Progress = Callable[[int, int], None]
"""Called with (source tasks searched, source tasks this run will search) as the run goes."""
FingerprintProgress = Callable[[int, int], None]
"""Called with (task images fingerprinted or found in the store, task images to fingerprint)."""


@dataclass(frozen=True)
class _Searched:
    """A search's outcome (a failure as text) and, when screening, its candidates' fingerprints."""

    outcome: BatchItem | str
    fingerprints: Future[dict[str, Fingerprint]] | None = None


class _NotSent(Exception):
    """This search was not sent: the run's ``max_requests`` were all sent, or the API is down."""


class ExpandRun:
    """One run: searches stream through the pool, results become chunks, chunks are imported in order."""

    def __init__(
        self,
        ls: LabelStudio,
        project_id: int,
        target: ImageTarget,
        model_version: str,
        scan: ProjectScan,
        options: Options,
        context: BackendContext,
        progress: Progress | None,
        started: float,
        fingerprint_progress: FingerprintProgress | None = None,
        searched_store: SearchedTaskStore | None = None,
    ) -> None:
        self.project_id, self.target, self.scan, self.options = project_id, target, scan, options
        self.context, self.progress = context, progress
        self.importer = ChunkImporter(ls, project_id, context.redact)
        self.model_version = model_version
        self.started = started
        self.when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.failed: dict[int, str] = {}
        self.skipped = sum(scan.resumed.values())
        self.sent = 0  # searches sent (or being sent): never more than max_requests
        self._sent_lock = threading.Lock()
        self.empty = 0  # source tasks searched that had nothing new to add
        self.account_error: SimilarImagesError | None = None
        self.fingerprint_progress = fingerprint_progress
        self.screen: CopyScreen | None = None
        self.task_fingerprints = TaskFingerprints()
        self.copies: list[CopySeen] = []
        self.unscreened = 0
        self._accepted: dict[str, tuple[int, int]] = {}  # image id -> (source task, its place among them)
        self.searched_store = searched_store
        self._unreachable_in_a_row = 0  # completed searches, in completion order (under _sent_lock)
        self.api_down = False

    def _take_request(self) -> None:
        """Counts one search against the cap, or raises ``_NotSent``: the cap is exact across threads."""
        with self._sent_lock:
            if self.api_down:
                raise _NotSent
            if self.options.max_requests is not None and self.sent >= self.options.max_requests:
                raise _NotSent
            self.sent += 1

    def _search(self, source: SourceTask) -> _Searched:
        """On a pool thread: the source's image (downloaded only now) and its search; a failure as text.

        When screening, the candidates' thumbnails are handed to the screen's own pool, so this
        worker goes on to the next search while they are fetched.
        """
        if source.ref is None:
            return _Searched(source.ref_error or "the task has no image")
        try:
            image = self.context.resolver.resolve(source.ref, source.id, need_size=False)
        except TaskImageError as exc:
            return _Searched(self.context.redact(str(exc)))
        query = Query(url=image.url, image=image.data, num_similar=self.options.per_task + 1, labels=True)
        self._take_request()
        item = self.context.client.run_query(query)  # never raises; the image is dropped after this
        self._note_reachability(item)
        if self.screen is None or item.result is None:
            return _Searched(item)
        # Known ids and URLs are read while the main thread adds to them: at worst a thumbnail too many.
        fresh = [image for _, image in self._candidates(source, item.result) if not self._known(image)]
        return _Searched(item, self.screen.submit(fresh) if fresh else None)

    def _note_reachability(self, item: BatchItem) -> None:
        """Trips the breaker after ``UNREACHABLE_IN_A_ROW`` searches in a row could not connect."""
        with self._sent_lock:
            if isinstance(item.error, ConnectError):
                self._unreachable_in_a_row += 1
                if self._unreachable_in_a_row >= UNREACHABLE_IN_A_ROW and not self.api_down:
                    self.api_down = True
                    logger.warning(
                        "the Similar Images API could not be reached %d times in a row: sending no more",
                        self._unreachable_in_a_row,
                    )
            else:
                self._unreachable_in_a_row = 0

    def _candidates(self, source: SourceTask, result: SearchResult) -> list[tuple[int, SimilarImage]]:
        """(rank, image) of the similar images the source may add: not itself, at least ``min_score``."""
        others = [im for im in result.images if im.url != source.ref and im.id != source.simages_id]
        ranked = list(enumerate(others[: self.options.per_task], start=1))
        return [(rank, image) for rank, image in ranked if image.score >= self.options.min_score]

    def _known(self, image: SimilarImage) -> bool:
        return image.id in self.scan.known_ids or image.url in self.scan.known_urls

    def _searches(self) -> Iterator[tuple[SourceTask, _Searched | None]]:
        """Each source with its outcome, in source order (``None``: not searched, the cap was reached).

        At most ``4 x max_workers`` searches are queued, running or done but not yet consumed: an image
        is downloaded only inside its running search and dropped after it, so images in memory are
        bounded by the workers and results by the window; the slack keeps the pool busy behind a
        slow search (results are consumed in order, for a deterministic deduplication).
        """
        window = 4 * self.context.settings.max_workers
        pending: deque[tuple[SourceTask, Future[_Searched]]] = deque()
        sources = iter(self.scan.sources)
        while True:
            while len(pending) < window and not self._stopping():
                source = next(sources, None)
                if source is None:
                    break
                pending.append((source, self.context.executor.submit(self._search, source)))
            if not pending:
                return
            source, future = pending.popleft()
            try:
                yield source, future.result()
            except _NotSent:
                yield source, None

    def _stopping(self) -> bool:
        capped = self.options.max_requests is not None and self.sent >= self.options.max_requests
        return capped or self.api_down or self.account_error is not None or not self.importer.ok()

    def run(self) -> ExpandReport:
        total = len(self.scan.sources)
        if self.options.max_requests is not None:
            total = min(total, self.options.max_requests)
        chunk = Chunk(1)
        searched = 0
        try:
            if (
                self.options.copy_threshold is not None and self.scan.sources
            ):  # nothing searched, nothing to screen
                self.screen = self._open_screen(self.options.copy_threshold)
            if self.progress:
                self.progress(0, total)
            for source, outcome in self._searches():
                if self.importer.failure is not None or outcome is None:
                    continue  # after a failed import nothing more is imported; run again to retry
                searched += 1
                empty_before = self.empty
                self._add(source, outcome, chunk)
                if self.empty > empty_before:  # added nothing: only this record says it was searched
                    self._record_searched((source.id,))
                if self.progress:
                    self.progress(searched, total)
                if len(chunk.tasks) >= self.options.chunk_size:
                    self.importer.submit(chunk)
                    chunk = Chunk(chunk.number + 1)
            if chunk.tasks:
                self.importer.submit(chunk)
            self.importer.wait()
        finally:
            self.importer.close()
            self._record_searched(self.importer.landed)
            if self.screen is not None:
                self.screen.close()
        return self._report(searched)

    def _record_searched(self, task_ids: Iterable[int]) -> None:
        if self.searched_store is not None:
            self.searched_store.record(task_ids)

    def _open_screen(self, threshold: int) -> CopyScreen:
        """The screen, holding the fingerprint of every task image of the project (fetched if need be)."""
        settings = self.context.settings
        store = TaskFingerprintStore(
            settings.simages_home / STORE_FOLDER, public_url(settings.label_studio_url or ""), self.project_id
        )
        try:
            self.task_fingerprints = fingerprint_tasks(
                self.scan.to_fingerprint,
                len(self.scan.to_fingerprint),
                store=store,
                resolver=self.context.resolver,
                executor=self.context.executor,
                window=4 * settings.max_workers,
                describe_error=self.context.redact,
                progress=self.fingerprint_progress,
            )
        finally:
            store.close()
        screen = CopyScreen(threshold, self.context.resolver.api_policy, settings.max_workers)
        screen.add_tasks(self.scan.fingerprints)
        screen.add_tasks(self.task_fingerprints.found)
        # The index holds them now; the lists would only double the memory of a large project.
        self.scan.fingerprints, self.scan.to_fingerprint, self.task_fingerprints.found = [], [], []
        return screen

    def _add(self, source: SourceTask, searched: _Searched, chunk: Chunk) -> None:
        """The source's new tasks into ``chunk``, deduplicated and screened against the project and this run."""
        outcome = searched.outcome
        if isinstance(outcome, str) or outcome.error is not None or outcome.result is None:
            error = outcome if isinstance(outcome, str) else outcome.error
            if isinstance(error, ACCOUNT_ERRORS) and self.account_error is None:
                self.account_error = error  # the API refuses every search now: stop sending
            self.failed[source.id] = self.context.redact(str(error))
            logger.warning("task %s: %s", source.id, self.failed[source.id])
            return
        fingerprints = searched.fingerprints.result() if searched.fingerprints is not None else {}
        added = 0
        for rank, image in self._candidates(source, outcome.result):
            if self._known(image):
                self.skipped += 1
                continue
            fp = fingerprints.get(image.id)
            if self.screen is not None:
                match = self.screen.find(fp) if fp is not None else None
                if match is not None:
                    self.copies.append(CopySeen(source.id, image, match))
                    continue
                if fp is None:
                    self.unscreened += (
                        1  # its thumbnail could not be read: at worst a duplicate, never a loss
                    )
                else:
                    self.screen.accept(image.id, fp)
            self.scan.known_ids.add(image.id)
            self.scan.known_urls.add(image.url)
            if self.screen is not None:
                self._accepted[image.id] = (source.id, added)
            chunk.tasks.append(
                {
                    "data": new_task_data(self.target, image, source.id, rank, self.when, fp),
                    "predictions": [
                        own_prediction(self.target, image, self.context.thresholds, self.model_version)
                    ],
                }
            )
            chunk.sources.append(source.id)
            added += 1
        if not added:
            self.empty += 1

    def _report(self, searched: int) -> ExpandReport:
        importer = self.importer
        failure = importer.failure
        if self.account_error is not None and not importer.landed and failure is None:
            raise AccountError(self.account_error)
        remaining = len(self.scan.sources) - len(importer.landed) - len(self.failed) - self.empty
        if failure is not None:
            stopped: str | None = f"the import of chunk {failure.chunk} failed: {failure.reason}"
        elif self.api_down:
            stopped = (
                f"the Similar Images API could not be reached ({self.context.client.base_url}) for "
                f"{UNREACHABLE_IN_A_ROW} searches in a row, so the other source tasks were not sent; "
                "once it answers, run the same command again to continue"
            )
        elif self.account_error is not None:
            refused = self.context.redact(str(AccountError(self.account_error)))
            stopped = f"the Similar Images API refused: {refused}"
        elif remaining and self.options.max_requests is not None:
            stopped = f"the cap of {self.options.max_requests} requests was reached"
        else:
            stopped = None
        task_of_image = {
            image_id: landed[place]
            for image_id, (source_id, place) in self._accepted.items()
            if len(landed := importer.landed.get(source_id, ())) > place
        }
        return ExpandReport(
            project_id=self.project_id,
            source_tasks=len(self.scan.sources) + len(self.scan.resumed) + self.scan.searched_before,
            added=len(importer.new_task_ids),
            skipped_existing=self.skipped,
            new_task_ids=tuple(importer.new_task_ids),
            failed_tasks=self.failed,
            landed=importer.landed,
            requests=self.sent,
            resumed=len(self.scan.resumed),
            remaining=max(0, remaining),
            chunks=importer.chunks_imported,
            stopped=stopped,
            failed_chunk=failure,
            api_refused=self.account_error is not None,
            seconds=round(time.perf_counter() - self.started, 3),
            copy_threshold=self.options.copy_threshold,
            skipped_copies=len(self.copies),
            copies=tuple(seen.resolved(task_of_image) for seen in self.copies),
            task_images_fingerprinted=self.task_fingerprints.fetched,
            task_images_from_store=self.task_fingerprints.cached,
            task_images_unreadable=self.task_fingerprints.unreadable,
            unscreened_images=self.unscreened,
            searched=searched,
            to_search=len(self.scan.sources),
            searched_before=self.scan.searched_before,
            api_unreachable=self.api_down,
        )
