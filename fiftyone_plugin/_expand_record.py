"""The record that makes an expansion resumable: a FiftyOne run on the expanded dataset.

The run's key is derived from what defines the expansion (dataset, view stages, results per
sample, labels and their filter, target dataset, media folder, copy screening and its
threshold), so running again with the same
parameters finds it; the request cap, batch size and concurrency are not part of it, so a
capped run continues with a higher cap. Its config holds those parameters and the run's tag;
its results hold which query samples are done and the counts, saved after every batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import fiftyone as fo
import fiftyone.core.collections as foc
import fiftyone.core.view as fov

from ._params import ExpandParams, ImportOptions

MAX_KEPT_ERRORS = 50
"""Failure messages kept in the record and the result (the counts are complete)."""


def view_stages(collection: foc.SampleCollection) -> list[Any]:
    """The view's stages without their random ids (a dataset has none)."""
    if isinstance(collection, fov.DatasetView):
        return list(collection._serialize(include_uuids=False))
    return []


def expand_identity(
    collection: foc.SampleCollection,
    params: ExpandParams,
    options: ImportOptions,
    target_name: str,
    media_dir: str,
) -> dict[str, Any]:
    """What makes two expansions the same run (JSON-serialisable, stored in the run's config)."""
    return {
        "dataset": collection._dataset.name,
        "view": json.dumps(view_stages(collection), sort_keys=True, default=str),
        "per_sample": params.per_sample,
        "labels": params.labels,
        "label_field": options.label_field,
        "classes": sorted(options.classes) if options.classes else None,
        "min_confidence": options.min_confidence,
        "target": target_name,
        "media_dir": media_dir,
        "screen_copies": options.screen_copies,
        "copy_threshold": options.copy_threshold if options.screen_copies else None,
    }


def expand_run_key(identity: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return f"simages_expand_{digest}"


@dataclass
class ExpandRecord:
    """Progress of one expansion, summed over its runs (mutable: updated after every batch)."""

    tag: str
    done: set[str] = field(default_factory=set)
    """Query sample ids whose search succeeded and whose new images are in the target."""
    requests: int = 0
    found: int = 0
    imported: int = 0
    skipped_duplicates: int = 0
    skipped_copies: int = 0
    copies: dict[str, str] = field(default_factory=dict)
    """Candidate API image id -> the id of the sample it is a copy of."""
    failed_downloads: int = 0
    failed_queries: int = 0
    errors: list[str] = field(default_factory=list)

    def note_error(self, message: str) -> None:
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(message)

    def to_results(self) -> dict[str, Any]:
        out = asdict(self)
        out["done"] = sorted(self.done)
        return out

    @classmethod
    def from_results(cls, data: dict[str, Any]) -> ExpandRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["done"] = set(known.get("done") or ())
        known["errors"] = list(known.get("errors") or ())
        known["copies"] = dict(known.get("copies") or {})
        return cls(**known)


def load_record(dataset: fo.Dataset, key: str) -> ExpandRecord | None:
    """The record of an earlier run with this key, or ``None``."""
    if not dataset.has_run(key):
        return None
    results = dataset.load_run_results(key, cache=False, load_view=False)
    if results is None:
        return None
    return ExpandRecord.from_results(results.serialize())


def start_record(dataset: fo.Dataset, key: str, identity: dict[str, Any], record: ExpandRecord) -> None:
    """Register the run (config: what was asked and the tag) with empty progress."""
    config = dataset.init_run(**identity, tag=record.tag, operation="expand")
    dataset.register_run(key, config, overwrite=True)
    save_record(dataset, key, record)


def save_record(dataset: fo.Dataset, key: str, record: ExpandRecord) -> None:
    dataset.save_run_results(
        key, dataset.init_run_results(key, **record.to_results()), overwrite=True, cache=False
    )
