"""Typed results of a similar-images search: what crosses every module boundary.

The wire format (``_protocol``) is converted to these frozen dataclasses once;
integrations and the local server only ever handle these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .identity import Fingerprint

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
    copies: tuple[str, ...] = ()
    """Ids of the results collapsed into this one as copies of it (``SearchResult.collapse_copies``)."""


@dataclass(frozen=True)
class SearchResult:
    """The answer to one search: images ordered by descending score."""

    images: tuple[SimilarImage, ...]
    info: dict[str, Any] = field(default_factory=dict)
    labels_requested: bool = False
    from_cache: bool = False
    copies_collapsed: bool = False
    """True once ``collapse_copies`` kept one image per group of copies."""

    def __len__(self) -> int:
        return len(self.images)

    def collapse_copies(
        self, fingerprints: Mapping[str, Fingerprint], threshold: int | None = None
    ) -> SearchResult:
        """One image per group of copies, the best-scored kept (``simages_core.identity.collapse_copies``)."""
        from .identity import COPY_DISTANCE, collapse_copies

        return collapse_copies(self, fingerprints, COPY_DISTANCE if threshold is None else threshold)
