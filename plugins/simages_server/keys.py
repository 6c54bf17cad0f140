"""API keys and per-key daily limits for the local server, persisted so a restart resets nothing.

Keys are stored (and logged) only as SHA-256 digests. A request reserves one
unit of the day's quota atomically before it runs and gives it back if it
fails, so concurrent requests cannot overshoot the limit and errors are free,
as with the public API, which bills successful requests only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

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


class DailyQuota:
    """Successful requests per key per UTC day, in SQLite."""

    def __init__(self, path: str | Path, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS usage (day TEXT, key TEXT, used INTEGER, PRIMARY KEY (day, key))"
        )

    @staticmethod
    def _today() -> str:
        return dt.datetime.now(dt.timezone.utc).date().isoformat()

    def reserve(self, key_digest: str) -> bool:
        """Take one unit of today's quota; False when the limit is reached (0 = no limit)."""
        with self._lock:
            day = self._today()
            self._db.execute("INSERT OR IGNORE INTO usage VALUES (?, ?, 0)", (day, key_digest))
            if self.limit <= 0:
                self._db.execute(
                    "UPDATE usage SET used = used + 1 WHERE day = ? AND key = ?", (day, key_digest)
                )
                return True
            cursor = self._db.execute(
                "UPDATE usage SET used = used + 1 WHERE day = ? AND key = ? AND used < ?",
                (day, key_digest, self.limit),
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
