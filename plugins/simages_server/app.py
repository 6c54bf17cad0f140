"""The local server's WSGI app: ``POST /`` exactly as simages.info, plus image, thumbnail and health routes.

Request validation and envelopes come from ``simages_core.protocol``, the same
code the client uses, so the two cannot disagree. Bad input of any kind is a
400 with the documented error body; only a bug is a 500. A new index generation
is loaded in the background and swapped in between requests (``serving_state.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from werkzeug.wrappers import Request, Response

from simages_core import InvalidRequest, SearchResult, SimilarImage, open_image
from simages_core.fetch import RedactingFilter, redact_text
from simages_core.protocol import (
    API_KEY_HEADER,
    CORS_HEADERS,
    SearchRequest,
    error_envelope,
    success_envelope,
)

from .embedders import DescriptorEmbedder, ImageEmbedder
from .fetch import Fetcher, FetchPolicy, fetch_query_image
from .index import ImageIndex
from .keys import QuotaStore, QuotaUnavailable, digest, open_quota
from .own_urls import OwnOrigins
from .serving_state import NO_LABELS as NO_LABELS  # re-exported: tests and callers import it from here
from .serving_state import IndexFollower, ServingState
from .text_search import TextIndex

logger = logging.getLogger("simages_server")
logger.addFilter(RedactingFilter())  # no URL credentials in any line, tracebacks included

# The documented messages, so clients see what simages.info would say.
MISSING_KEY = "Missing an API key"
INVALID_KEY = "Invalid API key"


def quota_message(limit: int) -> str:
    """The 402 message: simages.info's says to contact ternaus.com; ours names this server's limit and its option."""
    return (
        f"You exceeded this server's daily limit of {limit} successful requests per API key; it resets at "
        "00:00 UTC. The limit is set by `simages-server serve --daily-limit N` (0: no limit)."
    )


# Not a documented message (simages.info has one quota store): what a client sees when ours is down.
QUOTA_UNAVAILABLE = "quota store unavailable: the request was not run, try again shortly"
_DATA_URI = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class ServerSettings:
    key_digests: frozenset[str]
    quota_path: Path | str  # the SQLite file, or a redis://, rediss:// or unix:// URL replicas share
    daily_limit: int = 0
    """Successful requests per key per UTC day; 0: no limit (a team's own server does not ration its users)."""
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    max_body_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    latency_ms: float = 0.0
    public_url: str | None = None
    own_origins: OwnOrigins = field(default_factory=lambda: OwnOrigins(frozenset()))
    """The names and ports this server is reached at (``OwnOrigins.for_server``); ``public_url`` is added."""
    info: dict[str, Any] = field(default_factory=lambda: {"url": "https://ternaus.com"})


class SimilarImagesApp:
    def __init__(
        self,
        index: ImageIndex,
        settings: ServerSettings,
        embedder: ImageEmbedder | None = None,
        detector_info: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder or DescriptorEmbedder()
        # Labels are computed at index time; the detector is reported, not run, by the server.
        self.detector_info = detector_info
        if self.embedder.name != index.embedder:
            raise ValueError(
                f"index was built with {index.embedder}, server embedder is {self.embedder.name}"
            )
        self.quota: QuotaStore = open_quota(settings.quota_path, settings.daily_limit)
        self.fetcher = Fetcher(settings.fetch, pool_size=16)  # url queries, pooled across threads
        self._own = settings.own_origins.including(settings.public_url)
        self._follower = IndexFollower(index, self.embedder.name)

    @property
    def index(self) -> ImageIndex:
        """The generation new requests are answered from."""
        return self._follower.state.index

    @property
    def text_index(self) -> TextIndex:
        return self._follower.state.text_index

    # --- following the index folder ------------------------------------------

    def reload_index(self) -> bool:
        """Load the index folder's current generation if it changed, and swap it in; True if swapped
        (``IndexFollower.reload``)."""
        return self._follower.reload()

    def watch_index(self, interval: float) -> threading.Thread:
        """Look for a new generation every ``interval`` seconds in a background thread (one stat a look)."""
        return self._follower.watch(interval)

    def stop_watching(self) -> None:
        self._follower.stop()

    # --- WSGI ----------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        started = time.perf_counter()
        note: dict[str, Any] = {}
        state = self._follower.state  # this request's generation, whatever is swapped in meanwhile
        try:
            response = self._route(request, note, state)
        except Exception:  # a bug, never bad input: log it, answer 500, keep serving
            logger.exception("internal error on %s %s", request.method, request.path)
            response = _json(error_envelope(500, "internal server error"), 500)
        extras = " ".join(f"{k}={v}" for k, v in note.items())
        logger.info(
            "%s %s %d %.1fms %s", request.method, request.path, response.status_code,
            (time.perf_counter() - started) * 1000, extras,
        )  # fmt: skip
        return response(environ, start_response)

    def _route(self, request: Request, note: dict[str, Any], state: ServingState) -> Response:
        if request.method == "OPTIONS":
            return _preflight()
        if request.path == "/health" and request.method == "GET":
            models = {"embedder": self.embedder.info(), "detector": self.detector_info}
            health = {
                "status": "ok", "images": len(state.index), "embedder": state.index.embedder, "models": models,
                "labels": state.labels, "index": state.health(),
            }  # fmt: skip
            health["quota"] = self.quota.description  # "sqlite" or "redis at host:port", never a password
            return _json(_without_credentials(health), 200)  # model or API URLs may carry userinfo
        if self.settings.latency_ms:
            time.sleep(self.settings.latency_ms / 1000)  # simulated network latency (benchmarks, demos)
        if request.path == "/" and request.method == "POST":
            return self._search(request, note, state)
        if request.method in ("GET", "HEAD"):
            match = re.fullmatch(r"/images/([0-9a-f]{16})", request.path)
            if match and (path := state.index.image_path(match.group(1))) is not None and path.is_file():
                return _file(path, request)
            match = re.fullmatch(r"/thumbnails/([0-9a-f]{16})\.webp", request.path)
            if match and (path := state.index.thumbnail_path(match.group(1))) is not None and path.is_file():
                return _file(path, request, "image/webp")
            return _json(error_envelope(404, f"not found: {request.path}"), 404)
        return _json(error_envelope(405, f"{request.method} is not allowed on {request.path}"), 405)

    # --- search --------------------------------------------------------------

    def _search(self, request: Request, note: dict[str, Any], state: ServingState) -> Response:
        key = request.headers.get(API_KEY_HEADER, "").strip()
        if not key:
            return _json(error_envelope(401, MISSING_KEY), 401)
        key_digest = digest(key)
        note["key"] = "sha256:" + key_digest[:8]
        if key_digest not in self.settings.key_digests:
            return _json(error_envelope(403, INVALID_KEY), 403)
        try:
            search = SearchRequest.from_json(self._read_json(request))
        except InvalidRequest as exc:
            return _json(error_envelope(400, exc.message), 400)
        note.update(kind=search.kind, n=search.num_similar, labels=int(search.labels_requested))
        try:
            reserved = self.quota.reserve(key_digest)
        except QuotaUnavailable as exc:  # fail closed: never serve a request we cannot meter
            logger.warning("%s", exc)
            return _json(error_envelope(503, QUOTA_UNAVAILABLE), 503)
        if not reserved:
            return _json(error_envelope(402, quota_message(self.quota.limit)), 402)
        try:
            result = self._answer(search, request, state)
        except InvalidRequest as exc:
            self._release(key_digest)
            return _json(error_envelope(400, exc.message), 400)
        except BaseException:
            self._release(key_digest)
            raise
        note["found"] = len(result.images)
        return _json(success_envelope(result), 200)

    def _release(self, key_digest: str) -> None:
        """Give a failed request's unit back; if the store is down the unit stays used (closed, not open)."""
        try:
            self.quota.release(key_digest)
        except QuotaUnavailable as exc:
            logger.warning("a failed request's unit was not given back: %s", exc)

    def _read_json(self, request: Request) -> Any:
        cap = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > cap:
            raise InvalidRequest(f"request body is larger than {cap:,} bytes")
        raw = request.stream.read(cap + 1)
        if len(raw) > cap:
            raise InvalidRequest(f"request body is larger than {cap:,} bytes")
        if not raw.strip():
            raise InvalidRequest("request body is empty: send a JSON object with 'url', 'image' or 'text'")
        try:
            return json.loads(raw, parse_constant=_no_constants)
        except RecursionError:  # json's C scanner recurses per level: 50,000 '[' would be a 500
            raise InvalidRequest("request body is nested too deeply to be a search request") from None
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("request body is not valid JSON") from None

    def _answer(self, search: SearchRequest, request: Request, state: ServingState) -> SearchResult:
        k = search.num_similar
        index = state.index
        if search.text is not None:
            hits = self._text_hits(search.text, k, state)
        else:
            hits = index.nearest(self._query_vector(search, request, index), k)
        base = (self.settings.public_url or request.host_url).rstrip("/")
        images = []
        for position, score in hits:
            record = index.records[position]
            labels = search.labels_requested
            images.append(
                SimilarImage(
                    url=f"{base}/images/{record.id}",
                    score=round(score, 6),
                    thumbnail_url=f"{base}/thumbnails/{record.id}.webp",
                    id=record.id,
                    # Asked for labels, an unlabelled image gets an empty list, never invented boxes.
                    detections=(record.detections or ()) if labels else None,
                    width=record.width if labels else None,
                    height=record.height if labels else None,
                )
            )
        return SearchResult(
            images=tuple(images), info=dict(self.settings.info), labels_requested=search.labels_requested
        )

    def _query_vector(self, search: SearchRequest, request: Request, index: ImageIndex) -> np.ndarray:
        if search.url is not None:
            own = self._own_image_position(search.url, request, index)
            if own is not None:
                return np.asarray(index.embeddings[own], np.float32)
            data = fetch_query_image(self.fetcher, search.url)
        else:
            assert search.image is not None
            data = _decode_base64(search.image)
        image = open_image(data, max_pixels=self.settings.max_image_pixels)
        return self.embedder.embed_images([image])[0]

    def _own_image_position(self, url: str, request: Request, index: ImageIndex) -> int | None:
        """A URL of this server's own image or thumbnail is looked up, never fetched (no request to
        ourselves), under any name the server is reached by, or the ``Host`` this client used."""
        image_id = self._own.image_id(url, also=(request.host,))
        if image_id is None:
            return None
        position = index.position(image_id)
        if position is None:
            raise InvalidRequest(f"'url' names an image this server does not have: {image_id}", field="url")
        return position

    def _text_hits(self, text: str, k: int, state: ServingState) -> list[tuple[int, float]]:
        if self.embedder.supports_text:  # CLIP: text and images share one space
            return state.index.nearest(self.embedder.embed_texts([text])[0], k)
        return state.text_index.top(text, k)


def _no_constants(name: str) -> Any:
    raise InvalidRequest(f"request body is not valid JSON: {name} is not a JSON value")


def _without_credentials(value: Any) -> Any:
    """Every string inside ``value`` with URL credentials redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _without_credentials(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_credentials(item) for item in value]
    return value


def _decode_base64(data: str) -> bytes:
    data = _DATA_URI.sub("", data.strip(), count=1)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("'image' is not valid base64", field="image") from None


def _headers() -> dict[str, str]:
    return {**CORS_HEADERS, "Access-Control-Allow-Headers": "content-type, x-api-key"}


def _json(payload: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json", headers=_headers())


def _preflight() -> Response:
    return Response(b"", status=200, headers={**_headers(), "Access-Control-Max-Age": "86400"})


def _file(path: Path, request: Request, mimetype: str | None = None) -> Response:
    import mimetypes

    kind = mimetype or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = Response(path.read_bytes(), mimetype=kind, headers=_headers())
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
