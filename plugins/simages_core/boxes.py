"""Box conversions between the API's COCO pixel boxes and the integrations' formats.

The API reports ``[x_min, y_min, x_max, y_max]`` in pixels of the original image.
Label Studio wants percent ``x, y, width, height`` of the image plus its
``original_width``/``original_height``; FiftyOne wants relative ``[x, y, w, h]``
in ``[0, 1]``. Boxes are clamped to the image first; a box with no area left
after clamping is degenerate and converts to ``None`` so callers drop it
instead of storing an invisible region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._models import Box

__all__ = [
    "LabelStudioBox",
    "clamp_box",
    "from_fiftyone",
    "from_label_studio",
    "scale_box",
    "to_fiftyone",
    "to_label_studio",
]

# Rounding keeps stored coordinates readable and stable across runs; 1e-4 percent
# of a 100k-pixel side is 0.1 px, well below anything an annotator sees.
_PERCENT_DIGITS = 4
_RELATIVE_DIGITS = 6


@dataclass(frozen=True)
class LabelStudioBox:
    """A rectangle as Label Studio stores it (percent of the image, no rotation)."""

    x: float
    y: float
    width: float
    height: float
    original_width: int
    original_height: int
    rotation: float = 0.0


def _check_size(width: float, height: float) -> None:
    if not (width > 0 and height > 0 and math.isfinite(width) and math.isfinite(height)):
        raise ValueError(f"image size must be positive and finite, got {width}x{height}")


def clamp_box(box: Box, width: float, height: float) -> Box | None:
    """Clamp a pixel box to the image; ``None`` if nothing of positive area remains.

    Coordinates given in the wrong order (x_max < x_min) are swapped first,
    since they still describe a rectangle; non-finite ones make the box invalid.
    """
    _check_size(width, height)
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        return None
    x0, y0, x1, y1 = box
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    x0, x1 = max(0.0, min(x0, width)), max(0.0, min(x1, width))
    y0, y1 = max(0.0, min(y0, height)), max(0.0, min(y1, height))
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None
    return (x0, y0, x1, y1)


def scale_box(box: Box, sx: float, sy: float) -> Box:
    """Scale a pixel box, for detections reported on a differently sized copy."""
    x0, y0, x1, y1 = box
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def to_label_studio(box: Box, width: int, height: int) -> LabelStudioBox | None:
    """COCO pixel box -> Label Studio percent box, or ``None`` if degenerate."""
    clamped = clamp_box(box, width, height)
    if clamped is None:
        return None
    x0, y0, x1, y1 = clamped
    return LabelStudioBox(
        x=round(100.0 * x0 / width, _PERCENT_DIGITS),
        y=round(100.0 * y0 / height, _PERCENT_DIGITS),
        width=round(100.0 * (x1 - x0) / width, _PERCENT_DIGITS),
        height=round(100.0 * (y1 - y0) / height, _PERCENT_DIGITS),
        original_width=int(width),
        original_height=int(height),
    )


def from_label_studio(ls_box: LabelStudioBox) -> Box:
    """Label Studio percent box -> COCO pixel box (for round trips and tests)."""
    w, h = ls_box.original_width, ls_box.original_height
    x0, y0 = ls_box.x * w / 100.0, ls_box.y * h / 100.0
    return (x0, y0, x0 + ls_box.width * w / 100.0, y0 + ls_box.height * h / 100.0)


def to_fiftyone(box: Box, width: int, height: int) -> tuple[float, float, float, float] | None:
    """COCO pixel box -> FiftyOne relative ``[x, y, w, h]``, or ``None`` if degenerate."""
    clamped = clamp_box(box, width, height)
    if clamped is None:
        return None
    x0, y0, x1, y1 = clamped
    return (
        round(x0 / width, _RELATIVE_DIGITS),
        round(y0 / height, _RELATIVE_DIGITS),
        round((x1 - x0) / width, _RELATIVE_DIGITS),
        round((y1 - y0) / height, _RELATIVE_DIGITS),
    )


def from_fiftyone(rel: tuple[float, float, float, float], width: int, height: int) -> Box:
    """FiftyOne relative box -> COCO pixel box."""
    x, y, w, h = rel
    return (x * width, y * height, (x + w) * width, (y + h) * height)
