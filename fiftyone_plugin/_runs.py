"""The one code path behind both operators and both Python entry points.

``find_similar`` searches and merges; ``iter_import`` searches, skips what the target dataset
already holds, downloads the rest and adds them as samples, yielding ``Progress`` on the way
and an ``ImportSimilarResult`` last. The operators translate App context into these calls;
``find_similar(...)``/``import_similar(...)`` are the same calls for Python users.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fiftyone as fo
import fiftyone.core.collections as foc

from simages_core import HOW_TO_SET_KEY, Query, SimilarImagesClient, SimilarImagesError, resolve_api_key

from ._downloads import DownloadJob, DownloadOutcome, DownloadPolicy, iter_downloads
from ._results import (
    ClassFilter,
    ParamError,
    QueryLabel,
    RankedImage,
    SearchParams,
    check_classes,
    check_field_name,
    check_min_confidence,
    check_num_similar,
    check_text,
    check_url,
    decode_upload,
    merge_results,
    run_key,
    run_tag,
)
from ._samples import SampleSpec, build_sample

SECRET_API_KEY = "SIMAGES_API_KEY"
SECRET_API_URL = "SIMAGES_API_URL"
MAX_QUERY_SAMPLES = 100
"""Selected samples per run: each is one API request (and one billed unit past the free tier)."""
HOW_TO_SET_PLUGIN_KEY = (
    f"Set the plugin secret {SECRET_API_KEY} (e.g. `export {SECRET_API_KEY}=...` before "
    f"`fiftyone app launch`), or {HOW_TO_SET_KEY}"
)


@dataclass(frozen=True)
class Progress:
    fraction: float
    label: str


@dataclass(frozen=True)
class FindSimilarResult:
    """Merged, ranked results of one search; the dataset is not touched."""

    images: tuple[RankedImage, ...]
    queries: tuple[str, ...]
    errors: tuple[str, ...] = ()
    """Queries that failed while others succeeded, as ``"<query>: <reason>"``."""
    labels: bool = False

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class FailedDownload:
    simages_id: str
    url: str
    reason: str


@dataclass(frozen=True)
class ImportSimilarResult:
    """What an import did: counts, the run's tag, where files went, and why any failed."""

    dataset_name: str
    tag: str
    media_dir: str
    found: int
    imported: int
    skipped_duplicates: int
    failed: tuple[FailedDownload, ...] = ()
    sample_ids: tuple[str, ...] = ()
    query_errors: tuple[str, ...] = ()
    new_dataset: bool = False

    @property
    def failed_downloads(self) -> int:
        return len(self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_name": self.dataset_name,
            "tag": self.tag,
            "media_dir": self.media_dir,
            "found": self.found,
            "imported": self.imported,
            "skipped_duplicates": self.skipped_duplicates,
            "failed_downloads": self.failed_downloads,
            "failures": [f"{f.simages_id} ({f.url}): {f.reason}" for f in self.failed],
            "query_errors": list(self.query_errors),
            "new_dataset": self.new_dataset,
        }


@dataclass(frozen=True)
class ImportOptions:
    media_dir: str | None = None
    new_dataset_name: str | None = None
    label_field: str = "detections"
    classes: frozenset[str] | None = None
    min_confidence: float = 0.0
    policy: DownloadPolicy = field(default_factory=DownloadPolicy)


# --- parameters ---------------------------------------------------------------------------------


def build_params(
    *,
    source: str | None = None,
    text: str | None = None,
    url: str | None = None,
    image: bytes | str | os.PathLike[str] | None = None,
    image_name: str | None = None,
    sample_ids: Sequence[str] | str | None = None,
    num_similar: object = 10,
    labels: bool = False,
) -> SearchParams:
    """Validate one search; the source is inferred when not given (exactly one input must be set)."""
    if isinstance(sample_ids, str):
        sample_ids = [sample_ids]
    given = [
        name for name, v in (("text", text), ("url", url), ("upload", image), ("selected", sample_ids)) if v
    ]
    if source is None:
        if len(given) != 1:
            raise ParamError("source", "give exactly one of text=, url=, image= or sample_ids=")
        source = given[0]
    n = check_num_similar(num_similar)
    if source == "text":
        return SearchParams(source, n, bool(labels), text=check_text(text))
    if source == "url":
        return SearchParams(source, n, bool(labels), url=check_url(url))
    if source == "upload":
        if isinstance(image, (str, os.PathLike)) and _is_file(image):
            data, name = Path(image).read_bytes(), image_name or Path(image).name
        else:
            data, name = decode_upload(image), image_name or "upload"
        return SearchParams(source, n, bool(labels), image=data, image_name=name)
    if source in ("selected", "current_sample"):
        ids = tuple(str(i) for i in sample_ids or ())
        if not ids:
            what = "select one or more samples" if source == "selected" else "open a sample in the modal"
            raise ParamError(source, f"no sample to search with: {what}")
        if len(ids) > MAX_QUERY_SAMPLES:
            raise ParamError(source, f"select at most {MAX_QUERY_SAMPLES} samples (got {len(ids)})")
        return SearchParams(source, n, bool(labels), sample_ids=ids)
    raise ParamError("source", f"unknown query source {source!r}")


