"""The import pipeline: search, skip what the target already holds, download, add samples, or undo it all.

``iter_import`` yields ``Progress`` on the way and an ``ImportSimilarResult`` last. A run is all
or nothing for what it writes: if adding the samples fails part-way (FiftyOne inserts in
batches) or the run is cancelled, the samples carrying the run's tag and every file the run
downloaded are removed, and a dataset the run created is deleted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import closing
from datetime import datetime, timezone
from typing import Any, TypeVar

import fiftyone as fo
import fiftyone.core.collections as foc
from fiftyone import ViewField as F

from simages_core import SimilarImagesClient

from ._downloads import DownloadJob, DownloadOutcome, iter_downloads
from ._outcomes import FailedDownload, ImportSimilarResult, Progress, RankedImage
from ._params import ImportOptions, SearchParams
from ._provenance import existing_keys, run_tag
from ._ranking import ClassFilter
from ._samples import SampleSpec, build_sample
from ._search import plan_queries, run_search

logger = logging.getLogger(__name__)

_R = TypeVar("_R")


def default_media_dir(collection: foc.SampleCollection, target_name: str) -> str:
    """Beside the dataset's media: ``<common folder of its files>/simages``.

    A dataset without files gets a folder under FiftyOne's default dataset directory.
    """
    paths = [p for p in collection._dataset.limit(1000).values("filepath") if p]
    dirs = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if dirs:
        try:
            return os.path.join(os.path.commonpath(sorted(dirs)), "simages")
        except ValueError:  # different drives on Windows
            pass
    return os.path.join(fo.config.default_dataset_dir, target_name, "simages")


def existing_target(collection: foc.SampleCollection, options: ImportOptions) -> fo.Dataset | None:
    """The dataset to add to, if it exists yet: the collection's own, or the named one."""
    if not options.new_dataset_name:
        return collection._dataset
    name = options.new_dataset_name
    return fo.load_dataset(name) if fo.dataset_exists(name) else None


def create_target(name: str) -> fo.Dataset:
    dataset = fo.Dataset(name)
    dataset.persistent = True
    return dataset


def iter_import(
    client: SimilarImagesClient,
    collection: foc.SampleCollection,
    params: SearchParams,
    options: ImportOptions,
    *,
    now: datetime | None = None,
) -> Iterator[Progress | ImportSimilarResult]:
    """Search, skip duplicates, download, add samples; yields ``Progress`` and finally the result."""
    planned = plan_queries(collection, params)
    yield Progress(0.0, f"Searching ({len(planned)} quer{'y' if len(planned) == 1 else 'ies'})")
    found = run_search(client, planned)
    now = now or datetime.now(timezone.utc)
    tag = run_tag(now)
    # A new dataset is created only when there is something to put in it: a run that imports
    # nothing (all duplicates, all downloads failed) leaves no empty dataset behind.
    dataset = existing_target(collection, options)
    target_name = dataset.name if dataset is not None else str(options.new_dataset_name)
    created = False
    media_dir = options.media_dir or default_media_dir(collection, target_name)
    known_ids, known_urls = existing_keys(dataset) if dataset is not None else (set(), set())
    todo = [r for r in found.images if r.image.id not in known_ids and r.image.url not in known_urls]
    skipped = len(found.images) - len(todo)
    yield Progress(0.05, f"Found {len(found.images)}, {skipped} already in {target_name!r}")

    by_id = {r.image.id: r for r in todo}
    outcomes: dict[str, DownloadOutcome] = {}
    jobs = [DownloadJob(key=r.image.id, url=r.image.url) for r in todo]
    spec = SampleSpec(
        label_field=options.label_field,
        keep=ClassFilter(options.classes, options.min_confidence),
        labels=params.labels,
        tag=tag,
        query_time=now.astimezone(timezone.utc).replace(tzinfo=None),
    )
    sample_ids: list[str] = []
    try:
        with closing(iter_downloads(jobs, media_dir, options.policy)) as downloads:
            for done, outcome in enumerate(downloads, start=1):
                outcomes[outcome.job.key] = outcome
                yield Progress(0.05 + 0.85 * done / len(jobs), f"Downloaded {done}/{len(jobs)}")
        samples = build_samples(by_id, [outcomes[j.key] for j in jobs], spec)
        if samples:
            if dataset is None:
                dataset, created = create_target(target_name), True
            sample_ids = list(dataset.add_samples(samples, progress=False))
    except BaseException:
        # A failure, or a cancelled run (GeneratorExit): take back everything this run wrote.
        roll_back(dataset if not created else None, tag, outcomes.values())
        if created and fo.dataset_exists(target_name):
            fo.delete_dataset(target_name)
        raise
    failed = tuple(
        FailedDownload(o.job.key, o.job.url, o.error or "unknown")
        for o in (outcomes[j.key] for j in jobs)
        if not o.ok
    )
    yield Progress(1.0, f"Imported {len(sample_ids)}")
    yield ImportSimilarResult(
        dataset_name=target_name,
        tag=tag,
        media_dir=str(media_dir),
        found=len(found.images),
        imported=len(sample_ids),
        skipped_duplicates=skipped,
        failed=failed,
        sample_ids=tuple(sample_ids),
        query_errors=found.errors,
        new_dataset=created,
    )


def build_samples(
    by_id: Mapping[str, RankedImage], outcomes: Iterable[DownloadOutcome], spec: SampleSpec
) -> list[fo.Sample]:
    """New samples for the successful downloads (keyed by API image id), in the outcomes' order."""
    return [
        build_sample(
            by_id[o.job.key],
            o.path,
            o.width or 0,
            o.height or 0,
            spec,
            size_bytes=o.size_bytes,
            mime_type=o.mime_type,
        )
        for o in outcomes
        if o.ok and o.path is not None
    ]


def roll_back(
    dataset: fo.Dataset | None,
    tag: str,
    outcomes: Iterable[DownloadOutcome],
    only_ids: Collection[str] | None = None,
) -> None:
    """Remove the samples tagged with this run (some batches may be in) and then the run's files.

    ``only_ids`` narrows the removal to samples with those API image ids: one batch of a
    longer run (``_expanding``), whose earlier batches stay. The files go only once no sample of
    the run can point at them: if removing the samples fails, the files stay (a sample without
    its file would be worse than an extra file).
    """
    if dataset is not None:
        try:
            partial = dataset.match_tags(tag)
            if only_ids is not None:
                partial = partial.match(F("simages_id").is_in(sorted(only_ids)))
            if len(partial):
                dataset.delete_samples(partial)
        except Exception:
            logger.exception("could not remove the samples of failed run %s; its files are kept", tag)
            return
    for outcome in outcomes:
        # Downloads never overwrite a file, so every file of a successful outcome is this run's own.
        if outcome.ok and outcome.path is not None:
            outcome.path.unlink(missing_ok=True)


def drain(events: Iterator[Progress | _R], progress: Callable[[Progress], Any] | None = None) -> _R:
    """Run ``iter_import`` (or ``iter_expand``) to the end, passing progress to ``progress``; returns the result."""
    result: _R | None = None
    for event in events:
        if isinstance(event, Progress):
            if progress is not None:
                progress(event)
        else:
            result = event
    assert result is not None
    return result
