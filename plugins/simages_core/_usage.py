"""Usage accounting per day: requests sent, served from cache, and failed.

The API is free for 100 requests a day and paid beyond, so users want to know
where they stand. Counters live on disk (diskcache's atomic ``incr``) so that
several processes, e.g. a backend's workers, add up to one ledger.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import diskcache


class UsageEvent(str, Enum):
    SENT = "sent"
    """A request went to the API and got a successful answer (what the API bills)."""
    CACHED = "cached"
    """A request was answered from the response cache; nothing was sent."""
    FAILED = "failed"
    """A request went to the API (or tried to) and ended in an error."""


@dataclass(frozen=True)
class DailyUsage:
    day: dt.date
    sent: int = 0
    cached: int = 0
    failed: int = 0


def _today() -> dt.date:
    # The API's daily limit is counted per UTC day.
    return dt.datetime.now(dt.timezone.utc).date()


class UsageLedger:
    """Per-day counters, on disk when given a folder, in memory otherwise."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self._store: diskcache.Cache | dict[str, int]
        # A short busy wait: a locked ledger must not hold up a search (the client skips the count).
        self._store = diskcache.Cache(str(directory), timeout=5.0) if directory is not None else {}
        self._lock = threading.Lock()

    def record(self, event: UsageEvent, day: dt.date | None = None) -> None:
        key = f"{(day or _today()).isoformat()}:{event.value}"
        if isinstance(self._store, dict):
            with self._lock:
                self._store[key] = self._store.get(key, 0) + 1
        else:
            self._store.incr(key, 1, default=0)

    def day(self, day: dt.date | None = None) -> DailyUsage:
        day = day or _today()
        counts = {e.value: int(self._store.get(f"{day.isoformat()}:{e.value}", 0) or 0) for e in UsageEvent}
        return DailyUsage(day=day, **counts)

    def history(self, days: int = 7) -> list[DailyUsage]:
        """The last ``days`` days, oldest first, including days with no use."""
        today = _today()
        return [self.day(today - dt.timedelta(days=n)) for n in range(days - 1, -1, -1)]

    def close(self) -> None:
        if isinstance(self._store, diskcache.Cache):
            self._store.close()
