"""Box conversions on their edge cases: clamping, degenerate boxes, rounding, round trips."""

from __future__ import annotations

import math

import pytest

from simages_core.boxes import (
    LabelStudioBox,
    clamp_box,
    from_fiftyone,
    from_label_studio,
    scale_box,
    to_fiftyone,
    to_label_studio,
)
from simages_core.coco import COCO_CATEGORY_IDS, COCO_CLASSES, YOLO_CLASS_INDEX


def test_label_studio_percent_box():
    box = to_label_studio((64, 48, 320, 240), 640, 480)
    assert box == LabelStudioBox(
        x=10.0, y=10.0, width=40.0, height=40.0, original_width=640, original_height=480
    )


def test_fiftyone_relative_box():
    assert to_fiftyone((64, 48, 320, 240), 640, 480) == (0.1, 0.1, 0.4, 0.4)


def test_boxes_are_clamped_to_the_image():
    assert clamp_box((-10, -5, 700, 500), 640, 480) == (0, 0, 640, 480)
    assert to_label_studio((-10, -5, 700, 500), 640, 480) == LabelStudioBox(0, 0, 100, 100, 640, 480)
    assert to_fiftyone((600, 400, 900, 900), 640, 480) == (0.9375, 0.833333, 0.0625, 0.166667)


def test_swapped_corners_still_describe_the_rectangle():
    assert clamp_box((320, 240, 64, 48), 640, 480) == (64, 48, 320, 240)


@pytest.mark.parametrize(
    "box",
    [
        (10, 10, 10, 50),  # zero width
        (10, 10, 50, 10),  # zero height
        (700, 10, 800, 50),  # entirely right of the image
        (-50, -50, -1, -1),  # entirely above-left
        (math.nan, 0, 10, 10),
        (0, 0, math.inf, 10),
    ],
)
def test_degenerate_boxes_convert_to_none(box):
    assert to_label_studio(box, 640, 480) is None
    assert to_fiftyone(box, 640, 480) is None


@pytest.mark.parametrize("size", [(0, 10), (10, -1), (math.nan, 5)])
def test_invalid_image_size_is_an_error(size):
    with pytest.raises(ValueError, match="image size"):
        to_fiftyone((0, 0, 1, 1), *size)


def test_rounding_is_bounded_and_round_trips_within_a_pixel():
    width, height = 4032, 3024
    box = (1234.567, 89.012, 3456.789, 3000.5)
    ls = to_label_studio(box, width, height)
    assert all(len(str(v).split(".")[-1]) <= 4 for v in (ls.x, ls.y, ls.width, ls.height))
    for got, want in zip(from_label_studio(ls), box, strict=True):
        assert abs(got - want) < 0.5
    rel = to_fiftyone(box, width, height)
    for got, want in zip(from_fiftyone(rel, width, height), box, strict=True):
        assert abs(got - want) < 0.5


def test_scale_box_for_detections_on_a_resized_copy():
    assert scale_box((10, 20, 30, 40), 2.0, 0.5) == (20, 10, 60, 20)


def test_coco_names():
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES)) == 80
    assert COCO_CLASSES[0] == "person" and COCO_CLASSES[15] == "cat" and COCO_CLASSES[79] == "toothbrush"
    assert COCO_CATEGORY_IDS["person"] == 1 and COCO_CATEGORY_IDS["cat"] == 17
    assert COCO_CATEGORY_IDS["toothbrush"] == 90
    assert YOLO_CLASS_INDEX["dog"] == 16
