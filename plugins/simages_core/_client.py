"""``SimilarImagesClient``: one pooled HTTP session, retries, cache and usage, typed results.

This is the only module that sends HTTP to the API. Transport exceptions from
requests and urllib3 are mapped to ``simages_core`` exceptions by
``_transport.transport_error`` and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from . import __version__
from ._cache import DEFAULT_TTL_SECONDS, ResponseCache
from ._config import (
    ENV_CACHE_URL,
    HOW_TO_SET_KEY,
    RetryPolicy,
    Timeouts,
    cache_enabled_by_env,
    cache_ttl_from_env,
    parse_base_url,
    resolve_api_key,
    resolve_base_url,
    shared_store_from_env,
    simages_home,
)
from ._encoding import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_SIDE, ImageSource, encode_image
from ._exceptions import MissingApiKey, SimilarImagesError
from ._models import SearchResult
from ._query import BatchItem, Query, QuerySpec, query_from
from ._transport import CappedRetry, transport_error
from ._usage import DailyUsage, UsageEvent, UsageLedger
from .protocol import API_KEY_HEADER, LABELS_COCO_YOLOV7, SearchRequest, parse_response

if TYPE_CHECKING:
    from ._redis_stores import SharedRedis

logger = logging.getLogger("simages_core")

DEFAULT_MAX_WORKERS = 8
_T = TypeVar("_T")


class SimilarImagesClient:
    """A client for the Similar Images API (simages.info) or the local server.

    ``api_key`` defaults to ``SIMAGES_API_KEY``, ``TERNAUS_TOKEN`` or
    ``~/.ternaus/ternaus.json``; ``base_url`` to ``SIMAGES_API_URL`` or
    https://simages.info (``user:pass@`` in it becomes basic auth and is never
    shown). ``cache`` is ``"auto"`` (on unless ``SIMAGES_CACHE=0``, in
    ``SIMAGES_HOME``), ``True``/``False``, a folder, or a ``ResponseCache``.
    ``usage`` is ``"auto"`` (a ledger on disk in ``SIMAGES_HOME``), ``None``
    (in memory) or a ``UsageLedger``. With ``SIMAGES_CACHE_URL=redis://...`` the
    default cache and ledger (``"auto"``/``True``) live in that Redis, shared by every
    process; a Redis that does not answer here raises ``SharedStoreUnavailable``.
    A cache or ledger that fails later is logged once and bypassed; it never fails a
    search. Thread-safe; use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen dataclass, safe as a default
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008
        cache: ResponseCache | str | Path | bool = "auto",
        usage: UsageLedger | str | Path | None = "auto",
        max_side: int = DEFAULT_MAX_SIDE,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
        pool_size: int = 32,
    ) -> None:
        if max_side < 16:
            raise ValueError(f"max_side must be at least 16, got {max_side}")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be from 1 to 100, got {jpeg_quality}")
        self._api_key = resolve_api_key(api_key)
        endpoint = parse_base_url(resolve_base_url(base_url))
        self.base_url = endpoint.url
        self.timeouts = timeouts
        self.retry = retry
        self.max_side = max_side
        self.jpeg_quality = jpeg_quality
        self._stores = _StoreFailures()
        # A bad setting is the caller's error and raises; only opening the storage may fail softly.
        ttl = DEFAULT_TTL_SECONDS
        if cache is not False and not isinstance(cache, ResponseCache):
            ttl = cache_ttl_from_env(DEFAULT_TTL_SECONDS)
        # Outside _stores on purpose: a shared Redis that is down at start is a loud error, not a quiet miss.
        shared = self._connect_shared(cache, usage)
        self.cache = self._stores.call(
            "response cache (open)", lambda: self._make_cache(cache, ttl, shared), None
        )
        self.usage = (
            self._stores.call("usage ledger (open)", lambda: self._make_ledger(usage, shared), None)
            or UsageLedger()
        )
        # Cached answers are per account: the key (and URL credentials) enter the cache key as a digest.
        secret = f"{self._api_key or ''}\n{endpoint.auth or ''}"
        self._cache_scope = f"{self.base_url} {hashlib.sha256(secret.encode()).hexdigest()[:32]}"
        self._session = requests.Session()
        self._session.auth = endpoint.auth
        self._session.headers.update(
            {"content-type": "application/json", "user-agent": f"simages-plugins/{__version__}"}
        )
        max_retry = CappedRetry(
            total=retry.attempts,
            connect=retry.attempts,
            read=retry.attempts,
            status=retry.attempts,
            other=0,
            # POST too: a search has no side effect, and only a successful answer is billed.
            allowed_methods=None,
            status_forcelist=retry.retry_statuses,
            backoff_factor=retry.backoff_factor,
            backoff_max=retry.backoff_max,
            backoff_jitter=retry.backoff_jitter,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        max_retry.max_retry_after = retry.max_retry_after
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=max_retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:  # never show the key
        return f"SimilarImagesClient(base_url={self.base_url!r}, has_api_key={self.has_api_key})"

    @property
    def has_api_key(self) -> bool:
        return self._api_key is not None

    # --- public API ----------------------------------------------------------

    def search(
        self,
        *,
        url: str | None = None,
        image: ImageSource | None = None,
        text: str | None = None,
        num_similar: int = 1,
        labels: bool = False,
    ) -> SearchResult:
        """Find images similar to a URL, an image or a text; ``labels`` adds COCO-YOLOv7 detections."""
        return self.search_query(
            Query(url=url, image=image, text=text, num_similar=num_similar, labels=labels)
        )

    def search_query(self, query: Query) -> SearchResult:
        """Run one validated ``Query`` (what ``search`` and each ``search_many`` item do)."""
        return self.send(self._request_for(query))

    def search_many(
        self, queries: Iterable[QuerySpec], *, max_workers: int = DEFAULT_MAX_WORKERS
    ) -> list[BatchItem]:
        """Run many searches concurrently; results keep the input order, errors stay with their item.

        An item is a ``Query`` or a mapping of its arguments (``{"image": path, "labels": True}``);
        a mapping is validated when its item runs, so a missing file fails that item alone.
        """
        queries = list(queries)
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        for position, query in enumerate(queries):
            if not isinstance(query, Query | Mapping):
                raise TypeError(
                    f"search_many takes Query objects or mappings of their arguments, "
                    f"got {type(query).__name__} at {position}"
                )
        if not queries:
            return []
        with ThreadPoolExecutor(max_workers=min(max_workers, len(queries))) as pool:
            return list(pool.map(self.run_query, queries))

    def build_request(
        self,
        *,
        url: str | None = None,
        image: ImageSource | None = None,
        text: str | None = None,
        num_similar: int = 1,
        labels: bool = False,
    ) -> SearchRequest:
        """Validate and encode a search without sending it (raises ``InvalidRequest``)."""
        return self._request_for(
            Query(url=url, image=image, text=text, num_similar=num_similar, labels=labels)
        )

    def send(self, request: SearchRequest) -> SearchResult:
        """Send a validated request, through the cache when one is configured."""
        cache = self.cache
        if cache is not None:
            cached = self._stores.call("response cache read", lambda: cache.get(self._cache_scope, request), None)
            if cached is not None:
                self._record(UsageEvent.CACHED)
                return cached
        if self._api_key is None:
            raise MissingApiKey(f"no API key found: {HOW_TO_SET_KEY}", status=None)
        try:
            result = self._send(request)
        except SimilarImagesError:
            self._record(UsageEvent.FAILED)
            raise
        # The answer is paid for: from here on nothing may turn it into an error.
        self._record(UsageEvent.SENT)
        if cache is not None:
            self._stores.call("response cache write", lambda: cache.put(self._cache_scope, request, result), None)
        return result

    def usage_today(self) -> DailyUsage:
        return self.usage.day()

    def close(self) -> None:
        self._session.close()
        if self.cache is not None:
            self._stores.call("response cache (close)", self.cache.close, None)
        self._stores.call("usage ledger (close)", self.usage.close, None)

    def __enter__(self) -> SimilarImagesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals -----------------------------------------------------------

    def _request_for(self, query: Query) -> SearchRequest:
        encoded = (
            encode_image(query.image, max_side=self.max_side, quality=self.jpeg_quality).data
            if query.image is not None
            else None
        )
        return SearchRequest(
            url=query.url,
            image=encoded,
            text=query.text,
            num_similar=query.num_similar,
            get_labels=LABELS_COCO_YOLOV7 if query.labels else None,
        )

    def run_query(self, spec: QuerySpec) -> BatchItem:
        """Run one ``Query`` (or a mapping of its arguments) and never raise: the result, or the error
        this item alone met.

        What each ``search_many`` item does; integrations that keep their own executor submit it.
        """
        built: Query | None = None
        try:
            built = query_from(spec)
            result = self.search_query(built)
        except SimilarImagesError as exc:
            return BatchItem(query=built or spec, error=exc)
        except Exception:
            # A bug must not take the rest of a batch with it; the traceback is logged once.
            logger.exception("unexpected error in a search")
            error = SimilarImagesError("unexpected error in the search (see the log)")
            return BatchItem(query=built or spec, error=error)
        return BatchItem(query=built, result=result)

    def _record(self, event: UsageEvent) -> None:
        self._stores.call("usage ledger write", lambda: self.usage.record(event), None)

    def _send(self, request: SearchRequest) -> SearchResult:
        assert self._api_key is not None
        # bytes, so http.client sends headers and body in one write (no Nagle/delayed-ACK stall).
        payload = json.dumps(request.to_json()).encode("utf-8")
        try:
            response = self._session.post(
                self.base_url + "/",
                data=payload,
                headers={API_KEY_HEADER: self._api_key},
                timeout=(self.timeouts.connect, self.timeouts.read),
            )
            content = response.content
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise transport_error(exc, self.base_url) from None
        logger.debug("POST %s %s -> %s", self.base_url, request.kind, response.status_code)
        return parse_response(response.status_code, content, labels_requested=request.labels_requested)

    @staticmethod
    def _connect_shared(
        cache: ResponseCache | str | Path | bool, usage: UsageLedger | str | Path | None
    ) -> SharedRedis | None:
        """The Redis of ``SIMAGES_CACHE_URL`` when a default store is wanted and it is set; else ``None``."""
        default_cache = cache is True or (isinstance(cache, str) and cache == "auto" and cache_enabled_by_env())
        if not (default_cache or (isinstance(usage, str) and usage == "auto")):
            return None
        location = shared_store_from_env()  # ValueError naming SIMAGES_CACHE_URL when malformed
        if location is None:
            return None
        # Imported here: redis is needed (the [redis] extra) only by those who set SIMAGES_CACHE_URL.
        try:
            from ._redis_stores import connect
        except ImportError:
            raise ValueError(
                f"{ENV_CACHE_URL} is set but the redis package is not installed: "
                "pip install 'simages-plugins[redis]'"
            ) from None

        logger.info("response cache and usage ledger: redis at %s", location.address)
        return connect(location)

    def _make_cache(
        self, cache: ResponseCache | str | Path | bool, ttl: float, shared: SharedRedis | None
    ) -> ResponseCache | None:
        if isinstance(cache, ResponseCache):
            return cache
        if cache is False or (cache == "auto" and not cache_enabled_by_env()):
            return None
        if cache is True or cache == "auto":
            if shared is not None:
                from ._redis_stores import RedisResponseCache

                return RedisResponseCache(shared, ttl=ttl)
            return ResponseCache(simages_home() / "responses", ttl=ttl)
        return ResponseCache(Path(cache), ttl=ttl)

    @staticmethod
    def _make_ledger(usage: UsageLedger | str | Path | None, shared: SharedRedis | None) -> UsageLedger:
        if isinstance(usage, UsageLedger):
            return usage
        if usage == "auto":
            if shared is not None:
                from ._redis_stores import RedisUsageLedger

                return RedisUsageLedger(shared)
            return UsageLedger(simages_home() / "usage")
        if usage is None:
            return UsageLedger()
        return UsageLedger(Path(usage))


class _StoreFailures:
    """Runs cache and ledger operations so that their failure is logged, never raised.

    A full disk, a locked or corrupt database must not fail a search that has
    already been answered (and billed): a failed read is a miss, a failed write is
    skipped. Each operation is logged once at WARNING with the reason, then at DEBUG.
    """

    def __init__(self) -> None:
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def call(self, what: str, operation: Callable[[], _T], fallback: _T) -> _T:
        try:
            return operation()
        except Exception as exc:  # any storage failure is bypassed, by design
            with self._lock:
                first = what not in self._warned
                self._warned.add(what)
            level = logging.WARNING if first else logging.DEBUG
            logger.log(level, "%s failed, carrying on without it: %s: %s", what, type(exc).__name__, exc)
            return fallback
