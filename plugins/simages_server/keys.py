"""API keys and per-key daily limits for the local server, persisted so a restart resets nothing.

Keys are stored (and logged) only as SHA-256 digests. A request reserves one
unit of the day's quota atomically before it runs and gives it back if it
fails, so concurrent requests cannot overshoot the limit and errors are free,
as with the public API, which bills successful requests only.

Two stores keep the counters: ``DailyQuota`` (SQLite, one server) and
``RedisDailyQuota`` in ``quota_redis`` (shared by every replica); ``open_quota``
picks one from ``--state``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

ENV_SERVER_KEYS = "SIMAGES_SERVER_API_KEYS"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_keys(path: str | Path | None = None, env: str | None = None) -> frozenset[str]:
    """Keys from a file (one per line, ``#`` comments) and/or a comma-separated environment value."""
    keys: set[str] = set()
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        keys.update(line.split("#", 1)[0].strip() for line in text.splitlines())
    raw = env if env is not None else os.environ.get(ENV_SERVER_KEYS, "")
    keys.update(part.strip() for part in raw.split(","))
    keys.discard("")
    return frozenset(keys)


class QuotaUnavailable(ConnectionError):
    """The quota store cannot be reached: the server refuses to start, or answers 503 (never unmetered)."""


class QuotaStore(Protocol):
    """What the app needs from a quota store; every method may raise ``QuotaUnavailable``."""

    limit: int
    description: str  # for /health and the start-up log line: never a password

    def reserve(self, key_digest: str) -> bool: ...
    def release(self, key_digest: str) -> None: ...
    def used(self, key_digest: str) -> int: ...
    def close(self) -> None: ...


def utc_day() -> str:
    """Today's quota day: limits reset at midnight UTC, as the public API's do."""
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(state: str | Path) -> bool:
    """Whether a ``--state`` value names Redis (else it is a folder)."""
    return isinstance(state, str) and state.lower().startswith(REDIS_SCHEMES)


def open_quota(state: str | Path, limit: int) -> QuotaStore:
    """The quota store ``state`` names: a Redis URL, or the SQLite file ``state`` (a path)."""
    if is_redis_url(state):
        from .quota_redis import RedisDailyQuota  # redis is only imported when it is used

        return RedisDailyQuota(str(state), limit)
    return DailyQuota(state, limit)


class DailyQuota:
    """Successful requests per key per UTC day, in SQLite."""

    description = "sqlite"

    def __init__(self, path: str | Path, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL never corrupts the file; it skips the fsync of every commit, which
        # cost ~2.5 ms per search. A power cut can lose the last counts only.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS usage (day TEXT, key TEXT, used INTEGER, PRIMARY KEY (day, key))"
        )

    @staticmethod
    def _today() -> str:
        return utc_day()

    def reserve(self, key_digest: str) -> bool:
        """Take one unit of today's quota; False when the limit is reached (0 = no limit)."""
        # One statement, so one commit: the first unit of the day inserts, later ones update while
        # below the limit; a row the WHERE refuses is not counted (rowcount 0).
        below_limit = " WHERE used < ?" if self.limit > 0 else ""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO usage VALUES (?, ?, 1) ON CONFLICT (day, key) DO UPDATE SET used = used + 1"
                + below_limit,
                (self._today(), key_digest, *((self.limit,) if self.limit > 0 else ())),
            )
            return cursor.rowcount == 1

    def release(self, key_digest: str) -> None:
        """Give back a reserved unit (the request failed)."""
        with self._lock:
            self._db.execute(
                "UPDATE usage SET used = MAX(used - 1, 0) WHERE day = ? AND key = ?",
                (self._today(), key_digest),
            )

    def used(self, key_digest: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT used FROM usage WHERE day = ? AND key = ?", (self._today(), key_digest)
            ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._db.close()


def digests(keys: Iterable[str]) -> frozenset[str]:
    return frozenset(digest(k) for k in keys)
