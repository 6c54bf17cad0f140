"""Where the memos of answered regions wait for their task's annotation: beside the learned labels.

Per (project, task) a list of memos, the newest last, at most ``MEMOS_PER_TASK`` (the oldest go) and
for at most ``MEMO_TTL_SECONDS`` (an annotation submitted later teaches from near-duplicates only).
With ``SIMAGES_CACHE_URL`` they live in the same Redis as the learned labels, so the replica that
answered a drawn box and the one that receives the webhook need not be the same; else in a bounded
diskcache folder under ``SIMAGES_HOME`` (several processes on one folder share it too).

Unlike learned evidence, memos are disposable: losing them costs what the next annotations of
those tasks would have taught, never a prediction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import diskcache

from simages_core.shared_store import SharedStoreError

from .region_memos import RegionMemo

if TYPE_CHECKING:
    from simages_core.shared_store import SharedRedis

MEMOS_PER_TASK = 200
MEMO_TTL_SECONDS = 14 * 24 * 3600
DISK_LIMIT_BYTES = 64 * 1024 * 1024
MEMO_FOLDER = "label-studio-region-memos"
REDIS_PREFIX = "simages:regions:"


class MemoStoreError(Exception):
    """Memos could not be read or written; the message names the store, never a secret."""


class MemoStore(Protocol):
    def remember(self, project: str, task: int, memos: list[RegionMemo]) -> None: ...
    def recall(self, project: str, task: int) -> list[RegionMemo]: ...
    def close(self) -> None: ...


def _parse(rows: list[str | bytes]) -> list[RegionMemo]:
    memos = []
    for row in rows:
        try:
            memos.append(RegionMemo.from_json(json.loads(row)))
        except (ValueError, KeyError, TypeError):
            continue  # a row written by another version: skipped, not fatal
    return memos


class DiskMemoStore:
    """Memos in a diskcache folder bounded by bytes (least recently stored evicted) and by age."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            self._cache = diskcache.Cache(
                str(directory),
                timeout=10,
                size_limit=DISK_LIMIT_BYTES,
                eviction_policy="least-recently-stored",
            )
        except (OSError, sqlite3.Error) as exc:
            raise MemoStoreError(f"region memos {directory}: cannot open ({exc})") from None
        self._lock = threading.Lock()

    def remember(self, project: str, task: int, memos: list[RegionMemo]) -> None:
        rows = [json.dumps(m.to_json(), separators=(",", ":")) for m in memos]
        try:
            with self._lock, self._cache.transact():
                kept: list[str] = self._cache.get((project, task), [])
                kept = [*kept, *rows][-MEMOS_PER_TASK:]
                self._cache.set((project, task), kept, expire=MEMO_TTL_SECONDS)
        except (OSError, sqlite3.Error) as exc:
            raise MemoStoreError(f"region memos {self.directory}: cannot write ({exc})") from None

    def recall(self, project: str, task: int) -> list[RegionMemo]:
        try:
            return _parse(self._cache.get((project, task), []))
        except (OSError, sqlite3.Error) as exc:
            raise MemoStoreError(f"region memos {self.directory}: cannot read ({exc})") from None

    def close(self) -> None:
        self._cache.close()


class RedisMemoStore:
    """Memos in a Redis list per task (``simages:regions:<project>:<task>``), trimmed and expiring."""

    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared  # owned by the learned store, which closes it

    def _key(self, project: str, task: int) -> str:
        return f"{REDIS_PREFIX}{project}:{task}"

    def remember(self, project: str, task: int, memos: list[RegionMemo]) -> None:
        rows = [json.dumps(m.to_json(), separators=(",", ":")) for m in memos]
        key = self._key(project, task)
        try:
            with self._shared.calling() as client:
                pipe = client.pipeline(transaction=True)
                pipe.rpush(key, *rows)
                pipe.ltrim(key, -MEMOS_PER_TASK, -1)
                pipe.expire(key, MEMO_TTL_SECONDS)
                pipe.execute()
        except SharedStoreError as exc:
            raise MemoStoreError(f"region memos: cannot write: {exc}") from None

    def recall(self, project: str, task: int) -> list[RegionMemo]:
        try:
            with self._shared.calling() as client:
                rows = client.lrange(self._key(project, task), 0, -1)
        except SharedStoreError as exc:
            raise MemoStoreError(f"region memos: cannot read: {exc}") from None
        return _parse(rows)

    def close(self) -> None:
        pass
