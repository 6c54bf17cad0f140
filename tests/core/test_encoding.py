"""The image encoder: every input kind and mode, orientation, size, and clear refusals."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from simages_core import ImageEncodingError, encode_image, open_image


def _decode(encoded) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(encoded.data)))
    assert image.format == "JPEG" and image.mode == "RGB"
    return image


def _jpeg_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def test_large_jpeg_is_downscaled_to_max_side_keeping_aspect(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 120, 200)).save(path, quality=90)
    encoded = encode_image(path)
    assert (encoded.width, encoded.height) == (400, 300)
    assert (encoded.source_width, encoded.source_height) == (4000, 3000)
    assert _decode(encoded).size == (400, 300)
    # Colour survives draft decoding and resizing.
    assert np.abs(np.asarray(_decode(encoded), dtype=int).mean(axis=(0, 1)) - (10, 120, 200)).max() < 4


def test_small_image_is_not_upscaled():
    encoded = encode_image(Image.new("RGB", (120, 80)))
    assert (encoded.width, encoded.height) == (120, 80)


def test_max_side_is_configurable():
    encoded = encode_image(Image.new("RGB", (1000, 2000)), max_side=256)
    assert (encoded.width, encoded.height) == (128, 256)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (800, 400), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 400, 400))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    encoded = encode_image(_jpeg_bytes(image, exif=exif))
    assert (encoded.width, encoded.height) == (200, 400)
    assert (encoded.source_width, encoded.source_height) == (400, 800)
    top = np.asarray(_decode(encoded))[10, 100]
    assert top[2] > 200 and top[0] < 60  # the blue half is now on top


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "P", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_every_mode_becomes_rgb(mode):
    image = (
        Image.new("RGB", (64, 48), (120, 120, 120)).convert(mode) if mode not in ("I;16", "I", "F") else None
    )
    if image is None:
        image = (
            Image.fromarray(np.full((48, 64), 30000, dtype=np.uint16)).convert(mode)
            if mode != "I;16"
            else Image.fromarray(np.full((48, 64), 30000, dtype=np.uint16))
        )
    out = open_image(image)
    assert out.mode == "RGB" and out.size == (64, 48)
    assert _decode(encode_image(image)).size == (64, 48)


def test_sixteen_bit_is_scaled_not_clipped():
    image = Image.fromarray(np.full((10, 10), 32768, dtype=np.uint16))
    value = np.asarray(open_image(image))[5, 5, 0]
    assert 120 <= value <= 135


def test_transparent_png_becomes_white_not_black():
    image = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    assert tuple(np.asarray(open_image(image))[25, 25]) == (255, 255, 255)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((30, 40, 3), np.uint8),
        np.zeros((30, 40), np.uint8),
        np.zeros((30, 40, 4), np.uint8),
        np.zeros((30, 40, 1), np.uint8),
        np.ones((30, 40, 3), np.float32) * 0.5,
        np.zeros((30, 40, 3), np.uint16),
        np.zeros((30, 40), bool),
    ],
)
def test_numpy_arrays(array):
    encoded = encode_image(array)
    assert (encoded.width, encoded.height) == (40, 30)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((30, 40, 2), np.uint8), "not an image"),
        (np.zeros((2, 3, 4, 5), np.uint8), "not an image"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.full((5, 5, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_arrays_are_refused(array, message):
    with pytest.raises(ImageEncodingError, match=message):
        encode_image(array)


def test_not_an_image_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ImageEncodingError, match="not an image"):
        encode_image(path)
    with pytest.raises(ImageEncodingError, match="not an image"):
        encode_image(b"%PDF-1.4 not an image")
    with pytest.raises(ImageEncodingError, match="empty"):
        encode_image(b"")
    with pytest.raises(ImageEncodingError, match="no image file"):
        encode_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageEncodingError, match="unsupported image type"):
        encode_image(12345)  # type: ignore[arg-type]


def test_truncated_jpeg_is_refused():
    data = _jpeg_bytes(Image.effect_noise((600, 400), 60).convert("RGB"))
    with pytest.raises(ImageEncodingError, match="could not be decoded"):
        encode_image(data[: len(data) // 2])


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims another size, as a decompression bomb does."""
    buf = io.BytesIO()
    Image.new("1", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 12  # signature (8) + chunk length (4)
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def test_decompression_bomb_is_refused_from_the_header():
    with pytest.raises(ImageEncodingError, match="decompression bomb"):
        encode_image(_png_claiming(50_000, 50_000))
    with pytest.raises(ImageEncodingError, match="decompression bomb"):
        encode_image(_jpeg_bytes(Image.new("RGB", (200, 200))), max_pixels=1000)


def _truncated(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((300, 200), 60).convert("RGB").save(buf, format=fmt)
    data = buf.getvalue()
    return data[: len(data) * 2 // 3]


@pytest.fixture(params=[False, True], ids=["global-false", "global-true"])
def load_truncated_global(request):
    """Pillow's process-wide flag as a host (FiftyOne, Label Studio) may set it; restored afterwards."""
    from PIL import ImageFile

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = request.param
    try:
        yield request.param
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_truncated_file_is_refused_whatever_the_global_says(load_truncated_global, fmt, tmp_path):
    from PIL import ImageFile

    data = _truncated(fmt)
    with pytest.raises(ImageEncodingError, match="could not be decoded"):
        encode_image(data)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data)
    with pytest.raises(ImageEncodingError, match="could not be decoded"):
        open_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is load_truncated_global  # we never touch it


def test_complete_files_still_encode_with_the_global_set(load_truncated_global):
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        buf = io.BytesIO()
        Image.effect_noise((300, 200), 60).convert("RGB").save(buf, format=fmt)
        assert encode_image(buf.getvalue()).width == 300


@pytest.mark.parametrize("initial", ["True", "False"])
def test_importing_the_core_leaves_pillows_global_alone(initial):
    import subprocess
    import sys

    code = (
        "from PIL import ImageFile\n"
        f"ImageFile.LOAD_TRUNCATED_IMAGES = {initial}\n"
        "import simages_core, simages_core.cli\n"
        "print(ImageFile.LOAD_TRUNCATED_IMAGES)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == initial
