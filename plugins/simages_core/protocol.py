"""The Similar Images wire protocol, shared by the client and the local server.

Both sides validate requests and build/parse envelopes with these functions,
so they cannot disagree about the protocol. Everything here is pure: no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._exceptions import ApiError, DecodingError, InvalidRequest, SimilarImagesError, error_for_status
from ._models import Detection, SearchResult, SimilarImage

DEFAULT_API_URL = "https://simages.info"
LABELS_COCO_YOLOV7 = "coco_yolov7"
SUPPORTED_LABELS = (LABELS_COCO_YOLOV7,)
MIN_NUM_SIMILAR = 1
MAX_NUM_SIMILAR = 50
DEFAULT_NUM_SIMILAR = 1
QUERY_FIELDS = ("url", "image", "text")
API_KEY_HEADER = "x-api-key"
CORS_HEADERS: dict[str, str] = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "OPTIONS,POST",
}


@dataclass(frozen=True)
class SearchRequest:
    """A validated request: exactly one of ``url``, ``image`` (base64) or ``text``.

    Construction validates, so an instance is always a request the API accepts
    in form; ``from_json`` does the same for a decoded JSON body (server side).
    """

    url: str | None = None
    image: str | None = None
    text: str | None = None
    num_similar: int = DEFAULT_NUM_SIMILAR
    get_labels: str | None = None

    def __post_init__(self) -> None:
        check_request_fields(self.url, self.image, self.text, self.num_similar, self.get_labels)

    @property
    def kind(self) -> str:
        """Which query field is set: ``"url"``, ``"image"`` or ``"text"``."""
        return next(name for name in QUERY_FIELDS if getattr(self, name) is not None)

    @property
    def labels_requested(self) -> bool:
        return self.get_labels is not None

    def to_json(self) -> dict[str, Any]:
        """The JSON body to POST, with only the fields that are set."""
        body: dict[str, Any] = {self.kind: getattr(self, self.kind), "num_similar": self.num_similar}
        if self.get_labels is not None:
            body["get_labels"] = self.get_labels
        return body

    @classmethod
    def from_json(cls, payload: Any) -> SearchRequest:
        """Validate a decoded JSON request body; raises ``InvalidRequest`` naming the field."""
        if not isinstance(payload, Mapping):
            raise InvalidRequest("request body must be a JSON object")
        return cls(
            url=payload.get("url"),
            image=payload.get("image"),
            text=payload.get("text"),
            num_similar=payload.get("num_similar", DEFAULT_NUM_SIMILAR),
            get_labels=payload.get("get_labels"),
        )


ImageCheck = Callable[[object], None]
"""Checks a request's ``image`` value, raising ``InvalidRequest`` (field ``image``) when it is not acceptable."""


