"""The panel's answers, cached per query in FiftyOne's execution cache, and the requests it sends.

An answer is what the find operator computes for the same query (``find_similar_with``: the
search, merged, near-duplicates collapsed, copies of the dataset's samples marked), cached under
the query's key with FiftyOne's ``execution_cache`` (``hybrid``: in the App server's memory
first, then the dataset's execution store, so an answer survives an App restart and is deleted
with its dataset). Stepping back to a sample is then a memory read, and "Import selected" takes
the ticked results from the very answer the user looked at rather than searching again.

The client is made only on a cache miss; its usage ledger is wrapped so that the panel counts
the requests it sent itself, not those of every process sharing the ledger.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import replace
from typing import Any

from fiftyone.operators import execution_cache

from simages_core import (
    Detection,
    SimilarImage,
    SimilarImagesClient,
    UsageLedger,
    budget_for,
    redact_url,
)

from ._forms import client_from_ctx, secret
from ._outcomes import FindSimilarResult, QueryLabel, QueryRegion, RankedImage
from ._panel_queries import PanelQuery
from ._params import CopyOptions
from ._search import SECRET_API_URL, find_similar_with

ANSWER_TTL_SECONDS = 24 * 3600
"""As long as the core keeps a response: a day-old answer is searched again."""
ANSWERS_IN_MEMORY = 256


class CountingLedger(UsageLedger):
    """The client's own ledger, plus a count of the requests that went out through this client."""

    def __init__(self, inner: UsageLedger) -> None:
        super().__init__()
        self.inner = inner
        self.requests = 0
        self._count_lock = threading.Lock()

    def record(self, event: Any, day: Any = None) -> None:
        self.inner.record(event, day)
        # "sent" and "failed" both reached the API (or tried to); "cached" did not.
        if getattr(event, "value", event) in ("sent", "failed"):
            with self._count_lock:
                self.requests += 1

    def day(self, day: Any = None) -> Any:
        return self.inner.day(day)

    def history(self, days: int = 7) -> Any:
        return self.inner.history(days)

    def close(self) -> None:
        self.inner.close()


