"""What a search or an import hands back: the typed results the operators and Python callers read.

Plain frozen dataclasses, no FiftyOne and no network, so every module can share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simages_core import SimilarImage, redact_url


@dataclass(frozen=True)
class QueryRegion:
    """A selected detection searched with (its box cropped from its sample's image), for provenance."""

    sample_id: str
    field: str
    """The label field the detection is in (``ground_truth``, ``detections``...)."""
    label_id: str
    label: str | None
    """The detection's class (``"cat"``), if it has one."""
    bounding_box: tuple[float, float, float, float]
    """FiftyOne's relative ``[x, y, width, height]`` on the upright image, as stored on the detection."""

    def describe(self) -> str:
        """``"detection 'cat' (<label id>, field ground_truth) of sample <id>"``, for galleries and errors."""
        name = f" {self.label!r}" if self.label else ""
        return f"detection{name} ({self.label_id}, field {self.field}) of sample {self.sample_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "field": self.field,
            "label_id": self.label_id,
            "label": self.label,
            "bounding_box": list(self.bounding_box),
        }


@dataclass(frozen=True)
class QueryLabel:
    """What a query was, as stored in ``simages_query``: ``sample:<id>``, ``url:<url>``, ``text:<t>``,
    ``label:<label id>`` (a selected detection, whose ``region`` says where it is)."""

    kind: str
    value: str
    region: QueryRegion | None = None

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
    copy_of: str | None = None
    """The id of a sample of the dataset this image is a copy of (find results), else ``None``."""

    @property
    def score(self) -> float:
        return self.image.score

    @property
    def copies(self) -> tuple[str, ...]:
        """API ids of the results collapsed into this one as its copies."""
        return self.image.copies


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
    copies_collapsed: bool = False
    """Near-duplicate results were collapsed: each image's ``copies`` names the ones folded into it."""
    screened: bool = False
    """Results were compared with the dataset's samples: ``copy_of`` is set on the copies."""
    unscreened_samples: int = 0
    """Samples of the dataset without a fingerprint (unreadable, or beyond what a search computes)."""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def copies_of_samples(self) -> dict[str, str]:
        """API image id -> the id of the dataset sample it is a copy of."""
        return {r.image.id: r.copy_of for r in self.images if r.copy_of is not None}


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
    skipped_copies: int = 0
    """Candidates skipped as copies of samples already in the dataset (or of one this run imported)."""
    copies: dict[str, str] = field(default_factory=dict)
    """Candidate API image id -> the id of the sample it is a copy of."""
    screened: bool = True
    fingerprints_computed: int = 0
    """Target samples this run fingerprinted (those lacking ``simages_fingerprint``)."""
    unreadable_samples: int = 0
    """Target samples whose file could not be read: not fingerprinted, not screened against."""
    run_key: str | None = None
    """The FiftyOne run recording this import on the target (``None`` if nothing was created)."""

    @property
    def failed_downloads(self) -> int:
        return len(self.failed)

    def summary(self) -> str:
        return summary_line(
            self.imported, self.skipped_duplicates, self.skipped_copies, self.failed_downloads
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_name": self.dataset_name,
            "tag": self.tag,
            "media_dir": self.media_dir,
            "found": self.found,
            "imported": self.imported,
            "skipped_duplicates": self.skipped_duplicates,
            "skipped_copies": self.skipped_copies,
            "copies": dict(self.copies),
            "screened": self.screened,
            "fingerprints_computed": self.fingerprints_computed,
            "unreadable_samples": self.unreadable_samples,
            "failed_downloads": self.failed_downloads,
            "failures": [f"{f.simages_id} ({redact_url(f.url)}): {f.reason}" for f in self.failed],
            "query_errors": list(self.query_errors),
            "new_dataset": self.new_dataset,
            "summary": self.summary(),
        }


def summary_line(imported: int, duplicates: int, copies: int, failed: int) -> str:
    """``Imported 5; skipped: 7 copies of samples already in the dataset, 2 already imported``."""
    skipped = []
    if copies:
        skipped.append(f"{copies} cop{'y' if copies == 1 else 'ies'} of samples already in the dataset")
    if duplicates:
        skipped.append(f"{duplicates} already imported")
    line = f"Imported {imported}"
    if skipped:
        line += "; skipped: " + ", ".join(skipped)
    if failed:
        line += f"; {failed} download(s) failed"
    return line


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
    skipped_copies: int = 0
    """Candidates skipped as copies of samples already in the target (or of one this run imported)."""
    copies: dict[str, str] = field(default_factory=dict)
    """Candidate API image id -> the id of the sample it is a copy of (whole run)."""
    screened: bool = True
    fingerprints_computed: int = 0
    """Target samples this call fingerprinted (those lacking ``simages_fingerprint``)."""
    unreadable_samples: int = 0

    @property
    def complete(self) -> bool:
        return self.queries_done >= self.queries_total and self.stopped is None

    def summary(self) -> str:
        """One line saying how far the run got, for the App and logs."""
        head = f"{self.queries_done}/{self.queries_total} samples searched, {self.imported} imported"
        if self.skipped_copies:
            head += f"; skipped: {self.skipped_copies} cop{'y' if self.skipped_copies == 1 else 'ies'} of samples already in the dataset"
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
            "skipped_copies": self.skipped_copies,
            "copies": dict(self.copies),
            "screened": self.screened,
            "fingerprints_computed": self.fingerprints_computed,
            "unreadable_samples": self.unreadable_samples,
            "failed_downloads": self.failed_downloads,
            "failed_queries": self.failed_queries,
            "errors": list(self.errors),
            "stopped": self.stopped,
            "complete": self.complete,
            "resumed": self.resumed,
            "summary": self.summary(),
        }
