"""Reading any image input safely, and encoding it small and fast for the ``image`` field.

The official client (``getsimilar``) decodes the full image, resizes it so the
longest side is 400 px and saves a JPEG at quality 100. We send the same
geometry but decode large JPEGs at reduced scale (libjpeg's DCT scaling via
``Image.draft``), never upscale, and use a quality that keeps the payload small
without visible loss at that size.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ._exceptions import ImageEncodingError

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray
"""What the core accepts as an image: a file path, encoded bytes, a PIL image, or an array."""

DEFAULT_MAX_SIDE = 400
# q85 with 4:2:0 subsampling is the usual "visually lossless" point for a
# 400 px thumbnail; q100 (the official client) roughly triples the bytes.
DEFAULT_JPEG_QUALITY = 85
# Pillow's own bomb check warns at ~89 MP and fails at twice that; we refuse
# earlier, from the header alone, before any pixel is decoded.
DEFAULT_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class EncodedImage:
    """A JPEG ready for the ``image`` field, and the sizes it came from."""

    data: str
    """Base64 of the JPEG bytes."""
    width: int
    height: int
    source_width: int
    source_height: int

    @property
    def nbytes(self) -> int:
        """Size of the base64 payload in bytes, as sent over the wire."""
        return len(self.data)


def open_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read any supported source as a fully decoded RGB image, EXIF orientation applied."""
    return _to_rgb(_load(source, max_pixels=max_pixels, draft_to=None))


