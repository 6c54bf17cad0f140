"""The 80 COCO class names that the API's ``coco_yolov7`` labels use.

``COCO_CLASSES[i]`` is the name of YOLO class index ``i`` (what YOLOv7 and the
local server put in ``category_id``); ``COCO_CATEGORY_IDS`` maps a name to its
id in the original COCO annotation files (1..90, with gaps), which is what a
COCO ``annotations.json`` uses.
"""

from __future__ import annotations

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# The original COCO ids skip 12, 26, 29, 30, 45, 66, 68, 69, 71 and 83.
_MISSING_COCO_IDS = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83})
COCO_CATEGORY_IDS: dict[str, int] = dict(
    zip(COCO_CLASSES, (i for i in range(1, 91) if i not in _MISSING_COCO_IDS), strict=False)
)
YOLO_CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(COCO_CLASSES)}

assert len(COCO_CLASSES) == 80 and len(COCO_CATEGORY_IDS) == 80
