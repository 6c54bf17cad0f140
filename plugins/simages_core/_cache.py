"""On-disk response cache: a paid request is not paid for twice.

Keyed by the API URL and the normalised request (sorted JSON, so field order
and defaults do not matter); only successful answers are stored. diskcache
gives atomic, process- and thread-safe access, TTL expiry and a size bound.
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
            str(self.directory), size_limit=size_limit, eviction_policy="least-recently-stored"
        )

    @staticmethod
    def key(base_url: str, request: SearchRequest) -> str:
        normalised = json.dumps([base_url, request.to_json()], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(normalised.encode("utf-8")).hexdigest()

    def get(self, base_url: str, request: SearchRequest) -> SearchResult | None:
        stored: Any = self._cache.get(self.key(base_url, request))
        if stored is None:
            return None
        result = parse_body(stored, labels_requested=request.labels_requested)
        return SearchResult(
            images=result.images, info=result.info, labels_requested=result.labels_requested, from_cache=True
        )

    def put(self, base_url: str, request: SearchRequest, result: SearchResult) -> None:
        self._cache.set(self.key(base_url, request), result_to_body(result), expire=self.ttl)

    def clear(self) -> None:
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()
