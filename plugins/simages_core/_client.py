"""``SimilarImagesClient``: one pooled HTTP session, retries, cache and usage, typed results.

This is the only module that talks HTTP. Transport exceptions from requests and
urllib3 are mapped to ``simages_core`` exceptions in ``_send`` and nowhere else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import __version__
from ._cache import DEFAULT_TTL_SECONDS, ResponseCache
from ._config import (
    HOW_TO_SET_KEY,
    RetryPolicy,
    Timeouts,
    cache_enabled_by_env,
    cache_ttl_from_env,
    resolve_api_key,
    resolve_base_url,
    simages_home,
)
from ._encoding import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_SIDE, ImageSource, encode_image
from ._exceptions import ConnectError, MissingApiKey, RequestTimeout, SimilarImagesError, TransportError
from ._models import SearchResult
from ._usage import DailyUsage, UsageEvent, UsageLedger
from .protocol import API_KEY_HEADER, LABELS_COCO_YOLOV7, SearchRequest, parse_response

logger = logging.getLogger("simages_core")

DEFAULT_MAX_WORKERS = 8


@dataclass(frozen=True)
class Query:
    """One search for ``search_many``: exactly one of ``url``, ``image`` or ``text``.

    ``image`` takes anything the encoder reads (path, bytes, PIL image, array);
    it is encoded in the worker thread, so encoding runs concurrently too.
    """

    url: str | None = None
    image: ImageSource | None = None
    text: str | None = None
    num_similar: int = 1
    labels: bool = False


@dataclass(frozen=True)
class BatchItem:
    """The outcome of one ``Query``: a result, or the error that query alone met."""

    query: Query
    result: SearchResult | None = None
    error: SimilarImagesError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _CappedRetry(Retry):
    """urllib3's Retry, but a server's ``Retry-After`` cannot make us sleep for hours."""

    max_retry_after: float = 60.0

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.max_retry_after)

    def new(self, **kw: Any) -> _CappedRetry:
        retry = super().new(**kw)
        retry.max_retry_after = self.max_retry_after
        return retry


class SimilarImagesClient:
    """A client for the Similar Images API (simages.info) or the local server.

    ``api_key`` defaults to ``SIMAGES_API_KEY``, ``TERNAUS_TOKEN`` or
    ``~/.ternaus/ternaus.json``; ``base_url`` to ``SIMAGES_API_URL`` or
    https://simages.info. ``cache`` is ``"auto"`` (on unless ``SIMAGES_CACHE=0``,
    in ``SIMAGES_HOME``), ``True``/``False``, a folder, or a ``ResponseCache``.
    ``usage`` is ``"auto"`` (a ledger on disk in ``SIMAGES_HOME``), ``None``
    (in memory) or a ``UsageLedger``. Thread-safe; use as a context manager or
    call ``close()``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen dataclass, safe as a default
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008
        cache: ResponseCache | str | Path | bool = "auto",
        usage: UsageLedger | str | None = "auto",
        max_side: int = DEFAULT_MAX_SIDE,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
        pool_size: int = 32,
    ) -> None:
        self._api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.timeouts = timeouts
        self.retry = retry
        self.max_side = max_side
        self.jpeg_quality = jpeg_quality
        self.cache = self._make_cache(cache)
        self.usage = self._make_ledger(usage)
        self._session = requests.Session()
        self._session.headers.update(
            {"content-type": "application/json", "user-agent": f"simages-plugins/{__version__}"}
        )
        max_retry = _CappedRetry(
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
        return self.send(
            self.build_request(url=url, image=image, text=text, num_similar=num_similar, labels=labels)
        )

    def search_many(
        self, queries: Iterable[Query], *, max_workers: int = DEFAULT_MAX_WORKERS
    ) -> list[BatchItem]:
        """Run many searches concurrently; results keep the input order, errors stay with their query."""
        queries = list(queries)
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        if not queries:
            return []
        with ThreadPoolExecutor(max_workers=min(max_workers, len(queries))) as pool:
            return list(pool.map(self._run_query, queries))

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
        encoded = (
            encode_image(image, max_side=self.max_side, quality=self.jpeg_quality).data
            if image is not None
            else None
        )
        return SearchRequest(
            url=url,
            image=encoded,
            text=text,
            num_similar=num_similar,
            get_labels=LABELS_COCO_YOLOV7 if labels else None,
        )

    def send(self, request: SearchRequest) -> SearchResult:
        """Send a validated request, through the cache when one is configured."""
        if self.cache is not None:
            cached = self.cache.get(self.base_url, request)
            if cached is not None:
                self.usage.record(UsageEvent.CACHED)
                return cached
        if self._api_key is None:
            raise MissingApiKey(f"no API key found: {HOW_TO_SET_KEY}", status=None)
        try:
            result = self._send(request)
        except SimilarImagesError:
            self.usage.record(UsageEvent.FAILED)
            raise
        self.usage.record(UsageEvent.SENT)
        if self.cache is not None:
            self.cache.put(self.base_url, request, result)
        return result

    def usage_today(self) -> DailyUsage:
        return self.usage.day()

    def close(self) -> None:
        self._session.close()
        if self.cache is not None:
            self.cache.close()
        self.usage.close()

    def __enter__(self) -> SimilarImagesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals -----------------------------------------------------------

    def _run_query(self, query: Query) -> BatchItem:
        try:
            result = self.search(
                url=query.url,
                image=query.image,
                text=query.text,
                num_similar=query.num_similar,
                labels=query.labels,
            )
        except SimilarImagesError as exc:
            return BatchItem(query=query, error=exc)
        return BatchItem(query=query, result=result)

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
        except requests.exceptions.Timeout as exc:
            raise RequestTimeout(f"no answer from {self.base_url} in time: {_reason(exc)}") from None
        except requests.exceptions.ConnectionError as exc:
            if "timed out" in str(exc).lower():
                raise RequestTimeout(f"no answer from {self.base_url} in time: {_reason(exc)}") from None
            raise ConnectError(f"cannot reach {self.base_url}: {_reason(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise TransportError(f"request to {self.base_url} failed: {_reason(exc)}") from None
        logger.debug("POST %s %s -> %s", self.base_url, request.kind, response.status_code)
        return parse_response(response.status_code, content, labels_requested=request.labels_requested)

    def _make_cache(self, cache: ResponseCache | str | Path | bool) -> ResponseCache | None:
        if isinstance(cache, ResponseCache):
            return cache
        if cache is False or (cache == "auto" and not cache_enabled_by_env()):
            return None
        ttl = cache_ttl_from_env(DEFAULT_TTL_SECONDS)
        if cache is True or cache == "auto":
            return ResponseCache(simages_home() / "responses", ttl=ttl)
        return ResponseCache(Path(cache), ttl=ttl)

    @staticmethod
    def _make_ledger(usage: UsageLedger | str | None) -> UsageLedger:
        if isinstance(usage, UsageLedger):
            return usage
        if usage == "auto":
            return UsageLedger(simages_home() / "usage")
        if usage is None:
            return UsageLedger()
        return UsageLedger(Path(usage))


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
