"""Pure logic of a search: validating what the user asked, merging several answers, filtering labels.

No FiftyOne and no network here, so every rule is a unit test away.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

from simages_core import MAX_NUM_SIMILAR, Detection, SearchResult, SimilarImage

SOURCES = ("selected", "current_sample", "url", "text", "upload")
"""Where a query comes from: selected samples, the sample open in the modal, a URL, a text, a file."""

SOURCE_LABELS = {
    "selected": "Selected samples",
    "current_sample": "Sample in the modal",
    "url": "Image URL",
    "text": "Text prompt",
    "upload": "Uploaded image",
}


class ParamError(ValueError):
    """A parameter the user gave cannot be used; ``field`` names the form input to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class QueryLabel:
    """What a query was, as stored in ``simages_query``: ``sample:<id>``, ``url:<url>``, ``text:<t>``."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class RankedImage:
    """One image of the merged answer: its best score over all queries, and the query that gave it."""

    image: SimilarImage
    rank: int
    """1-based, in descending score order."""
    query: QueryLabel
    hits: int = 1
    """How many of the queries returned this image."""

    @property
    def score(self) -> float:
        return self.image.score


@dataclass(frozen=True)
class ClassFilter:
    """Which detections to keep: an optional set of class names and a minimum confidence."""

    classes: frozenset[str] | None = None
    min_confidence: float = 0.0

    def keep(self, detection: Detection) -> bool:
        if detection.score < self.min_confidence:
            return False
        return self.classes is None or detection.name in self.classes


@dataclass(frozen=True)
class SearchParams:
    """A validated search, independent of where it was asked (App form or Python call)."""

    source: str
    num_similar: int = 10
    labels: bool = False
    text: str | None = None
    url: str | None = None
    image: bytes | None = None
    image_name: str | None = None
    sample_ids: tuple[str, ...] = field(default_factory=tuple)


# --- validation ---------------------------------------------------------------------------------


def check_num_similar(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError("num_similar", f"num_similar must be a whole number from 1 to {MAX_NUM_SIMILAR}")
    if not math.isfinite(value) or int(value) != value or not 1 <= value <= MAX_NUM_SIMILAR:
        raise ParamError("num_similar", f"num_similar must be from 1 to {MAX_NUM_SIMILAR}, got {value}")
    return int(value)


def check_url(url: object) -> str:
    """An absolute http(s) URL with a host, stripped; anything else is a ``ParamError``."""
    if not isinstance(url, str) or not url.strip():
        raise ParamError("url", "enter the URL of an image (http:// or https://)")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ParamError("url", f"not an http(s) image URL: {url!r}")
    return url


def check_text(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ParamError("text", "enter a text prompt, e.g. 'a cat on a sofa'")
    return text.strip()


def decode_upload(content: object) -> bytes:
    """The bytes of an uploaded file from the App (base64, optionally a ``data:`` URL)."""
    if isinstance(content, (bytes, bytearray)):
        return bytes(content)
    if not isinstance(content, str) or not content.strip():
        raise ParamError("upload", "choose an image file to upload")
    payload = content.split("base64,", 1)[1] if content.startswith("data:") else content
    try:
        data = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        raise ParamError("upload", "the uploaded file is not valid base64") from None
    if not data:
        raise ParamError("upload", "the uploaded file is empty")
    return data


def check_min_confidence(value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ParamError("min_confidence", f"min_confidence must be between 0 and 1, got {value!r}")
    return float(value)


def check_classes(classes: object) -> frozenset[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        classes = [c for c in classes.split(",")]
    if not isinstance(classes, Iterable):
        raise ParamError("classes", "classes must be a list of class names")
    names = frozenset(str(c).strip() for c in classes if str(c).strip())
    return names or None


def check_field_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ParamError("label_field", "enter a field name for the detections, e.g. 'detections'")
    name = name.strip()
    if name.startswith("_") or "." in name or "$" in name or not name.replace("_", "a").isalnum():
        raise ParamError("label_field", f"not a valid field name: {name!r} (letters, digits, _)")
    if name.startswith("simages_") or name in ("filepath", "id", "tags", "metadata", "media_type"):
        raise ParamError("label_field", f"{name!r} is reserved; choose another field name")
    return name


# --- merging ------------------------------------------------------------------------------------


def merge_results(answers: Sequence[tuple[QueryLabel, SearchResult]]) -> list[RankedImage]:
    """Merge the answers of several queries: one entry per API image id, best score wins, ranked.

    An image found by several queries keeps the highest score (and the query that gave it);
    ties are broken by how many queries found it, then by first appearance, so the order is
    deterministic. Images whose source URL was already seen under another id are dropped too.
    """
    best: dict[str, tuple[SimilarImage, QueryLabel, int, int]] = {}
    order = 0
    for label, result in answers:
        for image in result.images:
            seen = best.get(image.id)
            if seen is None:
                best[image.id] = (image, label, 1, order)
                order += 1
                continue
            kept, kept_label, hits, first = seen
            if image.score > kept.score:
                kept, kept_label = image, label
            best[image.id] = (kept, kept_label, hits + 1, first)
    ranked = sorted(best.values(), key=lambda t: (-t[0].score, -t[2], t[3]))
    out: list[RankedImage] = []
    urls: set[str] = set()
    for image, label, hits, _ in ranked:
        if image.url in urls:
            continue
        urls.add(image.url)
        out.append(RankedImage(image=image, rank=len(out) + 1, query=label, hits=hits))
    return out


def kept_detections(image: SimilarImage, keep: ClassFilter) -> list[Detection]:
    return [d for d in image.detections or () if keep.keep(d)]


def class_summary(image: SimilarImage, keep: ClassFilter = ClassFilter()) -> str:
    """``"cat 0.92, cup 0.71"``, or ``""`` when the image has no (kept) detections."""
    return ", ".join(f"{d.name} {d.score:.2f}" for d in kept_detections(image, keep))


def run_tag(now: datetime) -> str:
    """The tag of one import run, sortable, in UTC to the millisecond: ``simages-20260101T120000.123Z``."""
    utc = now.astimezone(timezone.utc)
    return f"simages-{utc:%Y%m%dT%H%M%S}.{utc.microsecond // 1000:03d}Z"


def run_key(tag: str) -> str:
    """The FiftyOne run key recording an import (run keys are identifiers)."""
    return "".join(c if c.isalnum() else "_" for c in tag)
