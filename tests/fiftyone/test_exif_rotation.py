"""An EXIF-rotated photo imported by the plugin: its metadata, its boxes and a COCO export all
describe the upright image the server indexed and a browser (the FiftyOne App) shows.

The file stores its pixels on their side (300 wide, 451 high) with EXIF orientation 6; upright it
is 451 x 300, which is what the server's index, the core's encoder and its COCO boxes use.
"""

from __future__ import annotations

import json

import fiftyone as fo
import pytest
from fo_helpers import unique_name
from PIL import Image, ImageDraw, ImageOps

import simages_fiftyone
from simages_server.indexing import build_index
from simages_server.testing import ServerProcess

pytestmark = pytest.mark.integration

UPRIGHT = (451, 300)
# (COCO category id, name, upright box x0, y0, x1, y1, colour): two objects far from the centre
# and from each other, so a box on the raw (sideways) geometry lands on background.
OBJECTS = [
    (17, "cat", (30, 40, 150, 120), (220, 20, 20)),
    (18, "dog", (300, 170, 430, 280), (20, 20, 220)),
]


def rotated_photo(path) -> Image.Image:
    """Write a JPEG whose pixels are stored rotated, EXIF orientation 6; return the upright image."""
    upright = Image.new("RGB", UPRIGHT, (235, 235, 235))
    draw = ImageDraw.Draw(upright)
    for _, _, box, colour in OBJECTS:
        draw.rectangle(box, fill=colour)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, format="JPEG", quality=95, exif=exif)
    with Image.open(path) as stored:
        assert stored.size == (300, 451)  # raw, sideways
        shown = ImageOps.exif_transpose(stored)
        assert shown.size == UPRIGHT
        for _, _, (x0, y0, x1, y1), colour in OBJECTS:  # the file displays as drawn
            assert _close(shown.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)), colour)
    return upright


def _close(pixel, colour, tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


@pytest.fixture
def rotated_server(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rotated_photo(images / "sideways.jpg")
    coco = {
        "images": [{"id": 1, "file_name": "sideways.jpg", "width": UPRIGHT[0], "height": UPRIGHT[1]}],
        "annotations": [
            {"id": i, "image_id": 1, "category_id": cid, "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0}
            for i, (cid, _, (x0, y0, x1, y1), _) in enumerate(OBJECTS, start=1)
        ],
        "categories": [{"id": cid, "name": name} for cid, name, _, _ in OBJECTS],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    build_index(images, tmp_path / "index", coco=tmp_path / "annotations.json")
    with ServerProcess(tmp_path / "index", state=tmp_path, log_path=tmp_path / "server.log") as server:
        yield server, images / "sideways.jpg"


def test_rotated_image_gets_upright_metadata_and_exports_boxes_on_its_objects(
    rotated_server, tmp_path, monkeypatch, cleanup_datasets
):
    server, photo = rotated_server
    monkeypatch.setenv("SIMAGES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIMAGES_CACHE", "0")
    name = unique_name("simages-exif")
    cleanup_datasets.append(name)
    source = fo.Dataset(unique_name("simages-exif-src"))
    cleanup_datasets.append(source.name)
    found = simages_fiftyone.find_similar(
        source, image=photo, num_similar=1, labels=True, api_key=server.api_key, api_url=server.url
    )
    (hit,) = found.images
    assert (hit.image.width, hit.image.height) == UPRIGHT  # what the server says
    served = {d.name: d.box for d in hit.image.detections}
    result = simages_fiftyone.import_similar(
        source,
        image=photo,
        num_similar=1,
        new_dataset_name=name,
        media_dir=str(tmp_path / "media"),
        screen_copies=False,
        api_key=server.api_key,
        api_url=server.url,
    )
    assert result.imported == 1 and not result.failed
    sample = fo.load_dataset(name).first()
    assert (sample.metadata.width, sample.metadata.height) == UPRIGHT

    export = tmp_path / "coco"
    fo.load_dataset(name).export(
        export_dir=str(export),
        dataset_type=fo.types.COCODetectionDataset,
        label_field="detections",
        export_media=True,
    )
    labels = json.loads((export / "labels.json").read_text())
    (image,) = labels["images"]
    assert (image["width"], image["height"]) == UPRIGHT
    names = {c["id"]: c["name"] for c in labels["categories"]}
    exported = {names[a["category_id"]]: a["bbox"] for a in labels["annotations"]}
    assert set(exported) == set(served) == {"cat", "dog"}
    with Image.open(export / "data" / image["file_name"]) as stored:
        shown = ImageOps.exif_transpose(stored)  # as the App (a browser) displays the file
        for obj, (x, y, w, h) in exported.items():
            x0, y0, x1, y1 = served[obj]
            assert (x, y, x + w, y + h) == pytest.approx((x0, y0, x1, y1), abs=1.0), obj
            colour = next(c for _, n, _, c in OBJECTS if n == obj)
            assert _close(shown.getpixel((int(x + w / 2), int(y + h / 2))), colour), obj
