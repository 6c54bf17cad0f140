"""Cutting regions out of images: margins, clamping, EXIF orientation and bad regions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from simages_core import ImageEncodingError
from simages_core.crops import MIN_CROP_SIDE, crop_box, crop_point, point_window


def _quadrants(width: int = 200, height: int = 100) -> Image.Image:
    """Left half red, right half blue: a crop's colour says where it came from."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


def test_margin_widens_the_box_and_is_clamped_to_the_image() -> None:
    crop = crop_box(_quadrants(), (10, 10, 60, 50), margin=0.1)
    assert crop.requested == (10, 10, 60, 50)
    assert crop.box == (5.0, 6.0, 65.0, 54.0)
    assert crop.image.size == (60, 48)
    edge = crop_box(_quadrants(), (-30, -30, 40, 40), margin=0.5)
    assert edge.requested == (0, 0, 40, 40)
    assert edge.box == (0.0, 0.0, 60.0, 60.0)


def test_the_crop_holds_the_pixels_of_the_region() -> None:
    right = crop_box(_quadrants(), (120, 10, 190, 90), margin=0.0)
    assert np.asarray(right.image).reshape(-1, 3).mean(axis=0).tolist() == [0, 0, 255]


def test_exif_rotated_file_is_cropped_in_upright_pixels() -> None:
    # Stored 100 wide x 200 high with orientation 6 (rotate 90 clockwise to show): upright it is 200x100.
    stored = _quadrants(200, 100).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif)
    crop = crop_box(buffer.getvalue(), (0, 0, 100, 100), margin=0.0)
    assert crop.source_size == (200, 100)
    shown = np.asarray(crop.image).reshape(-1, 3).mean(axis=0)
    assert shown[0] > 200 and shown[2] < 50  # the upright left half is red


@pytest.mark.parametrize(
    "box",
    [(300, 300, 400, 400), (50, 50, 50, 80), (float("nan"), 0, 10, 10), (0, 0, 3, 3)],
    ids=["outside", "no-width", "nan", "too-small"],
)
def test_regions_with_nothing_to_search_are_refused(box: tuple[float, float, float, float]) -> None:
    with pytest.raises(ImageEncodingError, match="region"):
        crop_box(_quadrants(), box, margin=0.0)


def test_bad_margin_and_unreadable_image() -> None:
    with pytest.raises(ValueError, match="margin"):
        crop_box(_quadrants(), (0, 0, 50, 50), margin=-0.1)
    with pytest.raises(ImageEncodingError, match="not an image"):
        crop_box(b"not an image", (0, 0, 50, 50))


def test_point_window_is_centred_and_kept_inside_the_image() -> None:
    assert point_window(100, 50, (200, 100), fraction=0.2) == (90.0, 40.0, 110.0, 60.0)
    assert point_window(1, 99, (200, 100), fraction=0.2) == (0.0, 80.0, 20.0, 100.0)
    crop = crop_point(_quadrants(), 150, 50, fraction=0.5)
    assert crop.image.size == (50, 50)
    assert crop.image.getpixel((25, 25)) == (0, 0, 255)
    assert min(crop.image.size) >= MIN_CROP_SIDE
    with pytest.raises(ImageEncodingError, match="outside"):
        crop_point(_quadrants(), 500, 50)
