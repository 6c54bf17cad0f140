"""On-disk response cache: a paid request is not paid for twice.

Keyed by a scope (the client's API URL without credentials plus a digest of its
API key, so two accounts never share answers and no key is stored) and the
normalised request (sorted JSON, so field order and defaults do not matter); only
successful answers are stored. diskcache gives atomic, process- and thread-safe
access, TTL expiry and a size bound. The client treats any failure here as a miss.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import diskcache

from ._models import SearchResult
from .protocol import SearchRequest, parse_body, result_to_body

DEFAULT_TTL_SECONDS = 24 * 3600.0
DEFAULT_SIZE_LIMIT = 256 * 1024 * 1024
STORE_TIMEOUT_SECONDS = 5.0


class ResponseCache:
    """Successful search results on disk, with a time-to-live and a size bound."""

    def __init__(
        self,
        directory: str | Path,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        size_limit: int = DEFAULT_SIZE_LIMIT,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"cache ttl must be positive, got {ttl}")
        self.directory = Path(directory)
        self.ttl = ttl
        # eviction_policy "least-recently-stored" keeps reads lock-free (no access-time writes).
        self._cache = diskcache.Cache(
            str(self.directory),
            size_limit=size_limit,
            eviction_policy="least-recently-stored",
            # SQLite's busy wait: diskcache's 60 s default would park a search behind a stuck lock.
            timeout=STORE_TIMEOUT_SECONDS,
        )

    @staticmethod
    def key(scope: str, request: SearchRequest) -> str:
        """``scope`` says whose answer it is: the client passes its URL and a key digest, never the key."""
        normalised = json.dumps([scope, request.to_json()], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(normalised.encode("utf-8")).hexdigest()

    def get(self, scope: str, request: SearchRequest) -> SearchResult | None:
        stored: Any = self._cache.get(self.key(scope, request))
        if stored is None:
            return None
        result = parse_body(stored, labels_requested=request.labels_requested)
        return SearchResult(
            images=result.images, info=result.info, labels_requested=result.labels_requested, from_cache=True
        )

    def put(self, scope: str, request: SearchRequest, result: SearchResult) -> None:
        self._cache.set(self.key(scope, request), result_to_body(result), expire=self.ttl)

    def clear(self) -> None:
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()
