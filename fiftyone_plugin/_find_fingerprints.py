"""The fingerprints a search compares its results with: the dataset's, read (or computed) once while it is unchanged.

A search writes nothing to the dataset, so samples without a stored fingerprint are hashed in
memory, up to a bound. The Similar images panel searches on every sample change: reading and
hashing the dataset each time cost ~22 ms of each answer on a 20-sample dataset
(``bench/bench_fo_panel.py``), so the index is kept per dataset and threshold until the dataset's
sample count or its samples' latest modification changes (one aggregation, ~1 ms).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import fiftyone as fo

from simages_core.identity import CopyIndex, Fingerprint, FingerprintError, file_fingerprint

FINGERPRINT_FIELD = "simages_fingerprint"
FINGERPRINT_WORKERS = 8
FIND_FINGERPRINT_LIMIT = 200
"""Samples a search fingerprints in memory when they have no stored fingerprint (a search writes
nothing; an import or expansion stores them): enough for a small dataset, a bounded cost for a large one."""
_DATASETS_KEPT = 8

_Signature = tuple[int, datetime | None, bool]
_cache: OrderedDict[tuple[str, int, int], tuple[_Signature, CopyIndex, int]] = OrderedDict()
_cache_lock = threading.Lock()


def dataset_fingerprints(
    dataset: fo.Dataset, threshold: int, compute_limit: int = FIND_FINGERPRINT_LIMIT
) -> tuple[CopyIndex, int]:
    """The dataset's fingerprints without writing anything: stored ones, and up to ``compute_limit``
    missing ones computed in memory. Returns the index and how many samples have none.

    The same index is returned while the dataset is unchanged; callers only read it.
    """
    key = (str(dataset._doc.id), threshold, compute_limit)
    signature = _signature(dataset)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] == signature:
            _cache.move_to_end(key)
            return cached[1], cached[2]
    index, unscreened = _read(dataset, threshold, compute_limit)
    with _cache_lock:
        _cache[key] = (signature, index, unscreened)
        _cache.move_to_end(key)
        while len(_cache) > _DATASETS_KEPT:
            _cache.popitem(last=False)
    return index, unscreened


def _signature(dataset: fo.Dataset) -> _Signature:
    count = len(dataset)
    latest = dataset.max("last_modified_at") if count else None
    return count, latest, dataset.has_sample_field(FINGERPRINT_FIELD)


def _read(dataset: fo.Dataset, threshold: int, compute_limit: int) -> tuple[CopyIndex, int]:
    index = CopyIndex(threshold)
    if not len(dataset):
        return index, 0
    missing = add_stored(dataset, index)
    todo = missing[:compute_limit]
    if todo:
        with ThreadPoolExecutor(min(FINGERPRINT_WORKERS, len(todo)), thread_name_prefix="simages-fp") as pool:
            for (sample_id, _), fp in zip(
                todo, pool.map(file_fingerprint, [p for _, p in todo]), strict=True
            ):
                if fp is not None:
                    index.add(sample_id, fp)
    return index, len(dataset) - len(index)


def add_stored(dataset: fo.Dataset, index: CopyIndex) -> list[tuple[str, str]]:
    """Add the samples' stored fingerprints to ``index``; returns (sample id, filepath) of those without one."""
    if dataset.has_sample_field(FINGERPRINT_FIELD):
        ids, paths, stored = dataset.values(["id", "filepath", FINGERPRINT_FIELD])
    else:
        ids, paths = dataset.values(["id", "filepath"])
        stored = [None] * len(ids)
    missing: list[tuple[str, str]] = []
    for sample_id, path, text in zip(ids, paths, stored, strict=True):
        fp = parse_fingerprint(text)
        if fp is None:
            missing.append((sample_id, path))
        else:
            index.add(sample_id, fp)
    return missing


def parse_fingerprint(text: object) -> Fingerprint | None:
    """A stored fingerprint, or ``None`` when the field is empty or not of the core's hex form."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return Fingerprint.from_hex(text)
    except FingerprintError:
        return None  # not ours (or an older form): computed again