def encode_image(
    source: ImageSource,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    quality: int = DEFAULT_JPEG_QUALITY,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> EncodedImage:
    """Downscale so the longest side is at most ``max_side`` and encode as base64 JPEG."""
    if max_side < 16:
        raise ValueError(f"max_side must be at least 16, got {max_side}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be from 1 to 100, got {quality}")
    image = _load(source, max_pixels=max_pixels, draft_to=max_side)
    source_size = getattr(image, "_simages_source_size", image.size)
    image = _to_rgb(image)
    width, height = image.size
    scale = max_side / max(width, height)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # reducing_gap lets Pillow shrink by an integer factor first (cheap) and
        # finish with Lanczos over a small image, as fast as draft and as sharp.
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return EncodedImage(
        data=base64.b64encode(buffer.getvalue()).decode("ascii"),
        width=image.width,
        height=image.height,
        source_width=source_size[0],
        source_height=source_size[1],
    )


def _load(source: ImageSource, *, max_pixels: int, draft_to: int | None) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    check_image_source(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw: BinaryIO = io.BytesIO(bytes(source))
        what = "image bytes"
    else:
        path = _as_path(source)
        try:
            raw = path.open("rb")
        except OSError as exc:
            raise ImageEncodingError(f"image file {_shown(path)} cannot be read: {exc.strerror}") from None
        what = repr(path.name)
    with raw:
        return _decode(_EofWatch(raw), what, max_pixels=max_pixels, draft_to=draft_to)


def _decode(fp: _EofWatch, what: str, *, max_pixels: int, draft_to: int | None) -> Image.Image:
    image: Image.Image
    try:
        image = Image.open(cast(BinaryIO, fp))
        # From here on, running out of data is truncation (getexif may already load a PNG).
        fp.watching = True
        width, height = image.size
        if width * height > max_pixels:
            raise ImageEncodingError(
                f"{what} is {width}x{height} pixels, over the limit of {max_pixels:,} "
                "(refused as a possible decompression bomb)"
            )
        # Orientation 5-8 swaps the axes; the source size we report is the upright one.
        upright = (height, width) if image.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (width, height)
        if draft_to is not None and image.format == "JPEG":
            scale = draft_to / max(width, height)
            if scale < 1 and isinstance(image, ImageFile.ImageFile):
                image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        image.load()
        if fp.hit_eof:
            # Pillow stops silently at the end of the data when a host set the process-wide
            # ImageFile.LOAD_TRUNCATED_IMAGES; a half-grey image must never reach a paid API.
            raise ImageEncodingError(f"{what} could not be decoded: image file is truncated")
        image = ImageOps.exif_transpose(image)
    except ImageEncodingError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageEncodingError(f"{what} refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageEncodingError(f"{what} is not an image Pillow can read") from None
    except MemoryError:
        raise
    except Exception as exc:
        # Pillow reports truncated or corrupt data as OSError/SyntaxError, but a hostile file
        # can also raise struct.error, IndexError, ...; each is this image's problem alone.
        raise ImageEncodingError(f"{what} could not be decoded: {type(exc).__name__}: {exc!s:.200}") from None
    image._simages_source_size = upright  # type: ignore[attr-defined]
    return image


def check_image_source(source: object) -> None:
    """Cheap checks of an image input before any decoding; raises ``ImageEncodingError`` (field ``image``).

    The type, that bytes are not empty, that an array has an image's shape, and that
    a path names an existing file: a missing file is reported as such, never as a
    decoding or base64 problem. ``Query`` runs this when it is built.
    """
    if isinstance(source, Image.Image):
        return
    if isinstance(source, np.ndarray):
        _check_array_shape(source)
        return
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageEncodingError("image bytes are empty")
        return
    if isinstance(source, (str, os.PathLike)):
        path = _as_path(source)
        try:
            if path.stat().st_size == 0 and path.is_file():
                raise ImageEncodingError(f"image file {_shown(path)} is empty")
        except (FileNotFoundError, NotADirectoryError):
            hint = "pass a web image as url=" if _shown(source).startswith(("http://", "https://")) else None
            raise ImageEncodingError(
                f"image file not found: {_shown(source)} ({hint or 'no image file at that path'})"
            ) from None
        except OSError as exc:  # too long, no permission, a loop of links...
            raise ImageEncodingError(f"image file {_shown(path)} cannot be read: {exc.strerror}") from None
        if not path.is_file():
            raise ImageEncodingError(f"image path {_shown(path)} is a folder or device, not an image file")
        return
    raise ImageEncodingError(
        f"unsupported image type {type(source).__name__}: give a file path, bytes, a PIL image or a numpy array"
    )


def _as_path(source: str | os.PathLike[Any]) -> Path:
    raw = os.fspath(source)
    text = os.fsdecode(raw)
    if not text.strip():
        raise ImageEncodingError("image path is empty")
    if "\x00" in text:
        raise ImageEncodingError(f"image path {text[:80]!r} contains a NUL character")
    return Path(text)


def _shown(path: str | os.PathLike[Any]) -> str:
    """The path as the caller wrote it (``Path`` would turn ``https://`` into ``https:/``), cut if long."""
    text = os.fsdecode(os.fspath(path))
    return text if len(text) <= 120 else text[:57] + "..." + text[-60:]


class _EofWatch:
    """A binary file that notes when a read finds nothing left while ``watching``.

    That is how a truncated image shows while Pillow decodes it, whatever the
    process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES`` says (hosts such as FiftyOne
    or Label Studio may set it; we never touch it).
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.watching = False
        self.hit_eof = False

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        if self.watching and not data and size != 0:
            self.hit_eof = True
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _check_array_shape(array: np.ndarray) -> None:
    squeezed = array.shape[:2] if array.ndim == 3 and array.shape[2] == 1 else array.shape
    if len(squeezed) not in (2, 3) or (len(squeezed) == 3 and array.shape[2] not in (3, 4)):
        raise ImageEncodingError(
            f"array of shape {array.shape} is not an image: expected HxW, HxWx3 (RGB) or HxWx4 (RGBA)"
        )
    if array.size == 0:
        raise ImageEncodingError("array image is empty")


def _from_array(array: np.ndarray) -> Image.Image:
    _check_array_shape(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8:
        array = _to_uint8(array)
    return Image.fromarray(np.ascontiguousarray(array))


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageEncodingError("float image has NaN or infinite values")
        # Floats are taken as [0, 1], the convention of skimage and most ML code.
        return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    raise ImageEncodingError(f"array dtype {array.dtype} is not an image type")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and 32-bit greyscale: convert("RGB") would clip at 255, so scale instead.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) <= 65535 else array.max()
        grey = (np.clip(array, 0, top) * (255.0 / top) + 0.5).astype(np.uint8) if top else array
        return Image.fromarray(np.asarray(grey, dtype=np.uint8)).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent areas become white, as viewers show them, not black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
