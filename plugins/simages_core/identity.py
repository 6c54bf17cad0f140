"""Image identity: is this image a copy of one we already have?

A *copy* is the same photo after resizing, recompression, a crop of up to a tenth a side, a colour
shift, a watermark, an EXIF rotation or a left-right mirror; a *different photo of the same
subject* is not a copy. The fingerprint is the perceptual hash pHash (DCT-II of a 32×32 grey image,
its 8×8 lowest frequencies against their median: 64 bits; the algorithm ImageHash implements,
computed here with matrix products) of the upright image (EXIF applied) and of ten crops of it
(``CROPS``), each also mirrored: a cropped copy's whole-image hash meets the original's nearest
crop, and a mirrored copy is a copy too, since a mirrored photo in a training set leaks across its
splits as surely as the original (mirroring is the commonest augmentation). Why this hash, these
crops and this threshold, with the measured figures: DESIGN.md, "Image identity"
(``bench/bench_identity.py``).

It is computed from the smallest image that works: the API's ``thumbnail_url`` when there is one,
so a copy is recognised before its full image is downloaded (``fingerprint_results``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageOps

from ._encoding import DEFAULT_MAX_PIXELS, ImageSource, _load, _to_rgb
from ._models import SearchResult

COPY_DISTANCE = 12
"""Default threshold: two fingerprints at most this many bits apart (of 64) are copies.
Measured by ``bench/bench_identity.py``; see DESIGN.md, "Image identity"."""

HASH_BITS = 64
"""Bits of one hash; a threshold is a number of these bits."""

CROPS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 0.0, 0.0),  # the whole image: always first
    (0.05, 0.05, 0.05, 0.05),
    (0.1, 0.1, 0.1, 0.1),
    (0.1, 0.1, 0.0, 0.0),
    (0.0, 0.1, 0.1, 0.0),
    (0.1, 0.0, 0.0, 0.1),
    (0.0, 0.0, 0.1, 0.1),
    (0.1, 0.0, 0.0, 0.0),
    (0.0, 0.1, 0.0, 0.0),
    (0.0, 0.0, 0.1, 0.0),
    (0.0, 0.0, 0.0, 0.1),
)
"""Fractions cut from the (left, top, right, bottom) of the image for each hash. Symmetric left↔right,
so the mirror of a crop is another crop's mirror hash. Measured against six crops and the whole
image alone: DESIGN.md, "Image identity"."""

GRID_SIDE = 64
"""The grey image is squashed to GRID_SIDE × GRID_SIDE (pHash squashes to 32×32 anyway) before its
crops are resampled to 32×32, so the cost does not depend on the image and every crop's hash is a
fixed matrix product. 64 rather than 128: as good in the bench (recall 0.986 either way, false
merges 0.0009 vs 0.0008), and small enough that the product stays on one core (at 128 OpenBLAS
threads it, which on a loaded machine is slower, not faster)."""
DRAFT_SIDE = 256
"""A large JPEG is decoded at the smallest DCT scale at least this big, so a full image and its
256 px thumbnail are hashed from nearly the same pixels."""
_HASH_INPUT = 32  # pHash reads a 32×32 grey image (hash_size 8 × highfreq_factor 4)
_LOW = 8  # the 8×8 lowest frequencies make the 64 bits
_PART_DIGITS = HASH_BITS // 4
_MASK = (1 << HASH_BITS) - 1


class FingerprintError(ValueError):
    """A stored fingerprint is not of the form ``Fingerprint.to_hex`` writes."""


@dataclass(frozen=True)
class Fingerprint:
    """Perceptual hashes of an upright image's crops (``CROPS``, whole image first) and of their mirrors.

    ``upright`` and ``mirrored`` each hold one 64-bit hash per crop, the whole image's in the
    highest bits. Store it with ``to_hex``; never assume its length.
    """

    upright: int
    mirrored: int

    def to_hex(self) -> str:
        """How a fingerprint is stored (a FiftyOne field, a manifest, a cache): hex digits."""
        digits = _PART_DIGITS * len(CROPS)
        return f"{self.upright:0{digits}x}{self.mirrored:0{digits}x}"

    @classmethod
    def from_hex(cls, text: str) -> Fingerprint:
        """Read ``to_hex``'s form; anything else (including an older length) raises ``FingerprintError``."""
        digits = _PART_DIGITS * len(CROPS)
        if not isinstance(text, str) or len(text) != 2 * digits or not _is_hex(text):
            shown = repr(text) if len(repr(text)) <= 80 else repr(text)[:77] + "..."
            raise FingerprintError(f"a fingerprint is {2 * digits} hex digits, not {shown}")
        return cls(int(text[:digits], 16), int(text[digits:], 16))

    def parts(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The 64-bit hashes, crop by crop: (upright, mirrored)."""
        return _split(self.upright), _split(self.mirrored)

    def distance(self, other: Fingerprint) -> int:
        """Bits apart, the smallest over: either image whole against the other's crops, mirrored or not."""
        mine, theirs = self.parts(), other.parts()
        return min(
            _nearest(mine[0][0], theirs[0] + theirs[1]),
            _nearest(theirs[0][0], mine[0] + mine[1]),
        )

    def is_copy_of(self, other: Fingerprint, threshold: int = COPY_DISTANCE) -> bool:
        return self.distance(other) <= threshold

    def __str__(self) -> str:
        return self.to_hex()


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _split(value: int) -> tuple[int, ...]:
    count = len(CROPS)
    return tuple((value >> (HASH_BITS * (count - 1 - i))) & _MASK for i in range(count))


def _join(parts: Iterable[int]) -> int:
    value = 0
    for part in parts:
        value = (value << HASH_BITS) | part
    return value


def _nearest(whole: int, hashes: Iterable[int]) -> int:
    return min((whole ^ h).bit_count() for h in hashes)


def check_threshold(threshold: object) -> int:
    """A copy threshold is a whole number of bits from 0 to 64."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold <= HASH_BITS:
        raise ValueError(
            f"copy threshold must be a whole number of bits from 0 to {HASH_BITS}, not {threshold!r}"
        )
    return threshold


def fingerprint_image(image: Image.Image) -> Fingerprint:
    """The fingerprint of an image already decoded and upright (EXIF orientation applied)."""
    grid = image.convert("L").resize((GRID_SIDE, GRID_SIDE), _GRID_RESAMPLE)
    low = _low_frequencies(np.asarray(grid, dtype=np.float64))
    # The mirror of a 32×32 image has its DCT with the odd horizontal frequencies negated: no second product.
    both = np.concatenate([low, low * _MIRROR_SIGN]).reshape(2 * len(CROPS), _LOW * _LOW)
    bits = np.packbits(both > np.median(both, axis=1, keepdims=True), axis=1)
    count = len(CROPS)
    return Fingerprint(
        int.from_bytes(bits[:count].tobytes(), "big"), int.from_bytes(bits[count:].tobytes(), "big")
    )


def fingerprint(source: ImageSource) -> Fingerprint:
    """The fingerprint of a path, bytes, array or image; EXIF orientation is applied first.

    Raises ``ImageEncodingError`` for what is not a readable image (as ``encode_image`` does).
    A large JPEG is decoded at reduced scale (it is hashed at 64 px anyway).
    """
    if isinstance(source, Image.Image):
        image = ImageOps.exif_transpose(source) or source
    else:
        image = _load(source, max_pixels=DEFAULT_MAX_PIXELS, draft_to=DRAFT_SIDE)
    return fingerprint_image(_to_rgb(image))


# --- pHash as matrix products ------------------------------------------------------------------
#
# For each crop, pHash's input is the crop resampled to 32×32: X = R_rows @ G @ R_colsᵀ, where G is
# the grid and each R holds one antialiased Lanczos kernel per output pixel over the crop's window
# (what Pillow's resize with a box computes). Its 8×8 lowest DCT-II frequencies are D8 @ X @ D8ᵀ,
# D8 being the first 8 rows of the 32-point DCT-II matrix (its scale does not matter: each bit
# compares a coefficient with the block's median). So every crop's block is A_c @ G @ B_c with
# A_c = D8 @ R_rows and B_c = R_colsᵀ @ D8ᵀ, built once here: one product over all crops.


def _lanczos3(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)


def _resampling(start: float, end: float, size: int = GRID_SIDE, out: int = _HASH_INPUT) -> np.ndarray:
    """(out, size): row i averages the pixels around output i of the window [start, end) (pixels)."""
    scale = (end - start) / out
    stretch = max(scale, 1.0)  # widen the kernel when shrinking: antialiasing, as Pillow does
    centres = start + (np.arange(out) + 0.5) * scale
    weights = _lanczos3((np.arange(size)[None, :] + 0.5 - centres[:, None]) / stretch)
    return weights / weights.sum(axis=1, keepdims=True)


def _dct_rows(count: int = _LOW, size: int = _HASH_INPUT) -> np.ndarray:
    """The first ``count`` rows of the DCT-II matrix: row u is cos(π u (2n + 1) / 2N)."""
    n = np.arange(size)
    return np.cos(np.pi * np.arange(count)[:, None] * (2 * n[None, :] + 1) / (2 * size))


def _crop_products() -> tuple[np.ndarray, np.ndarray]:
    d8 = _dct_rows()
    rows = np.concatenate(  # (crops × 8, grid): D8 @ R_rows, stacked
        [d8 @ _resampling(top * GRID_SIDE, (1 - bottom) * GRID_SIDE) for _, top, _, bottom in CROPS]
    )
    columns = np.stack(  # (crops, grid, 8): R_colsᵀ @ D8ᵀ
        [_resampling(left * GRID_SIDE, (1 - right) * GRID_SIDE).T @ d8.T for left, _, right, _ in CROPS]
    )
    return rows, columns


_ROWS, _COLUMNS = _crop_products()
_MIRROR_SIGN = (-1.0) ** np.arange(_LOW)  # (-1)^v for horizontal frequency v
# Area averaging onto the grid (the Lanczos kernels above do the crops' antialiasing): as good in
# the bench as Lanczos here, and a fifth of its cost.
_GRID_RESAMPLE = Image.Resampling.BOX


def _low_frequencies(grid: np.ndarray) -> np.ndarray:
    """(crops, 8, 8): each crop's lowest DCT-II frequencies, [vertical u, horizontal v]."""
    return (_ROWS @ grid).reshape(len(CROPS), _LOW, GRID_SIDE) @ _COLUMNS


@dataclass(frozen=True)
class CopyMatch:
    """The known image a fingerprint is a copy of, and how many bits apart."""

    key: str
    distance: int


class CopyIndex:
    """Known fingerprints by key; ``find`` answers the closest within the threshold.

    Vectorised: each crop's hashes (upright, mirrored) are a contiguous uint64 row, so a lookup
    is 43 XOR-and-popcount passes over n values (measured by ``bench/bench_identity.py``
    among 100,000). Thread-safe: ``find`` and ``add`` may run on several threads (an expansion
    screens one batch while the next is being searched).
    """

    def __init__(self, threshold: int = COPY_DISTANCE, items: Iterable[tuple[str, Fingerprint]] = ()) -> None:
        self.threshold = check_threshold(threshold)
        self._keys: list[str] = []
        # Rows: the crops' upright hashes, then their mirrored ones; a column per fingerprint.
        self._hashes: np.ndarray = np.zeros((2 * len(CROPS), 16), np.uint64)
        self._lock = threading.Lock()
        for key, fp in items:
            self.add(key, fp)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def add(self, key: str, fp: Fingerprint) -> None:
        upright, mirrored = fp.parts()
        column = np.array(upright + mirrored, np.uint64)
        with self._lock:
            count = len(self._keys)
            if count == self._hashes.shape[1]:  # grow by doubling: adds stay amortised O(1)
                self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)], axis=1)
            self._hashes[:, count] = column
            self._keys.append(key)

    def find(self, fp: Fingerprint) -> CopyMatch | None:
        """The known fingerprint nearest to ``fp`` if it is a copy (ties: the first added)."""
        upright, mirrored = fp.parts()
        query = upright + mirrored
        with self._lock:
            count = len(self._keys)
            if not count:
                return None
            known = self._hashes[:, :count]
            # The query whole against every known crop (upright and mirrored), then every known
            # whole against the query's crops; one running minimum, no (n, crops) temporaries.
            distance = _popcount(known[0] ^ np.uint64(query[0]))
            for row in known[1:]:
                np.minimum(distance, _popcount(row ^ np.uint64(query[0])), out=distance)
            for value in query[1:]:
                np.minimum(distance, _popcount(known[0] ^ np.uint64(value)), out=distance)
            best = int(np.argmin(distance))
            found = int(distance[best])
            key = self._keys[best]
        return CopyMatch(key, found) if found <= self.threshold else None


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy ≥ 2.0
        return np.bitwise_count(values)
    as_bytes = np.ascontiguousarray(values).view(np.uint8).reshape(*values.shape, 8)
    return _BYTE_BITS[as_bytes].sum(axis=-1)


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.uint8)


