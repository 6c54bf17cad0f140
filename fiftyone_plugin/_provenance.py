"""Provenance of an import: the run's tag, the FiftyOne run that records it, and what was imported before.

Every imported sample carries the run's tag and ``simages_*`` fields (see ``_samples``); the
dataset keeps a FiftyOne run per import with what was asked and the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import fiftyone as fo

from simages_core import redact_url

from ._outcomes import ImportSimilarResult, QueryRegion
from ._params import ImportOptions, SearchParams


def run_tag(now: datetime) -> str:
    """The tag of one import run, sortable, in UTC to the millisecond: ``simages-20260101T120000.123Z``."""
    utc = now.astimezone(timezone.utc)
    return f"simages-{utc:%Y%m%dT%H%M%S}.{utc.microsecond // 1000:03d}Z"


def run_key(tag: str) -> str:
    """The FiftyOne run key recording an import (run keys are identifiers)."""
    return "".join(c if c.isalnum() else "_" for c in tag)


def existing_keys(dataset: fo.Dataset) -> tuple[set[str], set[str]]:
    """(API image ids, source URLs) of samples the dataset already holds from earlier imports."""
    ids: set[str] = set()
    urls: set[str] = set()
    if dataset.has_sample_field("simages_id"):
        ids = {v for v in dataset.distinct("simages_id") if v}
    if dataset.has_sample_field("simages_source_url"):
        urls = {v for v in dataset.distinct("simages_source_url") if v}
    return ids, urls


def record_run(
    result: ImportSimilarResult,
    params: SearchParams,
    options: ImportOptions,
    regions: Sequence[QueryRegion] = (),
) -> str | None:
    """Record the import as a FiftyOne run on the target dataset (provenance; readable later).

    ``regions`` are the selected detections searched with (sample, field, label id, class,
    relative box), recorded as ``query_regions`` beside ``label_ids``.

    The config holds what was asked (never the API key nor uploaded bytes), the results
    hold the counts, the copies skipped (candidate API id -> the sample it copies) and the
    failures; ``dataset.load_run_results(key)`` reads them back. The operators and the Python
    entry points both get here through ``iter_import``: one code path records every import.
    """
    if not fo.dataset_exists(result.dataset_name):
        return None  # a new dataset that received nothing was never created
    dataset = fo.load_dataset(result.dataset_name)
    key = run_key(result.tag)
    config = dataset.init_run(
        source=params.source,
        text=params.text,
        url=redact_url(params.url) if params.url else None,
        image_name=params.image_name,
        sample_ids=list(params.sample_ids),
        label_ids=list(params.label_ids),
        query_regions=[r.to_dict() for r in regions],
        num_similar=params.num_similar,
        labels=params.labels,
        label_field=options.label_field,
        classes=sorted(options.classes) if options.classes else None,
        min_confidence=options.min_confidence,
        media_dir=result.media_dir,
        screen_copies=options.screen_copies,
        copy_threshold=options.copy_threshold,
        tag=result.tag,
    )
    dataset.register_run(key, config)
    dataset.save_run_results(key, dataset.init_run_results(key, **result.to_dict()))
    return key
