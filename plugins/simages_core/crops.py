"""Cutting a region out of an image, so a drawn box or a clicked point can be a query of its own.

Both integrations query with a part of an image: Label Studio's interactive pre-annotation with
the rectangle an annotator drew (or a window around a keypoint), FiftyOne with a selected
detection. The region is given in pixels of the *upright* image (EXIF orientation applied, as
Label Studio and FiftyOne both show it), widened by a margin so the object keeps a little of its
context (a detector and an embedding both read an object better with its edges), clamped to the
image, and returned as an RGB image that ``Query(image=...)`` encodes like any other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from ._encoding import DEFAULT_MAX_PIXELS, ImageSource, open_image
from ._exceptions import ImageEncodingError
from ._models import Box
from .boxes import clamp_box

__all__ = ["DEFAULT_MARGIN", "MIN_CROP_SIDE", "Crop", "crop_box", "crop_point", "point_window"]

DEFAULT_MARGIN = 0.1
"""Fraction of the box's width and height added on each side before cropping."""
MIN_CROP_SIDE = 8
"""A crop narrower than this (after the margin) is refused: nothing an embedding can read."""


@dataclass(frozen=True)
class Crop:
    """A region cut from an image, and where it came from."""

    image: Image.Image
    box: Box
    """The region actually cut, margin included, in pixels of the upright image."""
    requested: Box
    """The region asked for, clamped to the image, before the margin."""
    source_size: tuple[int, int]
    """The upright image's ``(width, height)``."""


def crop_box(
    source: ImageSource | Image.Image,
    box: Box,
    *,
    margin: float = DEFAULT_MARGIN,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Crop:
    """Cut ``box`` (pixels ``x_min, y_min, x_max, y_max`` of the upright image), widened by ``margin``.

    Raises ``ImageEncodingError`` when the image cannot be read or the box has no area inside it
    (or is smaller than ``MIN_CROP_SIDE`` pixels with its margin), and ``ValueError`` for a margin
    that is negative or not finite.
    """
    if not (math.isfinite(margin) and 0 <= margin <= 2):
        raise ValueError(f"margin must be from 0 to 2 (a fraction of the box), got {margin}")
    image = (
        source
        if isinstance(source, Image.Image) and source.mode == "RGB"
        else open_image(source, max_pixels=max_pixels)
    )
    width, height = image.size
    clamped = clamp_box(box, width, height)
    if clamped is None:
        raise ImageEncodingError(f"region {_shown(box)} has no area inside the {width}x{height} image")
    x0, y0, x1, y1 = clamped
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    widened = clamp_box((x0 - dx, y0 - dy, x1 + dx, y1 + dy), width, height)
    assert widened is not None  # contains ``clamped``, which has area
    left, top = math.floor(widened[0]), math.floor(widened[1])
    right, bottom = math.ceil(widened[2]), math.ceil(widened[3])
    if right - left < MIN_CROP_SIDE or bottom - top < MIN_CROP_SIDE:
        raise ImageEncodingError(
            f"region {_shown(box)} is {right - left}x{bottom - top} pixels with its margin: "
            f"too small to search with (at least {MIN_CROP_SIDE}x{MIN_CROP_SIDE})"
        )
    cut = image.crop((left, top, right, bottom))
    return Crop(
        image=cut,
        box=(float(left), float(top), float(right), float(bottom)),
        requested=clamped,
        source_size=(width, height),
    )


def point_window(x: float, y: float, size: tuple[int, int], *, fraction: float = 0.25) -> Box:
    """A square box centred on a point, ``fraction`` of the image's shorter side wide, moved inside it."""
    if not (math.isfinite(fraction) and 0 < fraction <= 1):
        raise ValueError(f"window fraction must be in (0, 1], got {fraction}")
    width, height = size
    side = max(MIN_CROP_SIDE, fraction * min(width, height))
    x0 = min(max(x - side / 2, 0.0), max(width - side, 0.0))
    y0 = min(max(y - side / 2, 0.0), max(height - side, 0.0))
    return (x0, y0, min(x0 + side, float(width)), min(y0 + side, float(height)))


def crop_point(
    source: ImageSource | Image.Image,
    x: float,
    y: float,
    *,
    fraction: float = 0.25,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Crop:
    """The window around a clicked point (pixels of the upright image), with no further margin."""
    image = (
        source
        if isinstance(source, Image.Image) and source.mode == "RGB"
        else open_image(source, max_pixels=max_pixels)
    )
    if not (math.isfinite(x) and math.isfinite(y) and 0 <= x <= image.width and 0 <= y <= image.height):
        raise ImageEncodingError(f"point ({x}, {y}) is outside the {image.width}x{image.height} image")
    return crop_box(image, point_window(x, y, image.size, fraction=fraction), margin=0.0)


def _shown(box: Box) -> str:
    return "[" + ", ".join(f"{v:.1f}" if isinstance(v, (int, float)) else repr(v) for v in box) + "]"
