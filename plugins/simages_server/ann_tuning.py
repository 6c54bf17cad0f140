"""Choose the ANN index's ``nprobe`` by measuring recall, not by a formula.

One job: given the rows and a built faiss IVF index over them, sample some indexed rows as
queries, compute their exact top-k with chunked matrix products, and find the smallest
``nprobe`` (doubling, then bisecting) whose recall@k reaches ``TARGET_RECALL``. A fixed
formula (the first version used ``max(32, nlist/40)``) gives recall@10 ~0.98 on clusters
with their own axes but 0.65 on embeddings that share a few dominant directions, as CLIP
image embeddings do (DESIGN.md, "Index at scale"); measured, the recall holds by construction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger("simages_server")

TARGET_RECALL = 0.97
"""recall@10 the tuning must reach on its sample. The promise is ≥ 0.95 on queries it never saw:
400 queries measure recall to about ±0.01, and the smallest nprobe that passes on the sample
sits on its edge, so the target keeps a margin above the promise."""
TUNING_QUERIES = 400
"""Sampled rows used as queries: enough for ±0.01, and at 1M one exact pass costs a few seconds."""
MAX_PROBE_SHARE = 0.5
"""Above this share of the lists an IVF search scans more than half the rows one query at a
time, no faster than exact search's one matrix product: the index then searches all lists."""
K = 10
_EXACT_CHUNK = 32_768
"""Rows per matrix product when computing the exact answers: 400 × 32,768 float32 scores = 50 MiB."""
_TIE = 1e-5
"""A found row scoring within float32 rounding of the k-th exact score counts (duplicates tie)."""


@dataclass(frozen=True)
class Tuning:
    """The measured choice: ``nprobe``, the recall@10 it gave, on how many sampled queries."""

    nprobe: int
    recall: float
    queries: int
    exhaustive: bool = False
    """The target needed more than ``MAX_PROBE_SHARE`` of the lists: every list is searched (exact)."""


def tuning_sample(n: int, *, seed: int = 0, size: int = TUNING_QUERIES) -> np.ndarray:
    """Sorted row positions used as tuning queries (a bench leaves them out of its own queries)."""
    return np.sort(np.random.default_rng(seed).choice(n, min(n, size), replace=False))


def kth_exact_scores(rows: np.ndarray, sample: np.ndarray, k: int = K) -> np.ndarray:
    """Per sampled row, the score of its k-th nearest *other* row (its own row, score 1, ranks first).

    Chunked over ``rows`` so a memory-mapped file is streamed, never loaded whole.
    """
    queries = np.ascontiguousarray(rows[sample], np.float32)
    keep = min(k + 1, len(rows))
    best: np.ndarray = np.full((len(sample), keep), -np.inf, np.float32)
    for start in range(0, len(rows), _EXACT_CHUNK):
        scores = queries @ np.asarray(rows[start : start + _EXACT_CHUNK], np.float32).T
        both = np.concatenate([best, scores], axis=1)
        best = -np.partition(-both, keep - 1, axis=1)[:, :keep]
    return np.sort(best, axis=1)[:, 0]


def measure_recall(index: Any, queries: np.ndarray, sample: np.ndarray, kth: np.ndarray, nprobe: int) -> float:
    """recall@k of ``index`` searched with ``nprobe`` lists: the share of each query's k other
    answers that score at least its k-th exact score (ties with duplicates count as found)."""
    import faiss

    k = min(K, int(index.ntotal) - 1)
    if k <= 0:  # a one-row index: its only row is the query itself
        return 1.0
    params = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    scores, ids = index.search(queries, k + 1, params=params)
    found = (ids >= 0) & (ids != sample[:, None]) & (scores >= kth[:, None] - _TIE)
    return float(np.minimum(found.sum(axis=1), k).sum() / (k * len(sample)))


def tune_nprobe(
    index: Any,
    rows: np.ndarray,
    *,
    target: float = TARGET_RECALL,
    max_probe_share: float = MAX_PROBE_SHARE,
    seed: int = 0,
    sample_size: int = TUNING_QUERIES,
) -> Tuning:
    """The smallest nprobe (to within ~6%) whose recall@10 on sampled rows reaches ``target``.

    Doubling from 1 up to ``max_probe_share`` of the lists, then bisecting between the last
    failing and the first passing value. If even that share falls short, warn and search
    every list (exhaustive: the recall is then exact search's).
    """
    if not 0 < target <= 1:
        raise ValueError(f"target recall must be in (0, 1], not {target}")
    nlist = int(index.nlist)
    sample = tuning_sample(len(rows), seed=seed, size=sample_size)
    kth = kth_exact_scores(rows, sample)
    queries = np.ascontiguousarray(rows[sample], np.float32)

    def recall_at(nprobe: int) -> float:
        return measure_recall(index, queries, sample, kth, nprobe)

    cap = max(1, min(nlist, int(nlist * max_probe_share)))
    low, high, recall = 0, 1, recall_at(1)
    while recall < target and high < cap:
        low, high = high, min(cap, 2 * high)
        recall = recall_at(high)
    if recall < target:
        full = recall_at(nlist)
        logger.warning(
            "ANN index: recall@10 %.3f at nprobe %d of %d lists is below the target %.2f on this data; "
            "searching all %d lists (exact search, no faster than without the ANN index)",
            recall, high, nlist, target, nlist,
        )  # fmt: skip
        return Tuning(nlist, full, len(sample), exhaustive=True)
    while high - low > max(1, high // 16):
        middle = (low + high) // 2
        middle_recall = recall_at(middle)
        if middle_recall >= target:
            high, recall = middle, middle_recall
        else:
            low = middle
    return Tuning(high, recall, len(sample))