def _is_file(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` names a file (a long base64 string is not a path, and may not even stat)."""
    if isinstance(value, str) and (len(value) > 4096 or value.startswith("data:")):
        return False
    try:
        return Path(value).is_file()
    except (OSError, ValueError):
        return False


def build_import_options(
    *,
    media_dir: str | None = None,
    new_dataset_name: str | None = None,
    label_field: str = "detections",
    classes: object = None,
    min_confidence: object = 0.0,
    policy: DownloadPolicy | None = None,
) -> ImportOptions:
    name = new_dataset_name.strip() if isinstance(new_dataset_name, str) else None
    return ImportOptions(
        media_dir=os.path.abspath(os.path.expanduser(media_dir.strip()))
        if media_dir and media_dir.strip()
        else None,
        new_dataset_name=name or None,
        label_field=check_field_name(label_field),
        classes=check_classes(classes),
        min_confidence=check_min_confidence(min_confidence),
        policy=policy or DownloadPolicy(),
    )


def make_client(api_key: str | None = None, api_url: str | None = None) -> SimilarImagesClient:
    """A client for the given key/URL, else the core's resolution; no key is a ``ParamError``."""
    key = resolve_api_key(api_key)
    if key is None:
        raise ParamError("api_key", f"No Similar Images API key. {HOW_TO_SET_PLUGIN_KEY}")
    return SimilarImagesClient(api_key=key, base_url=api_url or None)


def plan_queries(collection: foc.SampleCollection, params: SearchParams) -> list[tuple[QueryLabel, Query]]:
    """One core ``Query`` per thing to search with, labelled for provenance."""
    common = Query(num_similar=params.num_similar, labels=params.labels)
    if params.source == "text":
        return [(QueryLabel("text", params.text or ""), replace(common, text=params.text))]
    if params.source == "url":
        return [(QueryLabel("url", params.url or ""), replace(common, url=params.url))]
    if params.source == "upload":
        return [(QueryLabel("upload", params.image_name or "upload"), replace(common, image=params.image))]
    dataset = collection._dataset
    ids, paths = dataset.select(list(params.sample_ids)).values(["id", "filepath"])
    by_id = dict(zip(ids, paths, strict=True))
    missing = [i for i in params.sample_ids if i not in by_id]
    if missing:
        raise ParamError(params.source, f"sample(s) not in dataset {dataset.name!r}: {', '.join(missing)}")
    planned = []
    for sample_id in params.sample_ids:
        path = by_id[sample_id]
        if not os.path.isfile(path):
            raise ParamError(params.source, f"sample {sample_id} has no local image file ({path})")
        planned.append((QueryLabel("sample", sample_id), replace(common, image=path)))
    return planned


# --- find ---------------------------------------------------------------------------------------


def run_search(client: SimilarImagesClient, planned: Sequence[tuple[QueryLabel, Query]]) -> FindSimilarResult:
    """Run every query concurrently and merge; raises the first error only if all of them failed."""
    items = client.search_many([q for _, q in planned])
    answers, errors = [], []
    first_error: SimilarImagesError | None = None
    for (label, _), item in zip(planned, items, strict=True):
        if item.ok and item.result is not None:
            answers.append((label, item.result))
        else:
            first_error = first_error or item.error
            errors.append(f"{label}: {item.error}")
    if not answers and first_error is not None:
        raise first_error
    return FindSimilarResult(
        images=tuple(merge_results(answers)),
        queries=tuple(str(label) for label, _ in planned),
        errors=tuple(errors),
        labels=any(q.labels for _, q in planned),
    )


def find_similar_with(
    client: SimilarImagesClient, collection: foc.SampleCollection, params: SearchParams
) -> FindSimilarResult:
    return run_search(client, plan_queries(collection, params))


# --- import -------------------------------------------------------------------------------------


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


def existing_keys(dataset: fo.Dataset) -> tuple[set[str], set[str]]:
    """(API image ids, source URLs) of samples the dataset already holds from earlier imports."""
    ids: set[str] = set()
    urls: set[str] = set()
    if dataset.has_sample_field("simages_id"):
        ids = {v for v in dataset.distinct("simages_id") if v}
    if dataset.has_sample_field("simages_source_url"):
        urls = {v for v in dataset.distinct("simages_source_url") if v}
    return ids, urls


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
        ok = [o for o in (outcomes[j.key] for j in jobs) if o.ok and o.path is not None]
        if ok:
            samples = [
                build_sample(
                    by_id[o.job.key],
                    o.path,
                    o.width or 0,
                    o.height or 0,
                    spec,
                    size_bytes=o.size_bytes,
                    mime_type=o.mime_type,
                )
                for o in ok
                if o.path is not None
            ]
            if dataset is None:
                dataset, created = create_target(target_name), True
            sample_ids = list(dataset.add_samples(samples, progress=False))
    except BaseException:
        # No file without its sample: a failure or a cancelled run (GeneratorExit) takes back
        # every file it put on disk; add_samples either added all samples or raised.
        if not sample_ids:
            for o in outcomes.values():
                if o.ok and o.created and o.path is not None:
                    o.path.unlink(missing_ok=True)
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


def record_run(result: ImportSimilarResult, params: SearchParams, options: ImportOptions) -> str | None:
    """Record the import as a FiftyOne run on the target dataset (provenance; readable later).

    The config holds what was asked (never the API key nor uploaded bytes), the results
    hold the counts and failures; ``dataset.load_run_results(key)`` reads them back.
    """
    if not fo.dataset_exists(result.dataset_name):
        return None  # a new dataset that received nothing was never created
    dataset = fo.load_dataset(result.dataset_name)
    key = run_key(result.tag)
    config = dataset.init_run(
        source=params.source,
        text=params.text,
        url=params.url,
        image_name=params.image_name,
        sample_ids=list(params.sample_ids),
        num_similar=params.num_similar,
        labels=params.labels,
        label_field=options.label_field,
        classes=sorted(options.classes) if options.classes else None,
        min_confidence=options.min_confidence,
        media_dir=result.media_dir,
        tag=result.tag,
    )
    dataset.register_run(key, config)
    dataset.save_run_results(key, dataset.init_run_results(key, **result.to_dict()))
    return key


def drain(
    events: Iterator[Progress | ImportSimilarResult], progress: Callable[[Progress], Any] | None = None
) -> ImportSimilarResult:
    result: ImportSimilarResult | None = None
    for event in events:
        if isinstance(event, ImportSimilarResult):
            result = event
        elif progress is not None:
            progress(event)
    assert result is not None
    return result


# --- Python entry points ------------------------------------------------------------------------


def find_similar(
    dataset_or_view: foc.SampleCollection,
    *,
    text: str | None = None,
    url: str | None = None,
    image: bytes | str | os.PathLike[str] | None = None,
    sample_ids: Sequence[str] | str | None = None,
    num_similar: int = 10,
    labels: bool = False,
    api_key: str | None = None,
    api_url: str | None = None,
    client: SimilarImagesClient | None = None,
) -> FindSimilarResult:
    """Find images similar to a text, an image URL, an image (path or bytes) or samples of the dataset.

    Exactly one of ``text``, ``url``, ``image``, ``sample_ids`` is given. Several samples are
    searched concurrently and their results merged by API image id. The dataset is not changed.
    """
    params = build_params(
        text=text, url=url, image=image, sample_ids=sample_ids, num_similar=num_similar, labels=labels
    )
    own = client is None
    client = client or make_client(api_key, api_url)
    try:
        return find_similar_with(client, dataset_or_view, params)
    finally:
        if own:
            client.close()


def import_similar(
    dataset_or_view: foc.SampleCollection,
    *,
    text: str | None = None,
    url: str | None = None,
    image: bytes | str | os.PathLike[str] | None = None,
    sample_ids: Sequence[str] | str | None = None,
    num_similar: int = 10,
    labels: bool = True,
    media_dir: str | None = None,
    new_dataset_name: str | None = None,
    label_field: str = "detections",
    classes: Sequence[str] | None = None,
    min_confidence: float = 0.0,
    api_key: str | None = None,
    api_url: str | None = None,
    client: SimilarImagesClient | None = None,
    policy: DownloadPolicy | None = None,
    progress: Callable[[Progress], Any] | None = None,
) -> ImportSimilarResult:
    """Find similar images and add them as new samples (into this dataset or ``new_dataset_name``).

    Files go to ``media_dir`` (default: a ``simages`` folder beside the dataset's media).
    Images already imported (same API id or source URL) are skipped and counted.
    """
    params = build_params(
        text=text, url=url, image=image, sample_ids=sample_ids, num_similar=num_similar, labels=labels
    )
    options = build_import_options(
        media_dir=media_dir,
        new_dataset_name=new_dataset_name,
        label_field=label_field,
        classes=classes,
        min_confidence=min_confidence,
        policy=policy,
    )
    own = client is None
    client = client or make_client(api_key, api_url)
    try:
        return drain(iter_import(client, dataset_or_view, params, options), progress)
    finally:
        if own:
            client.close()
