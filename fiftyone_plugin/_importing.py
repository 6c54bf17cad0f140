"""The import pipeline: search, skip what the target already holds, download, add samples, or undo it all.

``iter_import`` yields ``Progress`` on the way and an ``ImportSimilarResult`` last. A run is all
or nothing for what it writes: if adding the samples fails part-way (FiftyOne inserts in
batches) or the run is cancelled, the samples carrying the run's tag and every file the run
downloaded are removed, and a dataset the run created is deleted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, TypeVar

import fiftyone as fo
import fiftyone.core.collections as foc
from fiftyone import ViewField as F
from fiftyone.core.utils import to_slug

from simages_core import SimilarImagesClient
from simages_core.fetch import Fetcher
from simages_core.identity import CopyIndex, Fingerprint, FingerprintCache

from ._downloads import DownloadJob, DownloadOutcome, iter_downloads
from ._outcomes import (
    FailedDownload,
    FindSimilarResult,
    ImportSimilarResult,
    Progress,
    QueryRegion,
    RankedImage,
)
from ._params import ImportOptions, SearchParams
from ._provenance import existing_keys, record_run, run_tag
from ._ranking import ClassFilter
from ._samples import SampleSpec, build_sample
from ._screening import (
    CopyScreen,
    Screening,
    thumbnail_fingerprints,
)
from ._search import plan_queries, run_search
from ._target_prints import TargetFingerprints, iter_target_fingerprints

logger = logging.getLogger(__name__)

_R = TypeVar("_R")


def default_media_dir(target_name: str) -> str:
    """``<FiftyOne's dataset directory>/<dataset slug>/simages``: FiftyOne's own folder, never the user's media.

    Beside the dataset's media (the old default) the downloads landed in the folder a local
    server indexes, so the next ``simages-server index`` took them in and every photo was found
    twice. FiftyOne's ``default_dataset_dir`` belongs to FiftyOne; the slug keeps the name a
    valid folder name.
    """
    return os.path.join(fo.config.default_dataset_dir, to_slug(target_name), "simages")


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
    """Search, skip duplicates and copies, download, add samples, record the run; yields ``Progress``, then the result."""
    planned = plan_queries(collection, params)
    yield Progress(0.0, f"Searching ({len(planned)} quer{'y' if len(planned) == 1 else 'ies'})")
    found = run_search(client, planned)
    regions = [label.region for label, _ in planned if label.region is not None]
    yield from iter_import_found(collection, found, params, options, regions, now=now)


def iter_import_found(
    collection: foc.SampleCollection,
    found: FindSimilarResult,
    params: SearchParams,
    options: ImportOptions,
    regions: Sequence[QueryRegion] = (),
    *,
    now: datetime | None = None,
) -> Generator[Progress | ImportSimilarResult, None, None]:
    """Import results already found (``params`` is the search that found them, ``regions`` its
    detections): what ``iter_import`` does after its search, and what the panel's "Import
    selected" runs on the ticked results, so both skip, screen, download and record alike."""
    now = now or datetime.now(timezone.utc)
    tag = run_tag(now)
    # A new dataset is created only when there is something to put in it: a run that imports
    # nothing (all duplicates, all downloads failed) leaves no empty dataset behind.
    dataset = existing_target(collection, options)
    target_name = dataset.name if dataset is not None else str(options.new_dataset_name)
    created = False
    media_dir = options.media_dir or default_media_dir(target_name)
    known_ids, known_urls = existing_keys(dataset) if dataset is not None else (set(), set())
    todo = [r for r in found.images if r.image.id not in known_ids and r.image.url not in known_urls]
    skipped = len(found.images) - len(todo)
    yield Progress(0.05, f"Found {len(found.images)}, {skipped} already in {target_name!r}")

    by_id = {r.image.id: r for r in todo}
    target_prints = TargetFingerprints(CopyIndex(options.copy_threshold))
    screening = Screening()
    fetcher = Fetcher(options.policy.fetch_policy(), pool_size=max(options.policy.max_workers, 1))
    try:
        if options.screen_copies and todo:
            target_prints = yield from iter_target_fingerprints(
                dataset, options.copy_threshold, span=(0.05, 0.15)
            )
            yield Progress(0.15, f"Screening {len(todo)} new image(s) for copies")
            thumbnails = thumbnail_fingerprints(
                [r.image for r in todo], fetcher, FingerprintCache(), max(options.policy.max_workers, 1)
            )
            screening = screen_candidates(by_id, thumbnails.get, CopyScreen(target_prints.index))
        sample_ids, outcomes, created = yield from _download_and_add(
            dataset, target_name, by_id, screening, media_dir, options, fetcher, now, tag, params.labels
        )
    finally:
        fetcher.close()
    failed = tuple(FailedDownload(o.job.key, o.job.url, o.error or "unknown") for o in outcomes if not o.ok)
    result = ImportSimilarResult(
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
        skipped_copies=len(screening.copies),
        copies=screening.resolved,
        screened=options.screen_copies,
        fingerprints_computed=target_prints.computed,
        unreadable_samples=target_prints.unreadable,
    )
    result = replace(result, run_key=record_run(result, params, options, regions))
    yield Progress(1.0, result.summary())
    yield result


