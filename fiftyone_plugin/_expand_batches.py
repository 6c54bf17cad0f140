"""One batch of an expansion, in two halves, so that the next batch downloads while this one is added.

``start_batch`` takes a batch's answers: it deduplicates them, screens the new images for copies
and submits their downloads to the run's download pool, and returns at once. ``finish_batch``
reads those downloads as they finish, adds the samples (all of the batch or none of it) and
updates the run's record. ``iter_expand`` starts batch k+1 before it finishes batch k: the
download pool then never idles while a batch is screened, built and added (measured in
``bench/bench_fo_expand.py``; DESIGN.md "Expanding a dataset").

Screening stays in order: batch k+1 is screened after batch k, against the target and against
what batch k (and k+1 before it) accepted, still pending in the ``CopyScreen``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import fiftyone as fo

from simages_core import BatchItem, InvalidApiKey, MissingApiKey, QuotaExceeded, redact_url
from simages_core.fetch import Fetcher

from ._downloads import DownloadBatch, DownloadJob
from ._expand_record import ExpandRecord
from ._importing import add_downloaded, roll_back
from ._outcomes import QueryLabel, RankedImage
from ._samples import SampleSpec
from ._screening import Screening, ThumbnailPrints

# Errors after which no further query can succeed today: the run stops instead of sending the rest.
FATAL: dict[type[Exception], str] = {
    QuotaExceeded: "the API's quota is exhausted",
    InvalidApiKey: "the API key was refused",
    MissingApiKey: "no API key",
}


@dataclass
class StartedBatch:
    """A batch whose new images are screened and downloading."""

    new: dict[str, RankedImage]
    """Every new image of the batch (copies included), by API image id."""
    jobs: list[DownloadJob]
    """The downloads submitted, in the batch's order."""
    downloads: DownloadBatch
    screening: Screening
    answered: list[str] = field(default_factory=list)
    """Query sample ids whose search answered."""
    fatal: str | None = None

    def close(self) -> None:
        """Drop the batch unfinished: downloads not started are cancelled and their files removed."""
        self.downloads.close()


def start_batch(
    batch: Sequence[tuple[QueryLabel, Future[BatchItem]]],
    known: tuple[set[str], set[str]],
    record: ExpandRecord,
    screening: Screening,
    thumbnails: ThumbnailPrints | None,
    media_dir: str,
    fetcher: Fetcher,
    download_pool: ThreadPoolExecutor,
) -> StartedBatch:
    """Take a batch's answers in order: deduplicate, screen and submit each new image's download as
    soon as its answer (and its thumbnail's fingerprint) is in, so downloads flow while the batch's
    last answers and thumbnails are still awaited."""
    known_ids, known_urls = known
    started = StartedBatch(
        new={}, jobs=[], downloads=DownloadBatch(media_dir, fetcher, download_pool), screening=screening
    )
    for label, future in batch:
        item = future.result()
        if item.result is None:
            record.failed_queries += 1
            record.note_error(f"{label}: {item.error}")
            why = next((w for cls, w in FATAL.items() if isinstance(item.error, cls)), None)
            if why is not None and started.fatal is None:
                started.fatal = f"{why} ({item.error})"
            continue
        started.answered.append(label.value)
        fresh: list[RankedImage] = []
        for rank, image in enumerate(item.result.images, start=1):
            record.found += 1
            if image.id in known_ids or image.url in known_urls:
                record.skipped_duplicates += 1
                continue
            # The first query sample to find an image is its provenance.
            known_ids.add(image.id)
            known_urls.add(image.url)
            fresh.append(RankedImage(image=image, rank=rank, query=label))
        if thumbnails is not None:
            # Started by the search's callback already; a callback may run just after its result
            # is read, so starting here too (a no-op for images under way) makes sure none is missed.
            thumbnails.start([r.image for r in fresh])
        for ranked in fresh:  # in the batch's order: the first of several copies is the one kept
            started.new[ranked.image.id] = ranked
            if thumbnails is not None and not screening.check(
                ranked.image.id, thumbnails.take(ranked.image.id)
            ):
                continue
            job = DownloadJob(key=ranked.image.id, url=ranked.image.url)
            started.jobs.append(job)
            started.downloads.submit(job)
    if thumbnails is not None:
        thumbnails.forget(
            image.id for _, f in batch if (r := f.result().result) is not None for image in r.images
        )
    return started


def finish_batch(
    batch: StartedBatch,
    target: fo.Dataset | None,
    target_name: str,
    spec: SampleSpec,
    record: ExpandRecord,
) -> fo.Dataset | None:
    """Add a started batch's downloaded images, all or nothing; returns the target (made if needed)."""
    screening = batch.screening
    outcomes = []
    try:
        # Read one by one, so a roll-back knows every file handed over before an interruption.
        for outcome in batch.downloads:
            outcomes.append(outcome)
        order = {job.key: i for i, job in enumerate(batch.jobs)}
        target, sample_ids, _ = add_downloaded(
            target, target_name, batch.new, sorted(outcomes, key=lambda o: order[o.job.key]), spec, screening
        )
    except BaseException:
        batch.close()  # what was never read is removed; what was read is rolled back below
        roll_back(target, spec.tag, outcomes, only_ids=set(batch.new))
        raise
    record.imported += len(sample_ids)
    record.skipped_copies += len(screening.copies)
    record.copies.update(screening.resolved)
    for outcome in outcomes:
        if not outcome.ok:
            record.failed_downloads += 1
            record.note_error(f"download {outcome.job.key} ({redact_url(outcome.job.url)}): {outcome.error}")
    record.done.update(batch.answered)
    return target