class PanelCounts:
    """Requests sent per open panel, and today's free requests as last read, in the App server's memory.

    Kept here rather than in the panel's state: the App runs a panel's events concurrently, each
    with the state it had when it started, so a count in the state would lose increments.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: dict[str, int] = {}
        self._free_left: dict[str, int] = {}

    def add(self, panel_id: str, requests: int, free_left: int | None = None) -> None:
        with self._lock:
            self._sent[panel_id] = self._sent.get(panel_id, 0) + requests
            if free_left is not None:
                self._free_left[panel_id] = free_left

    def usage(self, panel_id: str) -> tuple[int, int | None]:
        """(requests the panel sent, today's free requests left as it last read them)."""
        with self._lock:
            return self._sent.get(panel_id, 0), self._free_left.get(panel_id)


COUNTS = PanelCounts()


class PanelSearcher:
    """One panel event's way to the API: a client for the plugin's secrets, made only when needed."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._client: SimilarImagesClient | None = None
        self._ledger: CountingLedger | None = None

    @property
    def api_url(self) -> str:
        """The server answers come from (part of the cache key; credentials never shown)."""
        return redact_url(secret(self._ctx, SECRET_API_URL) or "default")

    def client(self) -> SimilarImagesClient:
        """The client (``ParamError`` without a key, as the forms say it)."""
        if self._client is None:
            client = client_from_ctx(self._ctx)
            self._ledger = CountingLedger(client.usage)
            client.usage = self._ledger
            self._client = client
        return self._client

    @property
    def requests(self) -> int:
        """Requests this searcher sent (``0`` when every answer came from a cache)."""
        return self._ledger.requests if self._ledger is not None else 0

    def free_left(self) -> int | None:
        """Today's free requests left, from the core's usage ledger; ``None`` if no client was needed."""
        if self._client is None:
            return None
        return budget_for(0, self._client.usage).free_left

    def find(self, query: PanelQuery) -> FindSimilarResult:
        """Search (with the find operator's code and copy options) and mark copies of the dataset's samples."""
        return find_similar_with(self.client(), self._ctx.dataset, query.params, CopyOptions())

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _answer_key(ctx: Any, query: PanelQuery, searcher: PanelSearcher) -> tuple[str, ...]:
    # The memory cache is shared by every dataset, so the dataset is part of the key.
    p = query.params
    return (str(ctx.dataset._doc.id), searcher.api_url, query.key, str(p.num_similar), str(p.labels))


def answer_to_json(result: FindSimilarResult) -> dict[str, Any]:
    return {
        "images": [_ranked_to_json(r) for r in result.images],
        "queries": list(result.queries),
        "errors": list(result.errors),
        "labels": result.labels,
        "copies_collapsed": result.copies_collapsed,
        "screened": result.screened,
        "unscreened_samples": result.unscreened_samples,
    }


def answer_from_json(data: dict[str, Any]) -> FindSimilarResult:
    return FindSimilarResult(
        images=tuple(_ranked_from_json(r) for r in data["images"]),
        queries=tuple(data["queries"]),
        errors=tuple(data["errors"]),
        labels=bool(data["labels"]),
        copies_collapsed=bool(data["copies_collapsed"]),
        screened=bool(data["screened"]),
        unscreened_samples=int(data["unscreened_samples"]),
    )


@execution_cache(
    residency="hybrid",
    ttl=ANSWER_TTL_SECONDS,
    max_size=ANSWERS_IN_MEMORY,
    key_fn=_answer_key,
    store_name="simages_panel_answers",
    serialize=answer_to_json,
    deserialize=answer_from_json,
    version=1,
)
def cached_answer(ctx: Any, query: PanelQuery, searcher: PanelSearcher) -> FindSimilarResult:
    """The answer to ``query``: from the cache, else searched (the result is cached unless part failed)."""
    return searcher.find(query)


class _KeyLock:
    """A lock per answer being searched (a class: plain locks cannot be weakly referenced)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


_searching: weakref.WeakValueDictionary[tuple[str, ...], _KeyLock] = weakref.WeakValueDictionary()
_searching_guard = threading.Lock()


def answer_for(ctx: Any, query: PanelQuery, searcher: PanelSearcher) -> FindSimilarResult:
    """The cached answer; one where some of the queries failed is not kept, so asking again retries them.

    The App runs panel events concurrently (a number typed, then the field left, are two events):
    the same query asked twice at once waits for the first answer instead of sending a second request.
    """
    key = _answer_key(ctx, query, searcher)
    with _searching_guard:
        held = _searching.get(key)
        if held is None:
            held = _searching[key] = _KeyLock()
    with held.lock:
        answer = cached_answer(ctx, query, searcher)
    if answer.errors:
        cached_answer.clear_cache(ctx, query, searcher)
    return answer


def picked_results(answer: FindSimilarResult, picked: set[str]) -> FindSimilarResult:
    """The answer narrowed to the ticked results (by API image id), in their order."""
    return replace(answer, images=tuple(r for r in answer.images if r.image.id in picked), errors=())


# --- JSON forms of the typed results (the execution store keeps JSON) ------------------------------


def _ranked_to_json(r: RankedImage) -> dict[str, Any]:
    image = r.image
    region = r.query.region
    return {
        "image": {
            "url": image.url,
            "score": image.score,
            "thumbnail_url": image.thumbnail_url,
            "id": image.id,
            "detections": None
            if image.detections is None
            else [[d.name, d.score, list(d.box), d.category_id] for d in image.detections],
            "width": image.width,
            "height": image.height,
            "copies": list(image.copies),
        },
        "rank": r.rank,
        "query": {
            "kind": r.query.kind,
            "value": r.query.value,
            "region": region.to_dict() if region else None,
        },
        "hits": r.hits,
        "copy_of": r.copy_of,
    }


def _ranked_from_json(data: dict[str, Any]) -> RankedImage:
    i = data["image"]
    detections = i["detections"]
    image = SimilarImage(
        url=i["url"],
        score=float(i["score"]),
        thumbnail_url=i["thumbnail_url"],
        id=i["id"],
        detections=None
        if detections is None
        else tuple(
            Detection(name, float(score), tuple(box), int(cat)) for name, score, box, cat in detections
        ),
        width=i["width"],
        height=i["height"],
        copies=tuple(i["copies"]),
    )
    q = data["query"]
    region = q["region"]
    query = QueryLabel(
        q["kind"],
        q["value"],
        None
        if region is None
        else QueryRegion(
            region["sample_id"],
            region["field"],
            region["label_id"],
            region["label"],
            tuple(region["bounding_box"]),
        ),
    )
    return RankedImage(
        image=image, rank=int(data["rank"]), query=query, hits=int(data["hits"]), copy_of=data["copy_of"]
    )
