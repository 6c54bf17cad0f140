"""Fingerprints of a project's existing tasks, for ``expand``'s copy screening: each image fetched once.

A task's image is fetched the way the backend resolves task images (Label Studio files through
the SDK, URLs through the guarded fetch), fingerprinted on the context's pool, and kept in a local
store keyed by (Label Studio URL without credentials, project, task, image reference), so a re-run
downloads nothing twice. Tasks ``expand`` made carry their fingerprint in their data and need none.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path

import diskcache

from simages_core import ImageEncodingError
from simages_core.identity import Fingerprint, FingerprintError, fingerprint

from .task_images import TaskImageError, TaskImageResolver

logger = logging.getLogger("simages_label_studio.expand")

FINGERPRINT_KEY = "simages_fingerprint"
"""Task data key where ``expand`` records the fingerprint of each task it makes."""
STORE_FOLDER = "label-studio-task-fingerprints"
"""The store's folder under ``SIMAGES_HOME``."""
STORE_SIZE_LIMIT = 128 * 2**20
"""~500,000 entries; beyond that the oldest stored are evicted (and fetched again if still needed)."""


@dataclass(frozen=True)
class TaskImageRef:
    """A task whose image must be fingerprinted."""

    task_id: int
    ref: str
    """The image reference in the task data: part of the store's key (another image, another key)."""
    fetch_ref: str
    """What is fetched: the task's image, or the thumbnail ``expand`` recorded for a task it made."""


class TaskFingerprintStore:
    """Fingerprints by (Label Studio, project, task, image reference), on disk (diskcache: SQLite).

    The store is only a cache: a store that cannot be opened, read or written (a full disk, a
    locked database) costs downloads, never the run; the first failure is logged at WARNING.
    """

    def __init__(self, directory: Path, label_studio_url: str, project_id: int) -> None:
        self.directory = directory
        self._scope = (label_studio_url, project_id)
        self._warned = False
        self._cache: diskcache.Cache | None = None
        try:
            self._cache = diskcache.Cache(str(directory), size_limit=STORE_SIZE_LIMIT, timeout=5)
        except (OSError, sqlite3.Error) as exc:
            self._failed("open", exc)

    def _key(self, task: TaskImageRef) -> tuple[str, int, int, str]:
        return (*self._scope, task.task_id, task.ref)

    def _failed(self, what: str, exc: Exception) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(
            level, "task fingerprint store %s: cannot %s (%s); going on without it", self.directory, what, exc
        )

    def get(self, task: TaskImageRef) -> Fingerprint | None:
        if self._cache is None:
            return None
        try:
            stored = self._cache.get(self._key(task))
        except (OSError, sqlite3.Error) as exc:
            self._failed("read", exc)
            return None
        try:
            return Fingerprint.from_hex(stored) if stored is not None else None
        except FingerprintError:  # written by another version: fetched again and overwritten
            return None

    def put(self, task: TaskImageRef, fp: Fingerprint) -> None:
        if self._cache is None:
            return
        try:
            self._cache.set(self._key(task), fp.to_hex())
        except (OSError, sqlite3.Error) as exc:
            self._failed("write", exc)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


@dataclass
class TaskFingerprints:
    """The fingerprints of a project's task images, and how they were obtained."""

    found: list[tuple[int, Fingerprint]] = field(default_factory=list)
    """(task id, fingerprint) of every task whose image has one."""
    cached: int = 0
    """Read from the local store: nothing fetched."""
    fetched: int = 0
    """Task images downloaded (and fingerprinted) by this run."""
    unreadable: dict[int, str] = field(default_factory=dict)
    """Task id -> why its image could not be fetched or read (it is not screened against)."""


Progress = Callable[[int, int], None]


def fingerprint_tasks(
    tasks: Iterable[TaskImageRef],
    total: int,
    *,
    store: TaskFingerprintStore,
    resolver: TaskImageResolver,
    executor: Executor,
    window: int,
    describe_error: Callable[[str], str] = str,
    progress: Progress | None = None,
) -> TaskFingerprints:
    """Fingerprints of ``tasks``: from the store, else fetched on ``executor``, at most ``window`` at a time.

    Only ``window`` images are in flight (each is dropped once fingerprinted), so memory does not
    grow with the project. New fingerprints go into the store as they come.
    """
    result = TaskFingerprints()
    pending: deque[tuple[TaskImageRef, Future[Fingerprint]]] = deque()

    def collect() -> None:
        task, future = pending.popleft()
        try:
            fp = future.result()
        except (TaskImageError, ImageEncodingError, OSError, ValueError) as exc:
            reason = describe_error(str(exc))[:500]
            result.unreadable[task.task_id] = reason
            logger.warning("task %s: its image is not screened against: %s", task.task_id, reason)
        else:
            result.found.append((task.task_id, fp))
            result.fetched += 1
            store.put(task, fp)

    def report() -> None:
        if progress:
            progress(result.cached + result.fetched + len(result.unreadable), total)

    report()
    for task in tasks:
        cached = store.get(task)
        if cached is not None:
            result.found.append((task.task_id, cached))
            result.cached += 1
        else:
            pending.append((task, executor.submit(_fetch_and_fingerprint, resolver, task)))
            while len(pending) >= window:
                collect()
        report()
    while pending:
        collect()
        report()
    return result


def _fetch_and_fingerprint(resolver: TaskImageResolver, task: TaskImageRef) -> Fingerprint:
    """On a pool thread: the image is in memory only while it is fingerprinted."""
    return fingerprint(resolver.fetch_image(task.fetch_ref, task.task_id))
