"""Turning what the user gave (App form or Python arguments) into validated search and import parameters.

Request rules (URL, text, image, ``num_similar``) are the core's: the values are built into a
``simages_core.Query`` and its ``InvalidRequest`` is mapped to the input it concerns
(``_param_errors``: the form's ``upload``, Python's ``image``). Only the plugin's own rules live here: the
query source and sample selection, decoding an upload, the label field, classes, confidence.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from PIL import Image

from simages_core import InvalidRequest, Query, encode_image
from simages_core.identity import COPY_DISTANCE, check_threshold

from ._downloads import DownloadPolicy
from ._label_queries import check_label_ids
from ._param_errors import ParamError, from_core

SOURCES = ("selected", "selected_labels", "current_sample", "url", "text", "upload")
"""Where a query comes from: selected samples, selected detections (each box cropped from its
sample's image), the sample open in the modal, a URL, a text, a file."""

SOURCE_LABELS = {
    "selected": "Selected samples",
    "selected_labels": "Selected detections",
    "current_sample": "Sample in the modal",
    "url": "Image URL",
    "text": "Text prompt",
    "upload": "Uploaded image",
}
MAX_QUERY_SAMPLES = 100
"""Selected samples per run (``MAX_QUERY_LABELS`` detections): each is one API request (and one billed unit past the free tier)."""


@dataclass(frozen=True)
class SearchParams:
    """A validated search, independent of where it was asked (App form or Python call)."""

    source: str
    num_similar: int = 10
    labels: bool = False
    text: str | None = None
    url: str | None = None
    image: bytes | str | os.PathLike[str] | None = None
    """Uploaded bytes, or the path of an image file (Python callers)."""
    image_name: str | None = None
    sample_ids: tuple[str, ...] = field(default_factory=tuple)
    label_ids: tuple[str, ...] = field(default_factory=tuple)
    """Detections whose boxes are the queries (``selected_labels``)."""
    label_samples: tuple[str, ...] = field(default_factory=tuple)
    """The samples holding them, when the App says so: the lookup then reads only those."""

    def query(self, image: str | Image.Image | None = None) -> Query:
        """The core query for this search; ``image`` is a sample's file (or a crop) for the sample sources."""
        return core_query(
            self.source,
            text=self.text,
            url=self.url,
            image=image if image is not None else self.image,
            num_similar=self.num_similar,
            labels=self.labels,
        )


@dataclass(frozen=True)
class CopyOptions:
    """What a search does about copies among its results (the find gallery, ``find_similar``)."""

    collapse: bool = True
    """Keep one result per group of near-duplicates, the others listed in its ``copies``."""
    mark: bool = True
    """Mark results that are copies of samples already in the dataset (``copy_of``)."""
    threshold: int = COPY_DISTANCE


def build_copy_options(
    *, collapse: object = True, mark: object = True, threshold: object = COPY_DISTANCE
) -> CopyOptions:
    return CopyOptions(bool(collapse), bool(mark), check_copy_threshold(threshold))


@dataclass(frozen=True)
class ImportOptions:
    media_dir: str | None = None
    new_dataset_name: str | None = None
    label_field: str = "detections"
    classes: frozenset[str] | None = None
    min_confidence: float = 0.0
    policy: DownloadPolicy = field(default_factory=DownloadPolicy)
    screen_copies: bool = True
    """Skip candidates that are copies (``simages_core.identity``) of target samples or of each other."""
    copy_threshold: int = COPY_DISTANCE
    """Fingerprint bits (of 64) two images may differ by and still be copies."""


# --- the core's rules, named for the form ---------------------------------------------------------


def core_query(
    source: str,
    *,
    text: str | None = None,
    url: str | None = None,
    image: bytes | str | os.PathLike[str] | Image.Image | None = None,
    num_similar: object = 10,
    labels: bool = False,
) -> Query:
    """Build the core ``Query``; the core rejects bad values, and the error names the form input."""
    try:
        # Query validates when built, with the same rule code as the wire request.
        # num_similar is passed as the user gave it: judging it is the core's job.
        query = Query(url=url, image=image, text=text, num_similar=cast(int, num_similar), labels=labels)
    except InvalidRequest as exc:
        raise from_core(exc, source) from None
    return query


def check_upload(image: bytes | str | os.PathLike[str]) -> None:
    """An upload must decode as an image: the core encoder's check, run on the form, not at search time."""
    try:
        encode_image(image)
    except InvalidRequest as exc:
        raise from_core(exc, "upload") from None


# --- parameters -----------------------------------------------------------------------------------


def build_params(
    *,
    source: str | None = None,
    text: str | None = None,
    url: str | None = None,
    image: bytes | str | os.PathLike[str] | None = None,
    image_name: str | None = None,
    sample_ids: Sequence[str] | str | None = None,
    label_ids: Sequence[str] | str | None = None,
    label_samples: Sequence[str] = (),
    num_similar: object = 10,
    labels: bool = False,
) -> SearchParams:
    """Validate one search; the source is inferred when not given (exactly one input must be set).

    ``image`` is uploaded bytes or the path of an image file.
    """
    if isinstance(sample_ids, str):
        sample_ids = [sample_ids]
    if isinstance(label_ids, str):
        label_ids = [label_ids]
    given = [
        name
        for name, v in (
            ("text", text),
            ("url", url),
            ("upload", image),
            ("selected", sample_ids),
            ("selected_labels", label_ids),
        )
        if v is not None and v != [] and v != ()
    ]
    if source is None:
        if len(given) != 1:
            raise ParamError("source", "give exactly one of text=, url=, image=, sample_ids= or label_ids=")
        source = given[0]
    if source not in SOURCES:
        raise ParamError("source", f"unknown query source {source!r}; one of {', '.join(SOURCES)}")
    # Form values as the App sends them: surrounding blanks dropped, 10.0 is 10.
    text = text.strip() if isinstance(text, str) else text
    url = url.strip() if isinstance(url, str) else url
    if isinstance(num_similar, float) and num_similar.is_integer():
        num_similar = int(num_similar)
    labels = bool(labels)
    if source == "text":
        q = core_query(source, text=text, num_similar=num_similar, labels=labels)
        return SearchParams(source, q.num_similar, labels, text=q.text)
    if source == "url":
        q = core_query(source, url=url, num_similar=num_similar, labels=labels)
        return SearchParams(source, q.num_similar, labels, url=q.url)
    if source == "upload":
        q = core_query(source, image=image, num_similar=num_similar, labels=labels)
        if image is not None:  # (the core query above already refused a missing image)
            check_upload(image)
        name = image_name or (Path(image).name if isinstance(image, (str, os.PathLike)) else "upload")
        return SearchParams(source, q.num_similar, labels, image=image, image_name=name)
    if source == "selected_labels":
        ids = check_label_ids(label_ids)
        q = core_query(source, text=source, num_similar=num_similar, labels=labels)  # (as for samples, below)
        return SearchParams(source, q.num_similar, labels, label_ids=ids, label_samples=tuple(label_samples))
    ids = tuple(str(i) for i in sample_ids or ())
    if not ids:
        what = "select one or more samples" if source == "selected" else "open a sample in the modal"
        raise ParamError(source, f"no sample to search with: {what}")
    if len(ids) > MAX_QUERY_SAMPLES:
        raise ParamError(
            source,
            f"select at most {MAX_QUERY_SAMPLES} samples (got {len(ids)})",
            python_message=f"at most {MAX_QUERY_SAMPLES} sample ids per call (got {len(ids)})",
        )
    # The samples' files are read by ``plan_queries``; the rest of the request is checked now, by
    # the core, with a stand-in query value (its rules for num_similar and labels do not depend on it).
    q = core_query(source, text=source, num_similar=num_similar, labels=labels)
    return SearchParams(source, q.num_similar, labels, sample_ids=ids)


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


# --- import options -------------------------------------------------------------------------------


def build_import_options(
    *,
    media_dir: str | None = None,
    new_dataset_name: str | None = None,
    label_field: str = "detections",
    classes: object = None,
    min_confidence: object = 0.0,
    policy: DownloadPolicy | None = None,
    screen_copies: object = True,
    copy_threshold: object = COPY_DISTANCE,
) -> ImportOptions:
    if new_dataset_name is not None and (
        not isinstance(new_dataset_name, str) or not new_dataset_name.strip()
    ):
        raise ParamError("new_dataset_name", "enter a name for the new dataset")
    name = new_dataset_name.strip() if isinstance(new_dataset_name, str) else None
    return ImportOptions(
        media_dir=os.path.abspath(os.path.expanduser(media_dir.strip()))
        if media_dir and media_dir.strip()
        else None,
        new_dataset_name=name or None,
        label_field=check_field_name(label_field),
        classes=check_classes(classes),
        min_confidence=check_min_confidence(min_confidence),
        policy=policy or DownloadPolicy(),
        screen_copies=bool(screen_copies),
        copy_threshold=check_copy_threshold(copy_threshold),
    )


def check_copy_threshold(value: object) -> int:
    """The core's rule (a whole number of bits from 0 to 64); ``10.0`` from a form is ``10``."""
    if value is None:
        return COPY_DISTANCE
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return check_threshold(value)
    except ValueError as exc:
        raise ParamError("copy_threshold", str(exc)) from None


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
        classes = classes.split(",")
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


# --- expanding a dataset --------------------------------------------------------------------------

MAX_EXPAND_WORKERS = 64


@dataclass(frozen=True)
class ExpandParams:
    """An expansion: every sample of a view is a query for ``per_sample`` similar images."""

    per_sample: int = 5
    labels: bool = True
    max_requests: int | None = None
    """Stop after sending this many requests (``None``: no cap). Not part of the run's identity,
    so a capped run continues with a higher cap."""
    batch_size: int = 128
    """Query samples per batch: each batch's new samples are added (with their files) or not at all."""
    max_workers: int = 16
    """Searches in flight at once."""

    def query(self, image: str) -> Query:
        return core_query("selected", image=image, num_similar=self.per_sample, labels=self.labels)


def build_expand_params(
    *,
    per_sample: object = 5,
    labels: object = True,
    max_requests: object = None,
    batch_size: object = 128,
    max_workers: object = 16,
) -> ExpandParams:
    """Validate an expansion; ``per_sample`` follows the core's ``num_similar`` rule (1 to 50)."""
    if isinstance(per_sample, float) and per_sample.is_integer():
        per_sample = int(per_sample)
    try:
        Query(text="expand", num_similar=cast(int, per_sample))
    except InvalidRequest as exc:
        raise ParamError("per_sample", f"similar images per sample: {exc.message}") from None
    return ExpandParams(
        per_sample=cast(int, per_sample),
        labels=bool(labels),
        max_requests=None if max_requests is None else _whole("max_requests", max_requests, 0, None),
        batch_size=_whole("batch_size", batch_size, 1, 10_000),
        max_workers=_whole("max_workers", max_workers, 1, MAX_EXPAND_WORKERS),
    )


def _whole(name: str, value: object, low: int, high: int | None) -> int:
    """A whole number within bounds (``10.0`` from a form is ``10``), else a ``ParamError`` naming it."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise ParamError(name, f"{name} must be a whole number {bounds}, got {value!r}")
    return value
