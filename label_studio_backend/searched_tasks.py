"""Which source tasks ``expand`` has searched already, for the same parameters: each is searched once.

A task whose search added nothing leaves no trace in the project (provenance lives only on the
tasks ``expand`` makes), so without this record every run would pay for its search again. The
record is local, beside the task fingerprints under ``SIMAGES_HOME``, keyed by (Label Studio URL
without credentials, project, task, search parameters): the source tasks are the user's, and
writing our bookkeeping into their data would change them (a PATCH per task, a new
``updated_at``, a field in the Data Manager's columns) for a cache's sake. The cost of a local
record: a run from another machine searches those tasks once more. Another ``per_task``,
``min_score``, copy threshold or API is another question, so it is searched again.

Like the fingerprint store this is only a cache: a store that cannot be opened, read or written
costs searches, never the run (logged once at WARNING).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import diskcache

logger = logging.getLogger("simages_label_studio.expand")

STORE_FOLDER = "label-studio-searched-tasks"
"""The store's folder under ``SIMAGES_HOME``."""
STORE_SIZE_LIMIT = 64 * 2**20


@dataclass(frozen=True)
class SearchParameters:
    """What decides a search's answer and what a run keeps of it: another value, another search."""

    api_url: str
    per_task: int
    min_score: float
    copy_threshold: int | None


class SearchedTaskStore:
    """Source tasks searched by earlier runs, by (Label Studio, project, task, parameters), on disk."""

    def __init__(
        self, directory: Path, label_studio_url: str, project_id: int, parameters: SearchParameters
    ) -> None:
        self.directory = directory
        self._scope = (
            label_studio_url,
            project_id,
            parameters.api_url,
            parameters.per_task,
            parameters.min_score,
            parameters.copy_threshold,
        )
        self._warned = False
        self._cache: diskcache.Cache | None = None
        try:
            self._cache = diskcache.Cache(str(directory), size_limit=STORE_SIZE_LIMIT, timeout=5)
        except (OSError, sqlite3.Error) as exc:
            self._failed("open", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(
            level, "searched-task store %s: cannot %s (%s); going on without it", self.directory, what, exc
        )

    def searched(self, task_id: int) -> bool:
        if self._cache is None:
            return False
        try:
            return (*self._scope, task_id) in self._cache
        except (OSError, sqlite3.Error) as exc:
            self._failed("read", exc)
            return False

    def record(self, task_ids: Iterable[int]) -> None:
        if self._cache is None:
            return
        try:
            with self._cache.transact():
                for task_id in task_ids:
                    self._cache.set((*self._scope, task_id), True)
        except (OSError, sqlite3.Error) as exc:
            self._failed("write", exc)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
