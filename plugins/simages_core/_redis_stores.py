"""Response cache and usage ledger in Redis (``SIMAGES_CACHE_URL``): one of each for every process and replica.

Drop-in for the on-disk ``ResponseCache`` and ``UsageLedger``: the same cache keys
(``ResponseCache.key``), the same stored value (the body JSON), the same TTL and size
bound, the same per-day counters. Every key lives under ``simages:`` so one Redis can
host other things. Redis calls time out after a second and a Redis that failed is left
alone for two, so one that goes away costs searches cache hits, never a stall (the client
logs and skips the failure); redis-py reconnects by itself when it is back.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._addresses import redact_text
from ._cache import DEFAULT_SIZE_LIMIT, DEFAULT_TTL_SECONDS, ResponseCache
from ._config import ENV_CACHE_URL, SharedStoreUrl
from ._exceptions import SharedStoreError, SharedStoreUnavailable
from ._models import SearchResult
from ._usage import DailyUsage, UsageEvent, UsageLedger, _today
from .protocol import SearchRequest, parse_body, result_to_body

CACHE_PREFIX = "simages:cache:"
USAGE_PREFIX = "simages:usage:"
SOCKET_TIMEOUT_SECONDS = 1.0
FAILURE_PAUSE_SECONDS = 2.0
LEDGER_TTL_SECONDS = 400 * 24 * 3600
"""A day's counters outlive a year of ``simages usage --days 366``, then go: the ledger does not grow forever."""
_PURGE_BATCH = 500


@dataclass
class SharedRedis:
    """One pooled Redis connection, as the shared cache and ledger use it, and how logs name it.

    After a connection failure or timeout, calls are not tried for ``pause`` seconds: a Redis
    that hangs would otherwise cost every search a timeout per cache read, count and write.
    """

    client: redis.Redis
    where: str
    """``redis at host:port``: for messages and logs, never with credentials."""
    location: SharedStoreUrl | None = field(default=None, repr=False)
    pause: float = FAILURE_PAUSE_SECONDS
    _skip_until: float = field(default=0.0, repr=False)

    @contextmanager
    def calling(self) -> Iterator[redis.Redis]:
        """The client, with any redis-py error turned into a ``SharedStoreError`` that names this Redis."""
        if time.monotonic() < self._skip_until:
            raise SharedStoreError(f"{self.where}: not tried for {self.pause:g} s after it failed to answer")
        try:
            yield self.client
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # A plain float store: racing threads at worst both set nearly the same moment.
            self._skip_until = time.monotonic() + self.pause
            raise SharedStoreError(f"{self.where}: {type(exc).__name__}: {_scrub(exc, self.location)}") from None
        except redis.RedisError as exc:
            raise SharedStoreError(f"{self.where}: {type(exc).__name__}: {_scrub(exc, self.location)}") from None

    def close(self) -> None:
        self.client.close()


def connect(location: SharedStoreUrl) -> SharedRedis:
    """A pooled Redis client with short timeouts, checked with a PING: fails loudly now, not at the first search."""
    try:
        client = redis.Redis.from_url(
            location.url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
            # One immediate retry, on a broken connection only: a pooled connection that died with a
            # restarted Redis is replaced at once; redis-py's default (3 retries with backoff, timeouts
            # too) would hold a search for seconds.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
    except ValueError as exc:  # an option in the query string redis-py cannot read
        raise ValueError(f"{ENV_CACHE_URL} ({location.shown}): {_scrub(exc, location)}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise SharedStoreUnavailable(
            f"{ENV_CACHE_URL}: cannot reach Redis at {location.address} "
            f"({type(exc).__name__}: {_scrub(exc, location)})"
        ) from None
    return SharedRedis(client, f"redis at {location.address}", location)


def _scrub(exc: BaseException, location: SharedStoreUrl | None) -> str:
    """An exception's text without URL credentials (redis-py does not quote them; this makes sure)."""
    text = redact_text(str(exc))
    for secret in location.secrets if location is not None else ():
        text = text.replace(secret, "***")
    return text


# Why a script: Redis bounds memory per instance (maxmemory), not per prefix, and a shared
# Redis hosts other things, so the 256 MB bound of the on-disk cache is kept here. Stores
# from several processes race, so the bookkeeping (store order, sizes, byte total) and the
# trimming must happen in one atomic step: a Lua script runs alone on the server.
#   KEYS: 1 the entry, 2 zset member -> store sequence, 3 zset member -> expiry (ms),
#         4 hash member -> bytes, 5 hash {bytes: total, seq: last sequence}
#   ARGV: 1 member (the cache key), 2 value, 3 ttl (ms), 4 size limit (bytes), 5 entry key prefix,
#         6 how many expired entries one put tidies up at most (keeps each script short)
_PUT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local prefix = ARGV[5]
local function forget(member)
  local size = tonumber(redis.call('HGET', KEYS[4], member) or '0')
  redis.call('DEL', prefix .. member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[3], member)
  redis.call('HDEL', KEYS[4], member)
  if size > 0 then redis.call('HINCRBY', KEYS[5], 'bytes', -size) end
end
-- Entries whose TTL ran out: Redis dropped the value already, drop their share of the total.
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))) do
  forget(member)
