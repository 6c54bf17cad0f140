"""A CLIP model folder in the ONNX layout immich and open_clip exports use: image and text embeddings.

The folder describes itself (``config.json``, ``visual/model.onnx`` with
``visual/preprocess_cfg.json``, ``textual/model.onnx`` with ``textual/tokenizer.json``
and ``textual/tokenizer_config.json``), so preprocessing is read from it, never
hard-coded, and text is tokenised by the ``tokenizers`` library from the
folder's own ``tokenizer.json``. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .embedders import l2_normalise
from .models import ModelError, ModelFile, check_signature, open_session, require_file

_INTERPOLATION = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
_TOKEN_DTYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64}
CLIP_FILES = (
    "config.json",
    "visual/model.onnx",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/tokenizer.json",
    "textual/tokenizer_config.json",
)


@dataclass(frozen=True)
class ClipPreprocess:
    """``visual/preprocess_cfg.json``: how an RGB image becomes the image model's input."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Image.Resampling
    resize_mode: str
    """``shortest``: resize the short side, then centre-crop; ``squash``: resize to the size as is."""

    @classmethod
    def load(cls, path: Path) -> ClipPreprocess:
        return cls.load_dict(_read_json(path), path)

    @classmethod
    def load_dict(cls, raw: Any, path: Path | str = "preprocess_cfg.json") -> ClipPreprocess:
        try:
            size = raw["size"]
            height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[-1]))
            mean = tuple(float(v) for v in raw.get("mean", (0.48145466, 0.4578275, 0.40821073)))
            std = tuple(float(v) for v in raw.get("std", (0.26862954, 0.26130258, 0.27577711)))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"{path}: needs 'size' (int or [h, w]), 'mean' and 'std' ({exc!r})") from None
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or min(height, width) <= 0:
            raise ModelError(f"{path}: 'mean' and 'std' need 3 values (std > 0) and 'size' must be positive")
        interpolation = str(raw.get("interpolation", "bicubic")).lower()
        if interpolation not in _INTERPOLATION:
            raise ModelError(f"{path}: unknown interpolation {interpolation!r} (one of {', '.join(_INTERPOLATION)})")
        resize_mode = str(raw.get("resize_mode", "shortest")).lower()
        if resize_mode not in ("shortest", "squash"):
            raise ModelError(f"{path}: unknown resize_mode {resize_mode!r} (shortest or squash)")
        return cls(height, width, mean, std, _INTERPOLATION[interpolation], resize_mode)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """float32 ``[3, H, W]``, normalised; safe to call from worker threads."""
        image = image.convert("RGB")
        if self.resize_mode == "squash":
            image = image.resize((self.width, self.height), self.interpolation, reducing_gap=3.0)
        else:
            scale = max(self.width / image.width, self.height / image.height)
            w, h = max(self.width, round(image.width * scale)), max(self.height, round(image.height * scale))
            image = image.resize((w, h), self.interpolation, reducing_gap=3.0)
            left, top = (w - self.width) // 2, (h - self.height) // 2
            image = image.crop((left, top, left + self.width, top + self.height))
        pixels = np.asarray(image, np.float32) * (1 / 255.0)
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))