def _check_base64_field(value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("'image' must be a non-empty string", field="image")


def check_request_fields(
    url: object,
    image: object,
    text: object,
    num_similar: object,
    get_labels: object,
    *,
    check_image: ImageCheck = _check_base64_field,
) -> None:
    """The rules of a search request, the only copy of them.

    ``SearchRequest`` (the wire form, ``image`` is base64) and the client's ``Query``
    (``image`` is any image source: ``check_image`` says how to check it) both call
    this, so the client, the integrations and the server cannot disagree. Raises
    ``InvalidRequest`` whose ``field`` is ``url``, ``image``, ``text``,
    ``num_similar``, ``get_labels``, or ``url/image/text`` for the exactly-one rule.
    """
    given = [name for name, value in zip(QUERY_FIELDS, (url, image, text), strict=True) if value is not None]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        raise InvalidRequest(
            f"exactly one of 'url', 'image' or 'text' is required (got {found})",
            field="url/image/text",
        )
    name = given[0]
    if name == "image":
        check_image(image)
    else:
        value = url if name == "url" else text
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequest(f"'{name}' must be a non-empty string", field=name)
        if name == "url":
            try:
                parts = urlsplit(value)
                host = parts.hostname
            except ValueError:  # e.g. an unclosed IPv6 bracket
                host = None
            # Raw whitespace is never part of a URL (it would be percent-encoded): a typo, refused here.
            if host is None or parts.scheme not in ("http", "https") or any(c.isspace() for c in value):
                raise InvalidRequest("'url' must be an http or https URL with a host", field="url")
    # bool is an int subclass in Python but not an integer in JSON terms.
    if isinstance(num_similar, bool) or not isinstance(num_similar, int):
        raise InvalidRequest(
            f"'num_similar' must be an integer from {MIN_NUM_SIMILAR} to {MAX_NUM_SIMILAR}, "
            f"got {_describe(num_similar)}",
            field="num_similar",
        )
    if not MIN_NUM_SIMILAR <= num_similar <= MAX_NUM_SIMILAR:
        raise InvalidRequest(
            f"'num_similar' must be from {MIN_NUM_SIMILAR} to {MAX_NUM_SIMILAR}, got {num_similar}",
            field="num_similar",
        )
    if get_labels is not None and get_labels not in SUPPORTED_LABELS:
        raise InvalidRequest(
            f"'get_labels' must be {LABELS_COCO_YOLOV7!r} when given, got {_describe(get_labels)}",
            field="get_labels",
        )


def _describe(value: object) -> str:
    """A short, safe echo of a bad value: scalars as written (cut at 40 characters), containers by type."""
    if value is None or isinstance(value, (str, int, float)):
        text = repr(value) if not isinstance(value, int) or value.bit_length() < 128 else "a huge integer"
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"


# --- envelopes (server side builds, client side parses) ---------------------


def success_envelope(result: SearchResult) -> dict[str, Any]:
    """The documented success envelope; ``body`` is a JSON *string*."""
    return {"statusCode": 200, "body": json.dumps(result_to_body(result)), "headers": dict(CORS_HEADERS)}


def error_envelope(status: int, message: str) -> dict[str, Any]:
    """The documented error envelope."""
    return {"statusCode": status, "error": message, "headers": dict(CORS_HEADERS)}


def result_to_body(result: SearchResult) -> dict[str, Any]:
    """The decoded ``body`` object for a result (inverse of ``parse_body``)."""
    body: dict[str, Any] = {
        "info": dict(result.info),
        "images": [
            {"url": im.url, "score": im.score, "thumbnail_url": im.thumbnail_url, "id": im.id}
            for im in result.images
        ],
    }
    if result.labels_requested:
        body["annotations"] = [
            {
                "image_id": im.id,
                "height": im.height,
                "width": im.width,
                "annotations": [
                    {"name": d.name, "score": d.score, "box": list(d.box), "category_id": d.category_id}
                    for d in (im.detections or ())
                ],
            }
            for im in result.images
        ]
    return body


def parse_response(http_status: int, content: bytes, *, labels_requested: bool) -> SearchResult:
    """Turn an HTTP answer into a ``SearchResult`` or raise the matching error.

    Handles an HTTP error status, a non-200 ``statusCode`` inside an HTTP 200
    envelope, a ``body`` that is a JSON string or an object, and (tolerantly) a
    bare body without an envelope, as an API gateway in proxy mode would send.
    Whatever the bytes, the only exceptions are ``SimilarImagesError`` subclasses:
    one malformed answer must fail its own query, never a whole batch.
    """
    try:
        return _parse_response(http_status, content, labels_requested=labels_requested)
    except SimilarImagesError:
        raise
    except RecursionError:
        raise DecodingError(_TOO_DEEP) from None
    except Exception as exc:  # any other surprise in a hostile answer
        raise DecodingError(f"response could not be parsed ({type(exc).__name__}: {exc!s:.160})") from None


_TOO_DEEP = "response JSON is nested too deeply to be the documented shape"


def _parse_response(http_status: int, content: bytes, *, labels_requested: bool) -> SearchResult:
    too_deep = False
    try:
        envelope = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        envelope = None
    except RecursionError:
        envelope, too_deep = None, True
    if http_status != 200:
        raise _error_from(http_status, envelope, content)
    if too_deep:
        raise DecodingError(_TOO_DEEP)
    if not isinstance(envelope, dict):
        raise DecodingError(f"response is not a JSON object: {_snippet(content)!r}")
    status = envelope.get("statusCode", 200)
    if status != 200:
        if not isinstance(status, int) or isinstance(status, bool):
            raise DecodingError(f"'statusCode' must be an integer, got {status!r:.60}")
        raise _error_from(status, envelope, content)
    if "body" in envelope:
        body: Any = envelope["body"]
        if isinstance(body, (str, bytes)):
            try:
                body = json.loads(body)
            except ValueError as exc:
                raise DecodingError(f"'body' is a string but not valid JSON: {exc}") from None
    elif "images" in envelope:
        body = envelope
    else:
        raise DecodingError("response has neither a 'body' field nor 'images'")
    return parse_body(body, labels_requested=labels_requested)


def _error_from(status: int, envelope: Any, content: bytes) -> ApiError:
    message = None
    if isinstance(envelope, dict):
        message = envelope.get("error") or envelope.get("message")
    if not isinstance(message, str) or not message:
        message = _snippet(content) or f"HTTP {status}"
    return error_for_status(status, message[:500])


def _snippet(content: bytes, limit: int = 200) -> str:
    return content[:limit].decode("utf-8", "replace").strip()


def parse_body(body: Any, *, labels_requested: bool) -> SearchResult:
    """Validate a decoded ``body`` and join its annotations onto its images."""
    if not isinstance(body, dict):
        raise DecodingError(f"'body' must be a JSON object, got {type(body).__name__}")
    raw_images = _require(body, "images", list, "body")
    info = body.get("info") or {}
    if not isinstance(info, dict):
        raise DecodingError("'body.info' must be an object")
    Labels = tuple[tuple[Detection, ...] | None, int | None, int | None]
    labels_by_id: dict[str, Labels] = {}
    raw_annotations = body.get("annotations")
    if raw_annotations is not None:
        if not isinstance(raw_annotations, list):
            raise DecodingError("'body.annotations' must be a list")
        for i, entry in enumerate(raw_annotations):
            where = f"body.annotations[{i}]"
            if not isinstance(entry, dict):
                raise DecodingError(f"'{where}' must be an object")
            image_id = _id(entry.get("image_id"), f"{where}.image_id")
            found = tuple(
                _detection(d, f"{where}.annotations[{j}]")
                for j, d in enumerate(_require(entry, "annotations", list, where))
            )
            labels_by_id[image_id] = (
                found,
                _optional_size(entry.get("width"), f"{where}.width"),
                _optional_size(entry.get("height"), f"{where}.height"),
            )
    images = []
    for i, raw in enumerate(raw_images):
        where = f"body.images[{i}]"
        if not isinstance(raw, dict):
            raise DecodingError(f"'{where}' must be an object")
        image_id = _id(raw.get("id"), f"{where}.id")
        dets, width, height = labels_by_id.get(image_id, (None, None, None))
        images.append(
            SimilarImage(
                url=_require(raw, "url", str, where),
                score=_number(raw.get("score"), f"{where}.score"),
                thumbnail_url=_require(raw, "thumbnail_url", str, where),
                id=image_id,
                detections=dets,
                width=width,
                height=height,
            )
        )
    images.sort(key=lambda im: im.score, reverse=True)  # stable: ties keep the API's order
    return SearchResult(images=tuple(images), info=info, labels_requested=labels_requested)


def _require(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise DecodingError(f"'{where}.{key}' is missing")
    value = obj[key]
    if not isinstance(value, kind):
        raise DecodingError(f"'{where}.{key}' must be a {kind.__name__}, got {value!r:.60}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DecodingError(f"'{where}' must be a finite number, got {value!r:.60}")
    return float(value)


def _id(value: Any, where: str) -> str:
    # The docs do not say whether ids are numbers or strings; we normalise to str
    # so that images and annotations join whichever the API sends.
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise DecodingError(f"'{where}' must be a non-empty string or integer, got {value!r:.60}")
    return str(value)


def _optional_size(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise DecodingError(f"'{where}' must be a positive number, got {value!r:.60}")
    return int(value)


def _detection(raw: Any, where: str) -> Detection:
    if not isinstance(raw, dict):
        raise DecodingError(f"'{where}' must be an object")
    box = _require(raw, "box", list, where)
    if len(box) != 4:
        raise DecodingError(f"'{where}.box' must have 4 numbers, got {len(box)}")
    category_id = raw.get("category_id")
    if isinstance(category_id, bool) or not isinstance(category_id, int):
        raise DecodingError(f"'{where}.category_id' must be an integer, got {category_id!r:.60}")
    x0, y0, x1, y1 = (_number(v, f"{where}.box") for v in box)
    return Detection(
        name=_require(raw, "name", str, where),
        score=_number(raw.get("score"), f"{where}.score"),
        box=(x0, y0, x1, y1),
        category_id=category_id,
    )
