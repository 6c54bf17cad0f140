"""What a search or an import hands back: the typed results the operators and Python callers read.

Plain frozen dataclasses, no FiftyOne and no network, so every module can share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simages_core import SimilarImage, redact_url


@dataclass(frozen=True)
class QueryLabel:
    """What a query was, as stored in ``simages_query``: ``sample:<id>``, ``url:<url>``, ``text:<t>``."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class RankedImage:
    """One image of the merged answer: its best score over all queries, and the query that gave it."""

    image: SimilarImage
    rank: int
    """1-based, in descending score order."""
    query: QueryLabel
    hits: int = 1
    """How many of the queries returned this image."""

    @property
    def score(self) -> float:
        return self.image.score


@dataclass(frozen=True)
class Progress:
    """A step of a running import, for the App's progress bar or a Python callback."""

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
            "failures": [f"{f.simages_id} ({redact_url(f.url)}): {f.reason}" for f in self.failed],
            "query_errors": list(self.query_errors),
            "new_dataset": self.new_dataset,
        }


@dataclass(frozen=True)
class ExpandResult:
    """How far an expansion got: counts over the whole run (resumed parts included) and why it stopped.

    ``stopped`` is ``None`` for a run that worked through every query sample, ``"cap"`` when the
    request cap was reached, or the reason a run had to stop (an invalid key, an exhausted quota).
    Running again with the same parameters continues from ``queries_done``.
    """

    dataset_name: str
    """The dataset the new samples went to."""
    tag: str
    run_key: str
    """The FiftyOne run on the expanded dataset recording the progress."""
    media_dir: str
    queries_total: int
    queries_done: int
    requests_this_run: int
    found: int
    imported: int
    skipped_duplicates: int
    failed_downloads: int = 0
    failed_queries: int = 0
    errors: tuple[str, ...] = ()
    """A bounded sample of what failed (queries and downloads), as ``"<what>: <reason>"``."""
    stopped: str | None = None
    resumed: bool = False

    @property
    def complete(self) -> bool:
        return self.queries_done >= self.queries_total and self.stopped is None

    def summary(self) -> str:
        """One line saying how far the run got, for the App and logs."""
        head = f"{self.queries_done}/{self.queries_total} samples searched, {self.imported} imported"
        if self.stopped == "cap":
            return f"{head}; stopped at the request cap after {self.requests_this_run} request(s): run again to continue"
        if self.stopped:
            return f"{head}; stopped: {self.stopped}"
        if self.failed_queries:
            return f"{head}; {self.failed_queries} quer(ies) failed: run again to retry them"
        return head

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_name": self.dataset_name,
            "tag": self.tag,
            "run_key": self.run_key,
            "media_dir": self.media_dir,
            "queries_total": self.queries_total,
            "queries_done": self.queries_done,
            "requests_this_run": self.requests_this_run,
            "found": self.found,
            "imported": self.imported,
            "skipped_duplicates": self.skipped_duplicates,
            "failed_downloads": self.failed_downloads,
            "failed_queries": self.failed_queries,
            "errors": list(self.errors),
            "stopped": self.stopped,
            "complete": self.complete,
            "resumed": self.resumed,
            "summary": self.summary(),
        }
