"""API results -> FiftyOne labels and samples with provenance (no database access here).

Boxes go through ``simages_core.boxes.to_fiftyone``, the one place that converts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import fiftyone.core.labels as fol
import fiftyone.core.metadata as fom
import fiftyone.core.sample as fos

from simages_core import SimilarImage
from simages_core.boxes import scale_box, to_fiftyone

from ._find_fingerprints import FINGERPRINT_FIELD
from ._outcomes import RankedImage
from ._ranking import ClassFilter, kept_detections

PROVENANCE_FIELDS = (
    "simages_score",
    "simages_rank",
    "simages_id",
    "simages_source_url",
    "simages_thumbnail_url",
    "simages_query",
    "simages_query_time",
)
REGION_FIELDS = (
    "simages_query_sample_id",
    "simages_query_label_id",
    "simages_query_field",
    "simages_query_box",
)
"""Set on samples found with a selected detection (``simages_query`` is ``label:<id>``): where that
detection is, its relative box ``[x, y, w, h]`` included. Other samples do not get these fields."""


@dataclass(frozen=True)
class SampleSpec:
    """How imported samples are written: the label field, its filter, and the run's tag and time."""

    label_field: str = "detections"
    keep: ClassFilter = ClassFilter()  # noqa: RUF009 - frozen dataclass, safe as a default
    labels: bool = True
    tag: str = "simages"
    query_time: datetime | None = None


def to_detections(
    image: SimilarImage,
    width: int,
    height: int,
    keep: ClassFilter = ClassFilter(),  # noqa: B008
) -> fol.Detections:
    """The image's API detections as relative FiftyOne boxes on a ``width`` x ``height`` file.

    Boxes refer to the size the API reports (``image.width``/``height``); when the downloaded
    file has another size (a resized copy), they are scaled to it first. Boxes with no area
    after clamping are dropped. ``yolo_class_id`` is the detector's class index (``COCO_CLASSES``).
    """
    ref_w, ref_h = image.width or width, image.height or height
    sx, sy = width / ref_w, height / ref_h
    detections = []
    for det in kept_detections(image, keep):
        box = det.box if (sx, sy) == (1.0, 1.0) else scale_box(det.box, sx, sy)
        rel = to_fiftyone(box, width, height)
        if rel is None:
            continue
        detections.append(
            fol.Detection(
                label=det.name,
                bounding_box=list(rel),
                confidence=float(det.score),
                # Not ``category_id``: FiftyOne's COCO exporter passes a label's attributes as keyword
                # arguments beside its own ``category_id`` and fails on a second one.
                yolo_class_id=int(det.category_id),
            )
        )
    return fol.Detections(detections=detections)


def build_sample(
    ranked: RankedImage,
    filepath: str | Path,
    width: int,
    height: int,
    spec: SampleSpec,
    *,
    size_bytes: int | None = None,
    mime_type: str | None = None,
    fingerprint: str | None = None,
) -> fos.Sample:
    """A new sample for a downloaded image, tagged with the run, with labels and provenance.

    ``fingerprint`` (hex) is the one the run screened it with, stored so later runs screen
    against this sample without reading its file again.
    """
    image = ranked.image
    sample = fos.Sample(
        filepath=str(filepath),
        tags=[spec.tag],
        metadata=fom.ImageMetadata(
            width=int(width),
            height=int(height),
            size_bytes=size_bytes,
            mime_type=mime_type,
            num_channels=None,
        ),
        simages_score=float(image.score),
        simages_rank=int(ranked.rank),
        simages_id=image.id,
        simages_source_url=image.url,
        simages_thumbnail_url=image.thumbnail_url,
        simages_query=str(ranked.query),
        simages_query_time=spec.query_time,
    )
    region = ranked.query.region
    if region is not None:
        sample["simages_query_sample_id"] = region.sample_id
        sample["simages_query_label_id"] = region.label_id
        sample["simages_query_field"] = region.field
        sample["simages_query_box"] = list(region.bounding_box)
    if fingerprint is not None:
        sample[FINGERPRINT_FIELD] = fingerprint
    if spec.labels and image.detections is not None:
        sample[spec.label_field] = to_detections(image, width, height, spec.keep)
    return sample
