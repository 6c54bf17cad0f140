"""Expanding a dataset: every sample of a view is a query; new similar images are added batch by batch.

``iter_expand`` yields ``Progress`` after each batch and an ``ExpandResult`` last. The query
samples are streamed: only their ids are listed (``values("id")``), file paths are read one batch
at a time, and at most two batches of searches are in flight (``max_workers`` at once), so memory
follows the batch size, not the view. While one batch downloads and is added, the next one's
searches run. Each batch reuses the import pipeline's pieces (``_importing``): guarded atomic
downloads, samples with detections and provenance, and a roll-back of just that batch if adding
it fails. After each batch the run's record (``_expand_record``) is saved on the dataset, so an
interrupted run, started again with the same parameters, skips the samples already searched;
images already in the target (API id or source URL) are never imported twice.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial

import fiftyone as fo
import fiftyone.core.collections as foc

from simages_core import (
    BatchItem,
    RequestBudget,
    SimilarImage,
    SimilarImagesClient,
    budget_for,
)
from simages_core.fetch import Fetcher

from ._expand_batches import StartedBatch, finish_batch, start_batch
from ._expand_record import (
    ExpandRecord,
    expand_identity,
    expand_run_key,
    load_record,
    save_record,
    start_record,
)
from ._importing import default_media_dir, existing_target
from ._outcomes import ExpandResult, Progress, QueryLabel
from ._params import ExpandParams, ImportOptions
from ._provenance import existing_keys, run_tag
from ._ranking import ClassFilter
from ._samples import SampleSpec
from ._screening import (
    CopyScreen,
    Screening,
    ThumbnailPrints,
    start_worker,
)
from ._target_prints import TargetFingerprints, TargetPrinting, await_printing

logger = logging.getLogger(__name__)

_LOOKAHEAD = 2
"""Batches whose searches are in flight: the one being imported and the next."""


@dataclass(frozen=True)
class ExpandPlan:
    """What an expansion will do, before it sends anything: its run, its queries and its budget."""

    run_key: str
    identity: dict[str, object]
    record: ExpandRecord
    resumed: bool
    target_name: str
    media_dir: str
    total: int
    todo: tuple[str, ...]
    """Ids of the query samples still to search, in the view's order."""

    def budget(self, client: SimilarImagesClient, max_requests: int | None) -> RequestBudget:
        return budget_for(len(self.todo), client.usage, max_requests=max_requests)


def plan_expand(
    collection: foc.SampleCollection,
    params: ExpandParams,
    options: ImportOptions,
    *,
    now: datetime | None = None,
) -> ExpandPlan:
    """Find the run's record (a resumed run) or start a new one's identity; list the query ids left."""
    source = collection._dataset
    target = existing_target(collection, options)
    target_name = target.name if target is not None else str(options.new_dataset_name)
    media_dir = options.media_dir or default_media_dir(target_name)
    identity = expand_identity(collection, params, options, target_name, media_dir)
    key = expand_run_key(identity)
    record = load_record(source, key)
    resumed = record is not None
    if record is None:
        record = ExpandRecord(tag=run_tag(now or datetime.now(timezone.utc)))
    # Samples this expansion imported into the same dataset are results, never queries.
    ids = collection.match_tags(record.tag, bool=False).values("id")
    todo = tuple(i for i in ids if i not in record.done)
    return ExpandPlan(key, identity, record, resumed, target_name, media_dir, len(ids), todo)


