"""What an ``expand`` run is asked to do (``Options``) and what it did (``ExpandReport``): its boundary types."""

from __future__ import annotations

from dataclasses import dataclass, field

from .expand_chunks import ChunkFailure
from .expand_screen import SkippedCopy


@dataclass(frozen=True)
class ExpandReport:
    project_id: int
    source_tasks: int
    added: int
    skipped_existing: int
    new_task_ids: tuple[int, ...] = ()
    failed_tasks: dict[int, str] = field(default_factory=dict)
    """Source task id -> why its search failed (those tasks added nothing; run again to retry them)."""
    landed: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Source task id -> the ids of the new tasks made from it, as Label Studio reported them."""
    requests: int = 0
    """Searches sent to the API by this run."""
    resumed: int = 0
    """Source tasks an earlier run expanded already: not searched again (their tasks count as skipped)."""
    remaining: int = 0
    """Source tasks this run did not finish (cap reached, import failed): run again to continue."""
    chunks: int = 0
    """Imports Label Studio confirmed."""
    stopped: str | None = None
    """Why the run ended before every source task was searched, or ``None``."""
    failed_chunk: ChunkFailure | None = None
    """The import Label Studio refused; earlier chunks stay in the project."""
    seconds: float = 0.0
    """Wall time of the run, from listing the project's tasks to the last import."""
    api_refused: bool = False
    """The run stopped because the API refused every search (daily limit, key): ``stopped`` says why."""
    copy_threshold: int | None = None
    """Bits within which a similar image counts as a copy; ``None``: copies were not screened."""
    skipped_copies: int = 0
    """Similar images not imported because each is a copy of an image the project already has."""
    copies: tuple[SkippedCopy, ...] = ()
    """Each skipped copy with the task whose image it copies."""
    task_images_fingerprinted: int = 0
    """Task images this run downloaded to fingerprint (each once: the next run finds it in the store)."""
    task_images_from_store: int = 0
    """Task images whose fingerprint the local store already had: nothing downloaded."""
    task_images_unreadable: dict[int, str] = field(default_factory=dict)
    """Task id -> why its image could not be fetched or read: similar images are not screened against it."""
    unscreened_images: int = 0
    """Similar images imported unscreened: their thumbnail could not be fetched or read."""
    searched: int = 0
    """Source tasks this run searched (whatever each added, failures included)."""
    to_search: int = 0
    """Source tasks this run set out to search (not expanded nor searched by an earlier run)."""
    searched_before: int = 0
    """Source tasks an earlier run searched with the same parameters (not searched again)."""
    api_unreachable: bool = False
    """The run stopped early: the API could not be reached for several searches in a row."""


@dataclass(frozen=True)
class Options:
    """How a run searches and imports (checked by ``expand_project``)."""

    per_task: int
    min_score: float
    max_requests: int | None
    chunk_size: int
    copy_threshold: int | None = None
    """``None``: copies are not screened (only API ids and URLs are deduplicated)."""
