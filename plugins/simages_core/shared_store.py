"""The Redis named by ``SIMAGES_CACHE_URL``, for integrations that keep shared state beside the core's own.

The same connection handling as the core's response cache and usage ledger (``_redis_stores``): short
timeouts, a PING at connect (``SharedStoreUnavailable`` naming the address, never the password), and
``SharedRedis.calling()`` turning any redis-py error into a ``SharedStoreError`` after which the Redis
is left alone for two seconds. Importing this module needs the ``redis`` extra only when it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._config import shared_store_from_env
from ._exceptions import SharedStoreError, SharedStoreUnavailable

if TYPE_CHECKING:
    from ._redis_stores import SharedRedis

__all__ = ["SharedRedis", "SharedStoreError", "SharedStoreUnavailable", "connect_from_env"]


def connect_from_env() -> SharedRedis | None:
    """A checked connection to ``SIMAGES_CACHE_URL``'s Redis, or ``None`` when the variable is not set.

    Raises ``ValueError`` for a malformed URL and ``SharedStoreUnavailable`` when Redis does not answer.
    """
    location = shared_store_from_env()
    if location is None:
        return None
    from ._redis_stores import connect

    return connect(location)


def __getattr__(name: str) -> object:
    # ``SharedRedis`` at run time without importing redis for those who only read the exceptions.
    if name == "SharedRedis":
        from ._redis_stores import SharedRedis

        return SharedRedis
    raise AttributeError(name)
