"""requests/urllib3 specifics: the retry policy's urllib3 form, and transport failures mapped to ours.

Every requests, urllib3 or socket exception becomes a ``TransportError`` subclass in
``transport_error`` and nowhere else; timeouts are recognised by type, not by message.
"""

from __future__ import annotations

from typing import Any

import requests
import urllib3.exceptions
from urllib3.util.retry import Retry

from ._exceptions import ConnectError, RequestTimeout, TransportError


class CappedRetry(Retry):
    """urllib3's Retry, but a server's ``Retry-After`` cannot make us sleep for hours."""

    max_retry_after: float = 60.0

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.max_retry_after)

    def new(self, **kw: Any) -> CappedRetry:
        retry = super().new(**kw)
        retry.max_retry_after = self.max_retry_after
        return retry


# urllib3 2 makes NewConnectionError (refused, unreachable) a ConnectTimeoutError subclass
# for compatibility; by type alone it is not a timeout, so it is excluded (its cause is still checked).
_TIMEOUT_TYPES = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)


def is_timeout(exc: BaseException) -> bool:
    """Whether a timeout (urllib3/requests read or connect timeout, ``socket.timeout``) caused ``exc``.

    Decided by exception type along the whole chain (``__cause__``, ``__context__``,
    urllib3's ``reason``, wrapped exceptions in ``args``), never by message text.
    """
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _TIMEOUT_TYPES) and not isinstance(
            current, urllib3.exceptions.NewConnectionError
        ):
            return True
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return False


def transport_error(exc: BaseException, where: str) -> TransportError:
    """The ``TransportError`` subclass for a requests/urllib3/socket failure reaching ``where``."""
    if is_timeout(exc):
        return RequestTimeout(f"no answer from {where} in time: {_reason(exc)}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return ConnectError(f"cannot reach {where}: {_reason(exc)}")
    return TransportError(f"request to {where} failed: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    """The innermost cause of a transport error, short, without request details."""
    inner: BaseException = exc
    seen = 0
    while seen < 5:
        nxt = getattr(inner, "reason", None) or inner.__cause__ or inner.__context__
        if not isinstance(nxt, BaseException):
            break
        inner, seen = nxt, seen + 1
    return f"{type(inner).__name__}: {inner}"[:300]