def iter_expand(
    client: SimilarImagesClient,
    collection: foc.SampleCollection,
    params: ExpandParams,
    options: ImportOptions,
    *,
    now: datetime | None = None,
) -> Generator[Progress | ExpandResult, None, None]:
    """Search with every sample of ``collection`` and add the new images; yields progress, then the result."""
    plan = plan_expand(collection, params, options, now=now)
    source = collection._dataset
    record = plan.record
    if not plan.resumed:
        start_record(source, plan.run_key, dict(plan.identity), record)
    now = now or datetime.now(timezone.utc)
    spec = SampleSpec(
        label_field=options.label_field,
        keep=ClassFilter(options.classes, options.min_confidence),
        labels=params.labels,
        tag=record.tag,
        query_time=now.astimezone(timezone.utc).replace(tzinfo=None),
    )
    target = existing_target(collection, options)
    known_ids, known_urls = existing_keys(target) if target is not None else (set(), set())
    cap = params.max_requests
    sent = 0
    stopped: str | None = None
    yield Progress(len(record.done) / max(plan.total, 1), _progress_label(record, plan.total))

    pool = ThreadPoolExecutor(max_workers=params.max_workers, thread_name_prefix="simages-expand")
    # One pool for every batch's downloads, so its limit holds while two batches overlap, and one
    # connection pool for the downloads and the thumbnails fetched while searches run.
    download_pool = ThreadPoolExecutor(
        max(options.policy.max_workers, 1), thread_name_prefix="simages-download"
    )
    thumbnail_fetches = params.max_workers * params.per_sample if options.screen_copies else 0
    fetcher = Fetcher(
        options.policy.fetch_policy(), pool_size=max(options.policy.max_workers, 1) + thumbnail_fetches
    )
    worker = start_worker(options.policy.fetch_policy(), thumbnail_fetches) if options.screen_copies else None
    thumbnails = ThumbnailPrints(fetcher, thumbnail_fetches, worker) if options.screen_copies else None
    screen: CopyScreen | None = None
    printing: TargetPrinting | None = None
    target_prints: TargetFingerprints | None = None

    def new_only(images: Sequence[SimilarImage]) -> list[SimilarImage]:
        # Read while the main thread adds to these sets: a membership test is atomic.
        return [i for i in images if i.id not in known_ids and i.url not in known_urls]

    pending: deque[list[tuple[QueryLabel, Future[BatchItem]]]] = deque()
    started: deque[tuple[StartedBatch, int]] = deque()  # screened and downloading; requests it holds
    position = 0
    try:
        while True:
            # Keep the next batches' searches in flight while this one is imported.
            # After a fatal error nothing new is sent; what is in flight is still imported (it is paid).
            while (
                stopped is None
                and len(pending) < _LOOKAHEAD
                and position < len(plan.todo)
                and (cap is None or sent < cap)
            ):
                room = params.batch_size if cap is None else min(params.batch_size, cap - sent)
                chunk = plan.todo[position : position + room]
                position += len(chunk)
                batch = _submit(pool, client, source, chunk, params, record)
                if thumbnails is not None:
                    for _, future in batch:
                        future.add_done_callback(partial(_fingerprint_answer, thumbnails, new_only))
                sent += len(batch)
                pending.append(batch)
            if not pending and not started:
                break
            if options.screen_copies and screen is None:
                # The target's fingerprints are computed on a thread of their own while the first
                # searches, thumbnails and downloads run; candidates accepted before they are all
                # in are checked again before they are added.
                done = len(record.done) / max(plan.total, 1)
                printing = TargetPrinting(target, options.copy_threshold, worker, span=(done, done))
                screen = CopyScreen(printing.index, printing.complete)
            if pending:
                # Batch k+1 is screened and starts downloading before batch k is added.
                batch = pending.popleft()
                begun = start_batch(
                    batch, (known_ids, known_urls), record, Screening(screen), thumbnails,
                    plan.media_dir, fetcher, download_pool,
                )  # fmt: skip
                started.append((begun, len(batch)))
                stopped = stopped or begun.fatal
            if len(started) > 1 or (started and not pending):
                if printing is not None and target_prints is None:
                    target_prints = yield from await_printing(printing)  # no batch is added before
                finished, requests = started.popleft()
                target = finish_batch(finished, target, plan.target_name, spec, record)
                record.requests += requests
                save_record(source, plan.run_key, record)
                yield Progress(len(record.done) / max(plan.total, 1), _progress_label(record, plan.total))
        if stopped is None and position < len(plan.todo):  # only the cap (or an error) leaves queries unsent
            stopped = "cap"
    finally:
        # An interrupted run (an error, or a closed generator) sends nothing more, and a batch
        # started but not added leaves no file behind.
        for unfinished, _ in started:
            unfinished.close()
        if printing is not None:
            printing.close()
        pool.shutdown(wait=True, cancel_futures=True)
        download_pool.shutdown(wait=True, cancel_futures=True)
        if thumbnails is not None:
            thumbnails.close()
        if worker is not None:
            worker.close()
        fetcher.close()
    yield ExpandResult(
        dataset_name=plan.target_name,
        tag=record.tag,
        run_key=plan.run_key,
        media_dir=plan.media_dir,
        queries_total=plan.total,
        queries_done=len(record.done),
        requests_this_run=sent,
        found=record.found,
        imported=record.imported,
        skipped_duplicates=record.skipped_duplicates,
        failed_downloads=record.failed_downloads,
        failed_queries=record.failed_queries,
        errors=tuple(record.errors),
        stopped=stopped,
        resumed=plan.resumed,
        skipped_copies=record.skipped_copies,
        copies=dict(record.copies),
        screened=options.screen_copies,
        fingerprints_computed=target_prints.computed if target_prints else 0,
        unreadable_samples=target_prints.unreadable if target_prints else 0,
    )


def _fingerprint_answer(
    thumbnails: ThumbnailPrints,
    new_only: Callable[[Sequence[SimilarImage]], list[SimilarImage]],
    future: Future[BatchItem],
) -> None:
    """A search answered: start fingerprinting the thumbnails of its new images (a future's callback)."""
    if future.cancelled() or future.exception() is not None:
        return
    item = future.result()
    if item.result is not None:
        thumbnails.start(new_only(item.result.images))


def _progress_label(record: ExpandRecord, total: int) -> str:
    return f"Searched {len(record.done)}/{total} samples, imported {record.imported}"


def _submit(
    pool: ThreadPoolExecutor,
    client: SimilarImagesClient,
    source: fo.Dataset,
    chunk: Sequence[str],
    params: ExpandParams,
    record: ExpandRecord,
) -> list[tuple[QueryLabel, Future[BatchItem]]]:
    """Start the searches of one chunk of query samples; a sample without a file sends nothing."""
    ids, paths = source.select(list(chunk)).values(["id", "filepath"])
    by_id = dict(zip(ids, paths, strict=True))
    batch = []
    for sample_id in chunk:
        path = by_id.get(sample_id)
        if path is None or not os.path.isfile(path):
            # Not marked done: a re-run tries it again once the file is there (it costs nothing).
            record.failed_queries += 1
            record.note_error(f"sample:{sample_id}: no local image file")
            continue
        query = params.query(image=path)
        batch.append((QueryLabel("sample", sample_id), pool.submit(client.run_query, query)))
    return batch
