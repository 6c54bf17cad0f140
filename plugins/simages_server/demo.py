"""A demo collection from real photos that ship inside scikit-image's wheel, with hand-made COCO boxes.

Each labelled photo also gets near-duplicate variants (resized, recompressed,
cropped, flipped, colour-shifted) whose boxes are transformed with them, so
near-duplicate search and labels have something real to find, on any machine,
with no download.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from simages_core import Box
from simages_core.boxes import clamp_box
from simages_core.coco import COCO_CATEGORY_IDS

Labelled = list[tuple[str, Box]]

# Boxes placed by eye on a 50 px grid over each photo: [x_min, y_min, x_max, y_max] in pixels.
PHOTOS: dict[str, tuple[Labelled, str]] = {
    "astronaut": ([("person", (22, 12, 365, 512))], "astronaut Eileen Collins in an orange space suit, a flag and a shuttle model"),
    "chelsea": ([("cat", (0, 0, 410, 300))], "close-up of Chelsea the tabby cat"),
    "coffee": ([("cup", (172, 18, 412, 300)), ("spoon", (325, 65, 425, 325))], "a cup of espresso on a saucer with a spoon, on a wooden table"),
    "motorcycle_left": ([("motorcycle", (92, 95, 685, 450))], "a red motorcycle parked in a garage"),
    "camera": ([("person", (0, 65, 335, 512))], "a cameraman with a film camera on a tripod, in a field"),
    "horse": ([("horse", (15, 8, 390, 308))], "silhouette of a horse"),
    "clock": ([("clock", (140, 95, 285, 215))], "a wall clock, blurred by motion"),
    "rocket": ([], "a rocket on the launch pad"),
}  # fmt: skip
# Photos with no COCO object: negatives that must never get boxes.
UNLABELLED = ("brick", "grass", "gravel", "coins", "moon", "hubble_deep_field", "retina", "page", "text")


@dataclass(frozen=True)
class Variant:
    suffix: str
    apply: Callable[[Image.Image], Image.Image]
    boxes: Callable[[Box, int, int], Box]
    """How a box moves, given the original width and height."""
    jpeg_quality: int = 90


def _crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((round(w * 0.06), round(h * 0.06), round(w * 0.94), round(h * 0.94)))


def _crop_box(box: Box, w: int, h: int) -> Box:
    dx, dy = round(w * 0.06), round(h * 0.06)
    return (box[0] - dx, box[1] - dy, box[2] - dx, box[3] - dy)


VARIANTS: tuple[Variant, ...] = (
    Variant(
        "resized",
        lambda im: im.resize((round(im.width * 0.6), round(im.height * 0.6)), Image.Resampling.LANCZOS),
        lambda b, w, h: (b[0] * 0.6, b[1] * 0.6, b[2] * 0.6, b[3] * 0.6),
    ),
    Variant("recompressed", lambda im: im, lambda b, w, h: b, jpeg_quality=25),
    Variant("cropped", _crop, _crop_box),
    Variant("flipped", lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), lambda b, w, h: (w - b[2], b[1], w - b[0], b[3])),
    Variant("warmer", lambda im: ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.12)).enhance(1.3), lambda b, w, h: b),
)  # fmt: skip


def _load_photo(name: str) -> Image.Image | None:
    from skimage import data

    # The stereo pair ships as one loader returning (left, right, disparity).
    stereo = {"motorcycle_left": 0, "motorcycle_right": 1}
    loader = getattr(data, "stereo_motorcycle" if name in stereo else name, None)
    if loader is None:
        return None
    try:
        array = loader()[stereo[name]] if name in stereo else loader()
    except Exception:  # a data file that is fetched, not shipped: skip it
        return None
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        array = (
            (np.clip(array, 0, 1) * 255).astype(np.uint8)
            if array.dtype.kind == "f"
            else array.astype(np.uint8)
        )
    return Image.fromarray(array).convert("RGB")


def build_demo_index(out: str | Path, *, progress: bool = False) -> Path:
    """The demo collection in ``out`` and its index (descriptor, COCO labels) in ``out/index``.

    What ``simages-server demo``, the demo script, the tests and the benchmarks all serve.
    Returns the index folder.
    """
    from .indexing import build_index  # the collection itself needs no embedder

    out = Path(out)
    images_dir = build_demo_collection(out)
    build_index(images_dir, out / "index", coco=out / "annotations.json", progress=progress)
    return out / "index"


def build_demo_collection(out: str | Path) -> Path:
    """Write ``out/images/*.jpg`` and ``out/annotations.json`` (COCO, with captions). Returns the images folder."""
    out = Path(out)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    coco_images: list[dict] = []
    coco_annotations: list[dict] = []

    def add(file_name: str, image: Image.Image, labels: Labelled, caption: str, quality: int = 92) -> None:
        path = images_dir / file_name
        if not path.exists():
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality)
            path.write_bytes(buffer.getvalue())
        image_id = len(coco_images) + 1
        coco_images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": image.width,
                "height": image.height,
                "caption": caption,
            }
        )
        for name, box in labels:
            clamped = clamp_box(box, image.width, image.height)
            if clamped is None:
                continue
            x0, y0, x1, y1 = (round(v, 2) for v in clamped)
            coco_annotations.append(
                {
                    "id": len(coco_annotations) + 1,
                    "image_id": image_id,
                    "category_id": COCO_CATEGORY_IDS[name],
                    "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                    "area": round((x1 - x0) * (y1 - y0), 2),
                    "iscrowd": 0,
                }
            )

    for name, (labels, caption) in PHOTOS.items():
        photo = _load_photo(name)
        if photo is None:
            continue
        add(f"{name}.jpg", photo, labels, caption)
        for variant in VARIANTS:
            moved = [(cls, variant.boxes(box, photo.width, photo.height)) for cls, box in labels]
            add(
                f"{name}_{variant.suffix}.jpg",
                variant.apply(photo),
                moved,
                f"{caption} ({variant.suffix})",
                variant.jpeg_quality,
            )
    for name in UNLABELLED:
        photo = _load_photo(name)
        if photo is not None:
            add(f"{name}.jpg", photo, [], name.replace("_", " "))

    categories = [{"id": cid, "name": name} for name, cid in COCO_CATEGORY_IDS.items()]
    coco = {"images": coco_images, "annotations": coco_annotations, "categories": categories}
    (out / "annotations.json").write_text(json.dumps(coco, indent=1), encoding="utf-8")
    return images_dir
