"""The YOLOv7 detector: both export forms, letterbox inversion, NMS, thresholds, bad model files."""

from __future__ import annotations

import numpy as np
import pytest
from model_fixtures import yolo_end2end, yolo_raw
from onnx import TensorProto, helper
from PIL import Image

from simages_server.detector import YoloDetector, letterbox, nms
from simages_server.models import ModelError

RED, BLUE = (1, 0, 0), (0, 0, 1)
PERSON, CAT = 0, 15


@pytest.fixture(scope="module")
def colour_detector(tmp_path_factory) -> YoloDetector:
    path = tmp_path_factory.mktemp("yolo") / "yolov7-end2end.onnx"
    return YoloDetector(yolo_end2end(path, [(RED, PERSON, 0.9), (BLUE, CAT, 0.8)]))


def _picture(size: tuple[int, int], red=None, blue=None) -> Image.Image:
    image = Image.new("RGB", size, (128, 128, 128))
    for box, colour in ((red, (250, 5, 5)), (blue, (5, 5, 250))):
        if box:
            image.paste(colour, box)
    return image


@pytest.mark.parametrize(
    ("size", "red", "blue"),
    [
        ((1280, 720), (100, 200, 420, 500), (900, 40, 1270, 700)),  # landscape: grey bands above and below
        ((720, 1280), (30, 1000, 700, 1270), (250, 60, 470, 300)),  # portrait: bands left and right
        ((3200, 2400), (800, 600, 2400, 1800), (0, 0, 400, 300)),  # large, and a box on the corner
        ((500, 375), (0, 10, 499, 100), None),  # upscaled into the input
    ],
)
def test_end2end_boxes_come_back_in_original_pixels(colour_detector, size, red, blue):
    found = colour_detector.detect(_picture(size, red, blue))
    expected = {"person": red, "cat": blue}
    assert sorted(d.name for d in found) == sorted(name for name, box in expected.items() if box)
    for det in found:
        assert det.category_id == {"person": PERSON, "cat": CAT}[det.name]
        assert np.allclose(det.box, expected[det.name], atol=2.0), (det, expected[det.name])
        assert 0 <= det.box[0] < det.box[2] <= size[0] and 0 <= det.box[1] < det.box[3] <= size[1]
    assert {d.name: d.score for d in found} == {n: s for n, s in (("person", 0.9), ("cat", 0.8)) if expected[n]}


def test_an_image_with_nothing_in_it_gets_no_boxes(colour_detector):
    assert colour_detector.detect(_picture((800, 600))) == ()


def test_letterbox_keeps_the_aspect_ratio_with_grey_padding():
    pixels, geometry = letterbox(Image.new("RGB", (1280, 720), (255, 255, 255)), 640, 640)
    assert pixels.shape == (3, 640, 640) and pixels.dtype == np.float32
    assert (geometry.left, geometry.top, geometry.inner_width, geometry.inner_height) == (0, 140, 640, 360)
    assert np.allclose(pixels[:, :140], 114 / 255) and np.allclose(pixels[:, 140:500], 1.0)
    assert np.allclose(pixels[:, 500:], 114 / 255)
    assert geometry.to_original((0, 140, 640, 500)) == (0, 0, 1280, 720)
    assert geometry.to_original((-50, 100, 700, 600)) == (0, 0, 1280, 720)  # clamped


# Candidates in the model's input pixels: (cx, cy, w, h, objectness, class, class score).
CANDIDATES = [
    (200, 200, 100, 100, 0.9, PERSON, 0.9),  # A: 0.81, kept
    (205, 203, 100, 100, 0.9, PERSON, 0.8),  # B: IoU with A ~0.9 > 0.65, same class: suppressed
    (200, 200, 100, 100, 0.9, CAT, 0.8),  # C: same place, other class: kept (class-aware)
    (240, 200, 100, 100, 0.8, PERSON, 0.9),  # D: IoU with A 0.43 < 0.65: kept
    (500, 500, 60, 80, 0.6, PERSON, 0.7),  # E: 0.42, alone: kept
    (450, 100, 40, 40, 0.5, PERSON, 0.45),  # F: 0.225 < 0.25 though both factors pass: dropped
    (100, 500, 40, 40, 0.2, PERSON, 1.0),  # G: objectness below the threshold: dropped
]


def test_raw_export_confidence_and_class_aware_nms(tmp_path):
    detector = YoloDetector(yolo_raw(tmp_path / "yolov7.onnx", CANDIDATES))
    assert detector.form == "raw"
    found = detector.detect(Image.new("RGB", (640, 640)))
    assert [(d.name, d.box, d.score) for d in found] == [
        ("person", (150.0, 150.0, 250.0, 250.0), 0.81),
        ("person", (190.0, 150.0, 290.0, 250.0), 0.72),
        ("cat", (150.0, 150.0, 250.0, 250.0), 0.72),
        ("person", (470.0, 460.0, 530.0, 540.0), 0.42),
    ]


def test_raw_export_thresholds_are_configurable_and_boxes_inverted(tmp_path):
    path = yolo_raw(tmp_path / "yolov7.onnx", CANDIDATES)
    strict = YoloDetector(path, iou=0.3, conf=0.7)
    # D (0.72) now overlaps A too much; E (0.42) falls under the confidence threshold; C (0.72) stays.
    found = strict.detect(Image.new("RGB", (1280, 1280)))  # input is half the image: boxes double
    assert [(d.name, d.box) for d in found] == [
        ("person", (300.0, 300.0, 500.0, 500.0)),
        ("cat", (300.0, 300.0, 500.0, 500.0)),
    ]
    landscape = YoloDetector(path).detect(Image.new("RGB", (1280, 720)))  # 140 px band on top
    assert landscape[0].box == (300.0, 20.0, 500.0, 220.0)


def test_nms_keeps_the_best_of_each_overlapping_group():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.5, 0.9, 0.8, 0.7], np.float32)
    classes = np.array([1, 1, 1, 2])
    assert nms(boxes, scores, classes, 0.5) == [1, 2, 3]


def _graph_model(tmp_path, name, input_shape, output_shape):
    node = (
        helper.make_node("Identity", ["images"], ["output"])
        if len(input_shape) == len(output_shape)
        else helper.make_node("ReduceMean", ["images"], ["output"], axes=[1], keepdims=0)
    )
    graph = helper.make_graph(
        [node],
        "bad",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, output_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def test_bad_detector_files_get_errors_naming_the_file(tmp_path):
    with pytest.raises(ModelError, match=r"YOLOv7 detector not found: .*missing\.onnx"):
        YoloDetector(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"junk\.onnx is not a loadable ONNX model"):
        YoloDetector(tmp_path / "junk.onnx")
    rank3 = _graph_model(tmp_path, "rank3.onnx", [3, 640, 640], [3, 640, 640])
    with pytest.raises(ModelError, match=r"rank3\.onnx: input 'images' has rank 3 .*expected rank 4"):
        YoloDetector(rank3)
    rank4_out = _graph_model(tmp_path, "rank4out.onnx", [1, 3, 64, 64], [1, 3, 64, 64])
    with pytest.raises(ModelError, match=r"rank4out\.onnx: output has shape .*expected rank 2 or 3"):
        YoloDetector(rank4_out)
    columns = _graph_model(tmp_path, "cols.onnx", [1, 3, 64, 64], [1, 64, 64])
    with pytest.raises(ModelError, match=r"cols\.onnx: output shape \[1, 64, 64\] needs 85 columns"):
        YoloDetector(columns)
    with pytest.raises(ModelError, match=r"thresholds must be in \[0, 1\]"):
        YoloDetector(columns, iou=1.5)