def _download_and_add(
    dataset: fo.Dataset | None,
    target_name: str,
    by_id: dict[str, RankedImage],
    screening: Screening,
    media_dir: str,
    options: ImportOptions,
    fetcher: Fetcher,
    now: datetime,
    tag: str,
    labels: bool,
) -> Generator[Progress, None, tuple[list[str], list[DownloadOutcome], bool]]:
    """Download the accepted images, screen those that had no thumbnail fingerprint, add the samples.

    All or nothing: on a failure or a cancelled run, the run's samples and files are removed
    (and a dataset it created is deleted). Returns (new sample ids, outcomes, created).
    """
    jobs = [DownloadJob(key=i, url=by_id[i].image.url) for i in by_id if i not in screening.copies]
    spec = SampleSpec(
        label_field=options.label_field,
        keep=ClassFilter(options.classes, options.min_confidence),
        labels=labels,
        tag=tag,
        query_time=now.astimezone(timezone.utc).replace(tzinfo=None),
    )
    outcomes: dict[str, DownloadOutcome] = {}
    try:
        with closing(iter_downloads(jobs, media_dir, options.policy, fetcher)) as downloads:
            for done, outcome in enumerate(downloads, start=1):
                outcomes[outcome.job.key] = outcome
                yield Progress(0.2 + 0.7 * done / len(jobs), f"Downloaded {done}/{len(jobs)}")
        _, sample_ids, created = add_downloaded(
            dataset, target_name, by_id, [outcomes[j.key] for j in jobs], spec, screening
        )
    except BaseException:
        # A failure, or a cancelled run (GeneratorExit): take back everything this run wrote.
        roll_back(dataset, tag, outcomes.values())
        raise
    return sample_ids, [outcomes[j.key] for j in jobs], created


def add_downloaded(
    dataset: fo.Dataset | None,
    target_name: str,
    by_id: Mapping[str, RankedImage],
    outcomes: Sequence[DownloadOutcome],
    spec: SampleSpec,
    screening: Screening,
) -> tuple[fo.Dataset | None, list[str], bool]:
    """Add one batch's downloads (in the batch's order) as samples, and settle its screening.

    Downloads screened only now (no thumbnail fingerprint) that turn out to be copies are dropped,
    the target is made if it does not exist yet, and the accepted candidates become target samples
    in ``screening``. Returns (target, new sample ids, whether the target was made here). A target
    made here is deleted again if adding fails; the caller rolls back the batch's files and samples.
    """
    kept = screening.screen_downloads(list(outcomes))
    samples = build_samples(by_id, kept, spec, screening.prints)
    sample_ids: list[str] = []
    created = False
    try:
        if samples:
            if dataset is None:
                dataset, created = create_target(target_name), True
            sample_ids = list(dataset.add_samples(samples, progress=False))
        added = [o.job.key for o in kept if o.ok and o.path is not None]
        screening.added(dict(zip(added, sample_ids, strict=True)))
    except BaseException:
        if created and fo.dataset_exists(target_name):
            fo.delete_dataset(target_name)
        raise
    return dataset, sample_ids, created


def screen_candidates(
    by_id: Mapping[str, RankedImage], thumbnail_print: Callable[[str], Fingerprint | None], screen: CopyScreen
) -> Screening:
    """Screen candidates in order (best first): each one's thumbnail fingerprint against the target and
    the ones accepted before it."""
    screening = Screening(screen)
    for image_id in by_id:
        screening.check(image_id, thumbnail_print(image_id))
    return screening


def build_samples(
    by_id: Mapping[str, RankedImage],
    outcomes: Iterable[DownloadOutcome],
    spec: SampleSpec,
    prints: Mapping[str, Fingerprint] | None = None,
) -> list[fo.Sample]:
    """New samples for the successful downloads (keyed by API image id), in the outcomes' order,
    with the fingerprint each was screened with (``prints``)."""
    prints = prints or {}
    return [
        build_sample(
            by_id[o.job.key],
            o.path,
            o.width or 0,
            o.height or 0,
            spec,
            size_bytes=o.size_bytes,
            mime_type=o.mime_type,
            fingerprint=prints[o.job.key].to_hex() if o.job.key in prints else None,
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
