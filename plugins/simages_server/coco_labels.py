"""Labels from a COCO annotation file, attached to index records at index time (ground truth wins)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from simages_core import Detection
from simages_core.boxes import clamp_box, scale_box
from simages_core.coco import YOLO_CLASS_INDEX

from .index import IndexedImage

logger = logging.getLogger("simages_server")


@dataclass(frozen=True)
class CocoImageLabels:
    width: int | None
    height: int | None
    detections: tuple[Detection, ...]
    caption: str | None


def load_coco_labels(path: Path) -> dict[str, CocoImageLabels]:
    """COCO annotations by file name. Ground truth (no ``score``) counts as score 1.0."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        per_image: dict[int, list[Detection]] = {}
        ignored: set[str] = set()
        for ann in data.get("annotations", []):
            name = categories.get(ann["category_id"])
            if name not in YOLO_CLASS_INDEX:
                ignored.add(str(name))
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            per_image.setdefault(ann["image_id"], []).append(
                Detection(name, float(ann.get("score", 1.0)), (x, y, x + w, y + h), YOLO_CLASS_INDEX[name])
            )
        labels = {
            image["file_name"]: CocoImageLabels(
                width=image.get("width"),
                height=image.get("height"),
                detections=tuple(per_image.get(image["id"], ())),
                caption=image.get("caption"),
            )
            for image in data.get("images", [])
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read COCO annotations from {path}: {type(exc).__name__}: {exc}") from None
    if ignored:
        logger.warning("ignored annotations of classes outside COCO-80: %s", ", ".join(sorted(ignored)))
    return labels


def apply_coco(records: Iterable[IndexedImage], labels: dict[str, CocoImageLabels]) -> list[IndexedImage]:
    """Attach labels by relative path (or, failing that, by file name); rescale boxes if sizes differ."""
    by_name = {Path(name).name: value for name, value in labels.items()}
    out = []
    for record in records:
        found = labels.get(record.file) or by_name.get(Path(record.file).name)
        if found is None:
            out.append(record)
            continue
        sx = record.width / found.width if found.width else 1.0
        sy = record.height / found.height if found.height else 1.0
        dets = []
        for det in found.detections:
            box = clamp_box(scale_box(det.box, sx, sy), record.width, record.height)
            if box is not None:
                dets.append(Detection(det.name, det.score, box, det.category_id))
        out.append(replace(record, detections=tuple(dets), caption=found.caption or record.caption))
    return out
