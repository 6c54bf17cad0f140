"""Selected detections as queries: find each label in the dataset, crop its box from its sample's image.

FiftyOne stores a detection's box as relative ``[x, y, width, height]`` of the upright image (the
App draws EXIF-rotated photos upright). The sample's file is opened once, upright
(``simages_core.open_image``), its size turns the box into pixels (``boxes.from_fiftyone``), and
the core's ``crop_box`` cuts it with the core's default margin. The size comes from the file, not
from ``metadata``: the box is relative, so the pixels it covers are those of the file read now,
whatever an older ``metadata`` says.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fiftyone as fo
import fiftyone.core.labels as fol
from bson import ObjectId

from simages_core import ImageEncodingError, Query, open_image
from simages_core.boxes import from_fiftyone
from simages_core.crops import crop_box

from ._outcomes import QueryLabel, QueryRegion
from ._param_errors import ParamError

SOURCE = "selected_labels"
"""The query source (and form input blamed for a bad selection); ``label_ids`` for Python callers."""
MAX_QUERY_LABELS = 100
"""Detections per run, as for samples: each is one API request."""


@dataclass(frozen=True)
class SelectedDetection:
    """A detection found in the dataset, with the file its box is cut from."""

    region: QueryRegion
    filepath: str


def check_label_ids(label_ids: Sequence[str] | None) -> tuple[str, ...]:
    """One or more ids, at most ``MAX_QUERY_LABELS``; whether they are detections is ``find_detections``'s job."""
    ids = tuple(str(i) for i in label_ids or ())
    if not ids:
        raise ParamError(
            SOURCE,
            "no detection to search with: select detections (click their boxes) in the modal",
            python_message="no label ids given",
        )
    if len(ids) > MAX_QUERY_LABELS:
        raise ParamError(
            SOURCE,
            f"select at most {MAX_QUERY_LABELS} detections (got {len(ids)})",
            python_message=f"at most {MAX_QUERY_LABELS} label ids per call (got {len(ids)})",
        )
    return ids


def label_ids_from_selection(
    selected_labels: Iterable[Mapping[str, Any]] | None,
) -> tuple[list[str], list[str]]:
    """(label ids, their samples' ids) of the App's ``ctx.selected_labels`` (dicts with ``label_id``,
    ``sample_id``, ``field``, ``frame_number``); labels on video frames are refused, the plugin searches images."""
    ids, samples = [], []
    for item in selected_labels or ():
        label_id = str(item.get("label_id") or "")
        if item.get("frame_number") is not None:
            raise ParamError(
                SOURCE,
                f"label {label_id} is on frame {item['frame_number']} of a video: "
                "only detections on images can be queries",
            )
        ids.append(label_id)
        samples.append(str(item.get("sample_id") or ""))
    return ids, [s for s in dict.fromkeys(samples) if ObjectId.is_valid(s)]


def find_detections(
    dataset: fo.Dataset, label_ids: Sequence[str], sample_ids: Sequence[str] = ()
) -> list[SelectedDetection]:
    """The detections with these ids in ``dataset``, in the order given; anything else is a ``ParamError``.

    ``sample_ids`` (the App names each selected label's sample) narrows the lookup to those
    samples, an indexed read; without them (``label_ids=`` from Python) every sample's labels are
    scanned, about 40 ms per 20,000 samples.

    An id that is malformed, not in this dataset (unknown, or another dataset's), not a
    ``Detection`` (a polyline, keypoints, a classification...), or a detection without a usable
    box is refused, naming the label, before anything is searched or written.
    """
    malformed = [i for i in label_ids if not ObjectId.is_valid(i)]
    if malformed:
        raise ParamError(SOURCE, f"not a FiftyOne label id: {', '.join(repr(i) for i in malformed)}")
    found = dict(_labels_by_id(dataset, set(label_ids), sample_ids))
    missing = [i for i in label_ids if i not in found]
    if missing:
        raise ParamError(SOURCE, f"no label with id {', '.join(missing)} in dataset {dataset.name!r}")
    selected = []
    for label_id in label_ids:
        sample_id, filepath, field, label = found[label_id]
        if not isinstance(label, fol.Detection):
            raise ParamError(
                SOURCE,
                f"label {label_id} (field {field}) is a {type(label).__name__}, not a detection: "
                "only detections (boxes) can be queries",
            )
        box = _relative_box(label.bounding_box)
        if box is None:
            raise ParamError(SOURCE, f"detection {label_id} (field {field}) has no usable bounding box")
        if not os.path.isfile(filepath):
            raise ParamError(
                SOURCE, f"sample {sample_id} of detection {label_id} has no local image file ({filepath})"
            )
        region = QueryRegion(sample_id, field, label_id, label.label, box)
        selected.append(SelectedDetection(region, filepath))
    return selected


def crop_queries(detections: Sequence[SelectedDetection], **query: Any) -> list[tuple[QueryLabel, Query]]:
    """One query per detection, its box cropped from its sample's image (each file opened once).

    ``query`` holds the other ``Query`` arguments (``num_similar``, ``labels``). A box too small
    to search with, or a file that is not a readable image, is a ``ParamError`` naming the label.
    """
    planned = []
    opened: dict[str, Any] = {}
    for selected in detections:
        region = selected.region
        try:
            if selected.filepath not in opened:
                opened[selected.filepath] = open_image(selected.filepath)
            image = opened[selected.filepath]
            pixels = from_fiftyone(region.bounding_box, image.width, image.height)
            crop = crop_box(image, pixels)
        except ImageEncodingError as exc:
            raise ParamError(SOURCE, f"detection {region.label_id} (field {region.field}): {exc}") from None
        label = QueryLabel("label", region.label_id, region)
        planned.append((label, Query(image=crop.image, **query)))
    return planned


def _label_fields(dataset: fo.Dataset) -> list[str]:
    """The dataset's top-level label fields (of every label type: a non-detection is reported, not missed)."""
    schema = dataset.get_field_schema(ftype=fo.EmbeddedDocumentField, embedded_doc_type=fol.Label)
    return sorted(schema)


def _labels_by_id(
    dataset: fo.Dataset, wanted: set[str], sample_ids: Sequence[str] = ()
) -> Iterator[tuple[str, tuple[str, str, str, fol.Label]]]:
    """label id -> (sample id, filepath, field, label) for the wanted ids found in ``dataset``.

    ``select_labels`` keeps only the samples holding one of the ids, and only those labels, so
    this reads a handful of samples however large the dataset is.
    """
    fields = _label_fields(dataset)
    if not fields:
        return
    samples = dataset.select(list(sample_ids)) if sample_ids else dataset
    view = samples.select_labels(ids=sorted(wanted), fields=fields).select_fields(fields)
    for sample in view.iter_samples():
        for field in fields:
            for label in _labels_in(sample[field]):
                if label.id in wanted:
                    yield label.id, (sample.id, sample.filepath, field, label)


def _labels_in(value: object) -> list[fol.Label]:
    """The labels a field's value holds: a list label's items (``Detections.detections``...), or itself."""
    if not isinstance(value, fol.Label):
        return []
    list_field = getattr(type(value), "_LABEL_LIST_FIELD", None)
    return list(getattr(value, list_field) or []) if list_field else [value]


def _relative_box(box: object) -> tuple[float, float, float, float] | None:
    """A stored ``[x, y, w, h]`` as four floats, or ``None`` if it is missing or has no area."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    if not all(map(math.isfinite, (x, y, w, h))) or w <= 0 or h <= 0:
        return None
    return (x, y, w, h)
