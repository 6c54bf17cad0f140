"""``url`` queries: the core's guarded fetch (``simages_core.fetch``) with the server's defaults.

The caller of the local server is untrusted: it learns why a URL was refused before any
connection, and otherwise only that the URL "could not be fetched"; the detail (status,
content type, timeout) goes to the server's log, with the URL's credentials and query left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from simages_core import InvalidRequest
from simages_core import fetch as core_fetch
from simages_core.fetch import Fetcher, FetchError, parse_networks, redact_text

__all__ = ["FetchPolicy", "Fetcher", "fetch_query_image", "parse_networks"]

logger = logging.getLogger("simages_server")


@dataclass(frozen=True)
class FetchPolicy(core_fetch.FetchPolicy):
    """The core policy for an untrusted caller; image hosts often send ``application/octet-stream``."""

    content_types: tuple[str, ...] = ("image/*", "application/octet-stream")
    deadline: float = 20.0

    def __post_init__(self) -> None:
        # --fetch-timeout is per read; the whole fetch gets at least as long as one read.
        object.__setattr__(self, "deadline", max(self.deadline, self.timeout))
        super().__post_init__()


def fetch_query_image(fetcher: Fetcher, url: str) -> bytes:
    """The bytes behind a query's ``url``; every failure is an ``InvalidRequest`` on field ``url``."""
    try:
        return fetcher.fetch_bytes(url).data
    except FetchError as exc:
        logger.info("url query to %s failed: %s (%s)", _loggable(url), exc, type(exc).__name__)
        raise InvalidRequest(f"'url' {exc.public_message}", field="url") from None


def _loggable(url: str) -> str:
    """Scheme, host and path only: userinfo and query strings (presigned tokens) stay out of logs."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))[:300]
    except ValueError:
        return redact_text(url.split("?", 1)[0])[:300]
