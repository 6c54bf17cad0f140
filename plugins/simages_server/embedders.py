"""Image (and text) embedders for the local server: L2-normalised float32 vectors, cosine = dot.

``DescriptorEmbedder`` is the default: a deterministic visual descriptor from
numpy and Pillow, no model weights (none can be downloaded here, and no PyPI
package ships CLIP weights). It finds near-duplicates (resized, recompressed,
lightly cropped, colour-shifted copies) and, more loosely, images of similar
colour and layout; it knows nothing of semantics. ``OnnxEmbedder`` runs
user-supplied CLIP-style encoders for real semantic search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image


class ImageEmbedder(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """One L2-normalised float32 row per RGB image."""
        ...


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class DescriptorEmbedder:
    """Colour histograms (global and on a 2x2 grid), gradient orientations on a 4x4 grid, and a tiny image.

    Each block is normalised on its own and weighted, so no block dominates by its length.
    """

    name: str = "descriptor-v1"
    side: int = 96

    @property
    def dim(self) -> int:
        return 8 * 4 * 4 + 4 * (4 * 3 * 3) + 16 * 8 + 12 * 12

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return (
            l2_normalise(np.stack([self._describe(im) for im in images]))
            if images
            else np.zeros((0, self.dim), np.float32)
        )

    def _describe(self, image: Image.Image) -> np.ndarray:
        # A fixed square thumbnail: aspect changes from light crops barely move it.
        small = image.convert("RGB").resize(
            (self.side, self.side), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        hsv = np.asarray(small.convert("HSV"), dtype=np.float32) / 255.0
        grey = np.asarray(small.convert("L"), dtype=np.float32) / 255.0
        blocks = [
            (_colour_histogram(hsv, (8, 4, 4)), 1.0),
            (np.concatenate([_colour_histogram(cell, (4, 3, 3)) for cell in _grid(hsv, 2)]), 1.0),
            (np.concatenate([_orientation_histogram(cell, 8) for cell in _grid(grey, 4)]), 1.2),
            (_tiny_image(grey, 12), 1.0),
        ]
        return np.concatenate([weight * _unit(block) for block, weight in blocks]).astype(np.float32)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _grid(array: np.ndarray, n: int) -> list[np.ndarray]:
    h, w = array.shape[:2]
    return [
        array[i * h // n : (i + 1) * h // n, j * w // n : (j + 1) * w // n]
        for i in range(n)
        for j in range(n)
    ]


def _colour_histogram(hsv: np.ndarray, bins: tuple[int, int, int]) -> np.ndarray:
    hist, _ = np.histogramdd(hsv.reshape(-1, 3), bins=bins, range=((0, 1), (0, 1), (0, 1)))
    # Square root (Hellinger) so a dominant colour does not drown the others.
    return np.sqrt(hist.ravel() / max(hist.sum(), 1.0))


def _orientation_histogram(grey: np.ndarray, bins: int) -> np.ndarray:
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned: contrast polarity does not matter
    index = np.minimum((angle / np.pi * bins).astype(int), bins - 1)
    hist = np.bincount(index.ravel(), weights=magnitude.ravel(), minlength=bins)
    return np.sqrt(hist / max(hist.sum(), 1e-12))


def _tiny_image(grey: np.ndarray, side: int) -> np.ndarray:
    tiny = np.asarray(
        Image.fromarray((grey * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BOX)
    )
    tiny = tiny.astype(np.float32).ravel()
    return (tiny - tiny.mean()) / max(float(tiny.std()), 1e-6)


class OnnxEmbedder:
    """User-supplied CLIP-style ONNX encoders, run with onnxruntime; nothing is ever downloaded.

    The image model takes float32 ``[N, 3, S, S]`` (RGB, scaled to [0, 1] then
    normalised with CLIP's mean and std) and returns ``[N, D]``; the text model,
    if given, takes int64 token ids ``[N, L]`` and returns ``[N, D]``. Tokens are
    produced by ``tokenize`` (a byte-level fallback: real CLIP text encoders need
    their own tokenizer, which the user supplies by subclassing).
    """

    MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
    STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)

    def __init__(
        self, image_model: str | Path, text_model: str | Path | None = None, *, text_length: int = 77
    ):
        import onnxruntime  # optional dependency: the [onnx] extra

        for path in (image_model, text_model):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"ONNX model not found: {path}")
        options = onnxruntime.SessionOptions()
        providers = ["CPUExecutionProvider"]
        self._image = onnxruntime.InferenceSession(str(image_model), options, providers=providers)
        self._text = (
            onnxruntime.InferenceSession(str(text_model), options, providers=providers)
            if text_model
            else None
        )
        shape = self._image.get_inputs()[0].shape
        self.side = shape[-1] if isinstance(shape[-1], int) else 224
        self.text_length = text_length
        self.dim = int(self._image.get_outputs()[0].shape[-1])
        self.name = f"onnx:{Path(image_model).name}"

    @property
    def supports_text(self) -> bool:
        return self._text is not None

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        batch = np.stack(
            [
                (np.asarray(im.convert("RGB").resize((self.side, self.side)), np.float32) / 255.0 - self.MEAN)
                / self.STD
                for im in images
            ]
        ).transpose(0, 3, 1, 2)
        (out,) = self._image.run(None, {self._image.get_inputs()[0].name: batch.astype(np.float32)})
        return l2_normalise(np.asarray(out, np.float32))

    def tokenize(self, texts: list[str]) -> np.ndarray:
        tokens = np.zeros((len(texts), self.text_length), np.int64)
        for i, text in enumerate(texts):
            encoded = list(text.lower().encode("utf-8"))[: self.text_length]
            tokens[i, : len(encoded)] = encoded
        return tokens

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if self._text is None:
            raise RuntimeError("no ONNX text encoder configured")
        (out,) = self._text.run(None, {self._text.get_inputs()[0].name: self.tokenize(texts)})
        return l2_normalise(np.asarray(out, np.float32))
