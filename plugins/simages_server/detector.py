"""A YOLOv7 COCO detector exported to ONNX by the official repository, in both export forms.

- ``export.py --grid --end2end --max-wh 640``: NMS inside the graph, output ``[N, 7]`` rows of
  ``(batch, x0, y0, x1, y1, class, score)``;
- ``export.py --grid``: output ``[1, A, 85]`` rows of ``(cx, cy, w, h, objectness, 80 class scores)``;
  confidence = objectness x class score, then class-aware NMS here.

Input is RGB in [0, 1], letterboxed to the model's size (aspect kept, grey 114 padding), as YOLOv7's
own ``letterbox``; boxes are mapped back to the original image's pixels and clamped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simages_core import Box, Detection
from simages_core.boxes import clamp_box
from simages_core.coco import COCO_CLASSES

from .models import ModelError, ModelFile, check_signature, open_session

logger = logging.getLogger("simages_server")

DEFAULT_IOU = 0.65
DEFAULT_CONF = 0.25
MAX_DETECTIONS = 300  # YOLOv7's max_det
DEFAULT_SIDE = 640
PAD_GREY = 114


@dataclass(frozen=True)
class Letterbox:
    """Where the original image sits inside the model's input, to map boxes back."""

    width: int
    height: int
    left: int
    top: int
    inner_width: int
    inner_height: int

    def to_original(self, box: tuple[float, float, float, float]) -> Box | None:
        sx, sy = self.width / self.inner_width, self.height / self.inner_height
        x0, y0, x1, y1 = box
        mapped = ((x0 - self.left) * sx, (y0 - self.top) * sy, (x1 - self.left) * sx, (y1 - self.top) * sy)
        return clamp_box(mapped, self.width, self.height)