end
forget(ARGV[1])
local size = string.len(ARGV[2]) + string.len(KEYS[1])
local seq = redis.call('HINCRBY', KEYS[5], 'seq', 1)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], size)
local total = redis.call('HINCRBY', KEYS[5], 'bytes', size)
local limit = tonumber(ARGV[4])
-- Oldest stored first (the on-disk cache's "least-recently-stored"); an entry larger than
-- the bound evicts itself last, so the total never stays above it.
while total > limit do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  forget(oldest[1])
  total = tonumber(redis.call('HGET', KEYS[5], 'bytes') or '0')
end
return total
"""

_CLEAR = """
local prefix = ARGV[1]
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  redis.call('DEL', prefix .. member)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 0
"""


class RedisResponseCache(ResponseCache):
    """Successful search results in Redis, with a time-to-live and a size bound over all its entries.

    A ``ResponseCache`` (same ``key``, same interface) so the client and callers take either;
    it does not use the parent's on-disk storage. Entries are ``<prefix>r:<key>`` holding the
    body JSON; ``<prefix>stored``, ``expires``, ``sizes`` and ``meta`` keep the byte total.
    Needs a standalone Redis (or one where every key of the prefix is in one hash slot): the
    put script touches entries it evicts.
    """

    def __init__(
        self,
        shared: SharedRedis,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        size_limit: int = DEFAULT_SIZE_LIMIT,
        prefix: str = CACHE_PREFIX,
    ) -> None:
        # The parent's __init__ opens a diskcache folder: not called on purpose.
        if ttl <= 0:
            raise ValueError(f"cache ttl must be positive, got {ttl}")
        if size_limit <= 0:
            raise ValueError(f"cache size limit must be positive, got {size_limit}")
        self.ttl = ttl
        self.size_limit = size_limit
        self._shared = shared
        self._entry_prefix = prefix + "r:"
        self._bookkeeping = [prefix + name for name in ("stored", "expires", "sizes", "meta")]
        # register_script sends EVALSHA and reloads the script by itself after a Redis restart.
        self._put = shared.client.register_script(_PUT)
        self._clear = shared.client.register_script(_CLEAR)

    def __repr__(self) -> str:
        return f"RedisResponseCache({self._shared.where!r}, ttl={self.ttl:g}, size_limit={self.size_limit})"

    def get(self, scope: str, request: SearchRequest) -> SearchResult | None:
        with self._shared.calling() as redis_client:
            stored: Any = redis_client.get(self._entry_prefix + self.key(scope, request))
        if stored is None:
            return None
        result = parse_body(json.loads(stored), labels_requested=request.labels_requested)
        return SearchResult(
            images=result.images, info=result.info, labels_requested=result.labels_requested, from_cache=True
        )

    def put(self, scope: str, request: SearchRequest, result: SearchResult) -> None:
        member = self.key(scope, request)
        value = json.dumps(result_to_body(result), separators=(",", ":"))
        ttl_ms = max(1, round(self.ttl * 1000))
        with self._shared.calling():
            self._put(
                keys=[self._entry_prefix + member, *self._bookkeeping],
                args=[member, value, ttl_ms, self.size_limit, self._entry_prefix, _PURGE_BATCH],
            )

    def stored_bytes(self) -> int:
        """The byte total the size bound is enforced on (values plus their keys)."""
        with self._shared.calling() as redis_client:
            total = redis_client.hget(self._bookkeeping[3], "bytes")
        return int(total or 0)

    def clear(self) -> None:
        with self._shared.calling():
            self._clear(keys=self._bookkeeping, args=[self._entry_prefix])

    def __len__(self) -> int:
        """Entries stored and not yet expired."""
        with self._shared.calling() as redis_client:
            seconds, micros = redis_client.time()
            now_ms = seconds * 1000 + micros // 1000
            return int(redis_client.zcount(self._bookkeeping[1], f"({now_ms}", "+inf"))

    def close(self) -> None:
        self._shared.close()


class RedisUsageLedger(UsageLedger):
    """Per-day counters in Redis: one hash ``<prefix><YYYY-MM-DD>`` with ``sent``/``cached``/``failed``.

    A ``UsageLedger`` (same interface) so ``client.usage``, ``budget_for`` and ``simages usage``
    read it unchanged; each count is one ``HINCRBY``, atomic across processes and machines.
    """

    def __init__(
        self,
        shared: SharedRedis,
        *,
        prefix: str = USAGE_PREFIX,
        expire_after: int = LEDGER_TTL_SECONDS,
    ) -> None:
        # The parent's __init__ opens a diskcache folder: not called on purpose.
        self._shared = shared
        self._prefix = prefix
        self._expire_after = expire_after

    def __repr__(self) -> str:
        return f"RedisUsageLedger({self._shared.where!r})"

    def record(self, event: UsageEvent, day: dt.date | None = None) -> None:
        key = self._prefix + (day or _today()).isoformat()
        with self._shared.calling() as redis_client:
            pipe = redis_client.pipeline(transaction=True)
            pipe.hincrby(key, event.value, 1)
            pipe.expire(key, self._expire_after)
            pipe.execute()

    def day(self, day: dt.date | None = None) -> DailyUsage:
        return self._days([day or _today()])[0]

    def history(self, days: int = 7) -> list[DailyUsage]:
        """The last ``days`` days, oldest first, including days with no use (one round trip)."""
        today = _today()
        return self._days([today - dt.timedelta(days=n) for n in range(days - 1, -1, -1)])

    def _days(self, days: list[dt.date]) -> list[DailyUsage]:
        fields = [e.value for e in UsageEvent]
        with self._shared.calling() as redis_client:
            pipe = redis_client.pipeline(transaction=False)
            for day in days:
                pipe.hmget(self._prefix + day.isoformat(), fields)
            rows = pipe.execute()
        return [
            DailyUsage(day, **{name: int(value or 0) for name, value in zip(fields, row, strict=True)})
            for day, row in zip(days, rows, strict=True)
        ]

    def close(self) -> None:
        self._shared.close()