class ClipEmbedder:
    """Image and text embeddings from a CLIP folder; scores are cosine similarities."""

    supports_text = True

    def __init__(self, folder: str | Path) -> None:
        try:
            from tokenizers import Tokenizer  # the [onnx] extra
        except ImportError:
            raise ModelError("the tokenizers package is needed for CLIP: pip install 'simages-plugins[onnx]'") from None

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ModelError(f"CLIP model folder not found: {self.folder}")
        paths = {rel: require_file(self.folder / rel, "CLIP model file") for rel in CLIP_FILES}
        config = _read_json(paths["config.json"])
        embed_dim = config.get("embed_dim") if isinstance(config, dict) else None
        if not isinstance(embed_dim, int) or embed_dim <= 0:
            raise ModelError(f"{paths['config.json']}: needs 'embed_dim', a positive integer")
        text_cfg = config.get("text_cfg") or {}
        self.context_length = int(text_cfg.get("context_length", 77)) if isinstance(text_cfg, dict) else 77
        self.dim = embed_dim
        self.preprocess = ClipPreprocess.load(paths["visual/preprocess_cfg.json"])

        self._visual = open_session(paths["visual/model.onnx"], "CLIP image model")
        check_signature(self._visual, paths["visual/model.onnx"], "CLIP image model", input_rank=4, output_ranks=(2,))
        self._check_visual(paths["visual/model.onnx"])
        self._textual = open_session(paths["textual/model.onnx"], "CLIP text model")
        check_signature(self._textual, paths["textual/model.onnx"], "CLIP text model", input_rank=2, output_ranks=(2,))
        text_input = self._textual.get_inputs()[0]
        if text_input.type not in _TOKEN_DTYPES:
            raise ModelError(
                f"CLIP text model {paths['textual/model.onnx']}: input {text_input.name!r} is "
                f"{text_input.type}, expected int32 or int64 token ids"
            )
        self._token_dtype = _TOKEN_DTYPES[text_input.type]
        self._check_output_dim(self._textual, paths["textual/model.onnx"], "CLIP text model")

        try:
            self.tokenizer = Tokenizer.from_file(str(paths["textual/tokenizer.json"]))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise ModelError(f"tokenizer {paths['textual/tokenizer.json']} does not load: {exc}") from None
        tokenizer_config = _read_json(paths["textual/tokenizer_config.json"])
        pad_token = tokenizer_config.get("pad_token") if isinstance(tokenizer_config, dict) else None
        if isinstance(pad_token, dict):  # transformers writes AddedToken objects as {"content": ...}
            pad_token = pad_token.get("content")
        pad_id = self.tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
        if pad_id is None:
            raise ModelError(
                f"{paths['textual/tokenizer_config.json']}: 'pad_token' {pad_token!r} is not a token of "
                f"{paths['textual/tokenizer.json']}"
            )
        self.tokenizer.enable_padding(length=self.context_length, pad_id=pad_id, pad_token=pad_token)
        self.tokenizer.enable_truncation(max_length=self.context_length)

        self.files = {rel: ModelFile.of(path) for rel, path in paths.items()}
        combined = hashlib.sha256("".join(f.sha256 for f in self.files.values()).encode()).hexdigest()
        self.digest = combined
        # Identity is the content, not the path: a moved or renamed copy is the same model.
        self.name = f"clip:{combined[:12]}"

    def _check_visual(self, path: Path) -> None:
        shape = self._visual.get_inputs()[0].shape
        want = (3, self.preprocess.height, self.preprocess.width)
        for got, expected in zip(shape[1:], want, strict=True):
            if isinstance(got, int) and got != expected:
                raise ModelError(
                    f"CLIP image model {path}: input shape {shape} does not take [N, 3, "
                    f"{self.preprocess.height}, {self.preprocess.width}] as visual/preprocess_cfg.json says"
                )
        self._check_output_dim(self._visual, path, "CLIP image model")

    def _check_output_dim(self, session: Any, path: Path, what: str) -> None:
        last = session.get_outputs()[0].shape[-1]
        if isinstance(last, int) and last != self.dim:
            raise ModelError(f"{what} {path}: output dimension {last}, but config.json says embed_dim {self.dim}")

    def info(self) -> dict[str, Any]:
        return {
            "kind": "clip", "name": self.name, "folder": str(self.folder.resolve()), "dim": self.dim,
            "files": {rel: f.sha256 for rel, f in self.files.items()},
        }  # fmt: skip

    # --- images --------------------------------------------------------------

    def prepare(self, image: Image.Image) -> np.ndarray:
        return self.preprocess(image)

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        if not len(batch):
            return np.zeros((0, self.dim), np.float32)
        (out,) = self._visual.run(None, {self._visual.get_inputs()[0].name: batch.astype(np.float32, copy=False)})[:1]
        return l2_normalise(np.asarray(out, np.float32).reshape(len(batch), -1))

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_prepared(np.stack([self.prepare(im) for im in images]))

    # --- text ----------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> np.ndarray:
        """Token ids ``[N, context_length]`` in the dtype the text model declares, padded with its pad token."""
        encodings = self.tokenizer.encode_batch(texts)
        return np.array([e.ids for e in encodings], dtype=self._token_dtype).reshape(len(texts), self.context_length)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        (out,) = self._textual.run(None, {self._textual.get_inputs()[0].name: self.tokenize(texts)})[:1]
        return l2_normalise(np.asarray(out, np.float32).reshape(len(texts), -1))


def _read_json(path: Path) -> Any:
    require_file(path, "model file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None