def letterbox(image: Image.Image, height: int, width: int) -> tuple[np.ndarray, Letterbox]:
    """float32 ``[3, height, width]`` in [0, 1], aspect kept, grey padding split evenly (YOLOv7's rule)."""
    image = image.convert("RGB")
    ratio = min(height / image.height, width / image.width)
    inner_w, inner_h = max(1, round(image.width * ratio)), max(1, round(image.height * ratio))
    resized = image.resize((inner_w, inner_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = round((width - inner_w) / 2 - 0.1), round((height - inner_h) / 2 - 0.1)
    canvas = np.full((height, width, 3), PAD_GREY, np.uint8)
    canvas[top : top + inner_h, left : left + inner_w] = np.asarray(resized)
    pixels = canvas.transpose(2, 0, 1).astype(np.float32) * (1 / 255.0)
    return pixels, Letterbox(image.width, image.height, left, top, inner_w, inner_h)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> list[int]:
    """Greedy class-aware NMS: indices kept, best score first; boxes of different classes never suppress."""
    kept: list[int] = []
    for cls in np.unique(classes):
        idx = np.flatnonzero(classes == cls)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        while len(idx):
            best, rest = idx[0], idx[1:]
            kept.append(int(best))
            if not len(rest):
                break
            x0 = np.maximum(boxes[best, 0], boxes[rest, 0])
            y0 = np.maximum(boxes[best, 1], boxes[rest, 1])
            x1 = np.minimum(boxes[best, 2], boxes[rest, 2])
            y1 = np.minimum(boxes[best, 3], boxes[rest, 3])
            inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
            area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
            union = area(boxes[best]) + area(boxes[rest]) - inter
            overlap = inter / np.maximum(union, 1e-9)
            idx = rest[overlap <= iou]
    kept.sort(key=lambda i: -float(scores[i]))
    return kept[:MAX_DETECTIONS]


class YoloDetector:
    """Runs one YOLOv7 ONNX export; ``detect`` answers COCO-80 detections in the image's own pixels."""

    def __init__(self, path: str | Path, *, iou: float = DEFAULT_IOU, conf: float = DEFAULT_CONF) -> None:
        if not (0.0 <= iou <= 1.0 and 0.0 <= conf <= 1.0):
            raise ModelError(f"detector thresholds must be in [0, 1]: iou={iou}, conf={conf}")
        self.path = Path(path)
        self.iou, self.conf = iou, conf
        self._session = open_session(self.path, "YOLOv7 detector")
        check_signature(self._session, self.path, "YOLOv7 detector", input_rank=4, output_ranks=(2, 3))
        model_input = self._session.get_inputs()[0]
        if model_input.type != "tensor(float)":
            raise ModelError(f"YOLOv7 detector {self.path}: input {model_input.name!r} is {model_input.type}, expected float32")
        self._input_name = model_input.name
        _, channels, height, width = model_input.shape
        if isinstance(channels, int) and channels != 3:
            raise ModelError(f"YOLOv7 detector {self.path}: input shape {model_input.shape} is not [1, 3, H, W]")
        self.height = height if isinstance(height, int) else DEFAULT_SIDE
        self.width = width if isinstance(width, int) else DEFAULT_SIDE
        shape = self._session.get_outputs()[0].shape
        self.form = "end2end" if len(shape) == 2 else "raw"
        expected = 7 if self.form == "end2end" else 5 + len(COCO_CLASSES)
        if isinstance(shape[-1], int) and shape[-1] != expected:
            what = "(batch, x0, y0, x1, y1, class, score)" if self.form == "end2end" else "(cx, cy, w, h, obj, 80 classes)"
            raise ModelError(
                f"YOLOv7 detector {self.path}: output shape {shape} needs {expected} columns {what}"
            )
        self.file = ModelFile.of(self.path)
        self.name = f"yolov7:{self.file.sha256[:12]}"  # the content, not the path: a moved copy is the same

    def info(self) -> dict[str, Any]:
        return {
            "kind": "yolov7", "name": self.name, "file": self.file.path, "sha256": self.file.sha256, "form": self.form,
            "input": [self.height, self.width], "iou": self.iou, "conf": self.conf,
        }  # fmt: skip

    def prepare(self, image: Image.Image) -> tuple[np.ndarray, Letterbox]:
        """Letterboxed input and its geometry; thread-safe."""
        return letterbox(image, self.height, self.width)

    def detect_prepared(self, pixels: np.ndarray, geometry: Letterbox) -> tuple[Detection, ...]:
        out = self._session.run(None, {self._input_name: pixels[None]})[0]
        rows = np.asarray(out, np.float32)
        if self.form == "end2end":
            rows = rows.reshape(-1, 7)
            boxes, classes, scores = rows[:, 1:5], rows[:, 5].astype(np.int64), rows[:, 6]
            keep = np.flatnonzero(scores >= self.conf)
            keep = keep[np.argsort(-scores[keep], kind="stable")][:MAX_DETECTIONS]
        else:
            rows = rows.reshape(-1, rows.shape[-1])
            candidates = rows[rows[:, 4] > self.conf]
            class_scores = candidates[:, 5:] * candidates[:, 4:5]
            classes = class_scores.argmax(axis=1) if len(candidates) else np.zeros(0, np.int64)
            scores = class_scores[np.arange(len(candidates)), classes] if len(candidates) else np.zeros(0, np.float32)
            cx, cy, w, h = (candidates[:, i] for i in range(4))
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
            confident = np.flatnonzero(scores > self.conf)
            boxes, classes, scores = boxes[confident], classes[confident], scores[confident]
            keep = np.array(nms(boxes, scores, classes, self.iou), np.int64)
        detections = []
        for i in keep:
            cls = int(classes[i])
            if not 0 <= cls < len(COCO_CLASSES):
                logger.warning("detector %s reported class %d, outside COCO-80: ignored", self.path.name, cls)
                continue
            box = geometry.to_original(tuple(float(v) for v in boxes[i]))  # type: ignore[arg-type]
            if box is not None:
                rounded = (round(box[0], 2), round(box[1], 2), round(box[2], 2), round(box[3], 2))
                detections.append(Detection(COCO_CLASSES[cls], round(float(scores[i]), 4), rounded, cls))
        return tuple(detections)

    def detect(self, image: Image.Image) -> tuple[Detection, ...]:
        return self.detect_prepared(*self.prepare(image))
