"""Typed results of a similar-images search: what crosses every module boundary.

The wire format (``_protocol``) is converted to these frozen dataclasses once;
integrations and the local server only ever handle these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Box = tuple[float, float, float, float]
"""A COCO-YOLOv7 box in pixels of the original image: ``(x_min, y_min, x_max, y_max)``."""


@dataclass(frozen=True)
class Detection:
    """One object the API's ``coco_yolov7`` labels report on an image."""

    name: str
    score: float
    box: Box
    category_id: int


@dataclass(frozen=True)
class SimilarImage:
    """One similar image, with its detections when labels were requested.

    ``detections`` is ``None`` when labels were not requested (or the API sent
    none for this image) and an empty tuple when the API says it has no objects.
    ``width``/``height`` are the pixel size the detections refer to.
    """

    url: str
    score: float
    thumbnail_url: str
    id: str
    detections: tuple[Detection, ...] | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class SearchResult:
    """The answer to one search: images ordered by descending score."""

    images: tuple[SimilarImage, ...]
    info: dict[str, Any] = field(default_factory=dict)
    labels_requested: bool = False
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.images)
