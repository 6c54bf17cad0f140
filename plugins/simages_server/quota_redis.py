"""The daily quota in Redis, so several server replicas behind one address enforce one limit per key.

Same guarantees as the SQLite ``DailyQuota``: a unit is reserved atomically before a request
runs (a Lua script: increment only while below the limit, so concurrent replicas cannot
overshoot) and released if the request fails (decrement, never below 0). Only key digests are
stored: ``simages:quota:<UTC day>:<sha256 of the key>``, expiring after two days. Any Redis
failure becomes ``QuotaUnavailable``, which the app answers with 503: the quota fails closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from simages_core.fetch import redact_text, redact_url

from .keys import QuotaUnavailable, utc_day

KEY_PREFIX = "simages:quota:"
# Long enough to outlive the day in every time zone a replica's clock might disagree on,
# short enough that counters of past days clean themselves up.
EXPIRY_SECONDS = 2 * 24 * 3600
# Short timeouts: a request waits at most about this long (twice, with the one retry) on a
# Redis that has gone away before it is answered 503.
SOCKET_TIMEOUT = 1.0

# KEYS[1] the counter; ARGV[1] the limit (0 = none), ARGV[2] the expiry. 1 = reserved, 0 = over.
_RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
if limit > 0 and used >= limit then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
_RELEASE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


def redis_location(url: str) -> str:
    """Where ``url`` points, for messages and /health: ``host:port`` or the socket path, never a password."""
    try:
        parts = urlsplit(url)
        if parts.scheme.lower() == "unix":
            return f"unix:{parts.path}"
        host = parts.hostname or "localhost"
        host = f"[{host}]" if ":" in host else host
        tls = " (TLS)" if parts.scheme.lower() == "rediss" else ""
        return f"{host}:{parts.port or 6379}{tls}"
    except ValueError:  # e.g. a port that is not a number
        return redact_url(url)


class RedisDailyQuota:
    """Successful requests per key per UTC day, in Redis (shared by every server replica)."""

    def __init__(self, url: str, limit: int) -> None:
        self.limit = limit
        self.location = redis_location(url)
        self.description = f"redis at {self.location}"
        try:
            self._redis = redis.Redis.from_url(
                url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=SOCKET_TIMEOUT,
                # One retry re-dials a pooled connection Redis dropped on a restart; no backoff,
                # so a Redis that is really gone is answered 503 at once.
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:  # a malformed URL: say which, without its password
            raise ValueError(f"--state {redact_url(url)} is not a valid Redis URL: {redact_text(str(exc))}") from None
        self._reserve = self._redis.register_script(_RESERVE)
        self._release = self._redis.register_script(_RELEASE)
        self._call(self._redis.ping)  # unreachable at start: refuse to start, with the reason

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except redis.RedisError as exc:
            reason = redact_text(str(exc)) or type(exc).__name__
            raise QuotaUnavailable(f"quota store unavailable: Redis at {self.location}: {reason}") from None

    @staticmethod
    def counter_key(key_digest: str) -> str:
        return f"{KEY_PREFIX}{utc_day()}:{key_digest}"

    def reserve(self, key_digest: str) -> bool:
        """Take one unit of today's quota; False when the limit is reached (0 = no limit)."""
        taken = self._call(
            self._reserve, keys=[self.counter_key(key_digest)], args=[max(self.limit, 0), EXPIRY_SECONDS]
        )
        return int(taken) == 1

    def release(self, key_digest: str) -> None:
        """Give back a reserved unit (the request failed)."""
        self._call(self._release, keys=[self.counter_key(key_digest)])

    def used(self, key_digest: str) -> int:
        value = self._call(self._redis.get, self.counter_key(key_digest))
        return int(value) if value is not None else 0

    def close(self) -> None:
        self._redis.close()