# --- search results ---------------------------------------------------------------------------


def collapse_copies(
    result: SearchResult, fingerprints: Mapping[str, Fingerprint], threshold: int = COPY_DISTANCE
) -> SearchResult:
    """One image per group of copies: the best-scored one, its ``copies`` naming the others' ids.

    Results keep their order. Images are grouped best score first (an answer is already in that
    order; a merged list may not be), each joining the nearest kept image it is a copy of. An
    image without a fingerprint (its thumbnail could not be read) is kept as it is, never merged.
    """
    check_threshold(threshold)
    index = CopyIndex(threshold)
    copies: dict[int, list[str]] = {}
    by_score = sorted(range(len(result.images)), key=lambda i: -result.images[i].score)
    for position in by_score:
        image = result.images[position]
        fp = fingerprints.get(image.id)
        match = index.find(fp) if fp is not None else None
        if match is not None:
            copies[int(match.key)].append(image.id)
            continue
        copies[position] = []
        if fp is not None:
            index.add(str(position), fp)
    images = tuple(
        replace(image, copies=tuple(copies[position]))
        for position, image in enumerate(result.images)
        if position in copies
    )
    return replace(result, images=images, copies_collapsed=True)


# Fetching thumbnails to fingerprint them lives in its own module; these names belong here too.
from ._result_fingerprints import (  # noqa: E402
    FingerprintCache,
    ThumbnailFingerprints,
    file_fingerprint,
    fingerprint_results,
    url_fingerprint,
)

__all__ = [
    "COPY_DISTANCE",
    "CROPS",
    "HASH_BITS",
    "CopyIndex",
    "CopyMatch",
    "Fingerprint",
    "FingerprintCache",
    "FingerprintError",
    "ThumbnailFingerprints",
    "check_threshold",
    "collapse_copies",
    "file_fingerprint",
    "fingerprint",
    "fingerprint_image",
    "fingerprint_results",
    "url_fingerprint",
]
