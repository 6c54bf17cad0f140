"""Image identity: is this image a copy of one we already have?

A *copy* is the same photo after resizing, recompression, a light crop, a colour shift, a
watermark, an EXIF rotation or a left-right mirror; a *different photo of the same subject* is
not a copy. The fingerprint is ImageHash's perceptual hash (DCT of a 32×32 grey image, 64 bits)
of the upright image (EXIF applied) and of its mirror, so a mirrored copy is a copy too: a
mirrored photo in a training set leaks across its splits as surely as the original (mirroring
is the commonest augmentation). Why this hash and this threshold, with the measured figures:
DESIGN.md, "Image identity".

It is computed from the smallest image that works: the API's ``thumbnail_url`` when there is one,
so a copy is recognised before its full image is downloaded (``fingerprint_results``).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from ._encoding import ImageSource, open_image
from ._exceptions import ImageEncodingError
from ._models import SearchResult, SimilarImage

if TYPE_CHECKING:
    from .fetch import Fetcher

logger = logging.getLogger("simages_core")

COPY_DISTANCE = 10
"""Default threshold: two fingerprints at most this many bits apart (of 64) are copies.
Measured by ``bench/bench_identity.py``; see DESIGN.md, "Image identity"."""

HASH_BITS = 64
_HEX_DIGITS = HASH_BITS // 4


class FingerprintError(ValueError):
    """A stored fingerprint is not of the form ``Fingerprint.to_hex`` writes."""


@dataclass(frozen=True)
class Fingerprint:
    """Perceptual hashes of an upright image and of its left-right mirror."""

    upright: int
    mirrored: int

    def to_hex(self) -> str:
        """32 hex digits: how a fingerprint is stored (a FiftyOne field, a manifest, a cache)."""
        return f"{self.upright:0{_HEX_DIGITS}x}{self.mirrored:0{_HEX_DIGITS}x}"

    @classmethod
    def from_hex(cls, text: str) -> Fingerprint:
        if not isinstance(text, str) or len(text) != 2 * _HEX_DIGITS:
            raise FingerprintError(f"a fingerprint is {2 * _HEX_DIGITS} hex digits, not {text!r}")
        try:
            return cls(int(text[:_HEX_DIGITS], 16), int(text[_HEX_DIGITS:], 16))
        except ValueError:
            raise FingerprintError(f"a fingerprint is {2 * _HEX_DIGITS} hex digits, not {text!r}") from None

    def distance(self, other: Fingerprint) -> int:
        """Bits apart, mirror or not: the smaller of upright↔upright and upright↔mirrored."""
        return min((self.upright ^ other.upright).bit_count(), (self.upright ^ other.mirrored).bit_count())

    def is_copy_of(self, other: Fingerprint, threshold: int = COPY_DISTANCE) -> bool:
        return self.distance(other) <= threshold

    def __str__(self) -> str:
        return self.to_hex()


def check_threshold(threshold: int) -> int:
    """A copy threshold is a whole number of bits from 0 to 64."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold <= HASH_BITS:
        raise ValueError(
            f"copy threshold must be a whole number of bits from 0 to {HASH_BITS}, not {threshold!r}"
        )
    return threshold


def fingerprint_image(image: Image.Image) -> Fingerprint:
    """The fingerprint of an image already decoded and upright (EXIF orientation applied)."""
    import imagehash  # imported here: it pulls in scipy, which only callers that fingerprint need

    grey = image.convert("L")
    upright = imagehash.phash(grey)
    mirrored = imagehash.phash(ImageOps.mirror(grey))
    return Fingerprint(_as_int(upright.hash), _as_int(mirrored.hash))


def fingerprint(source: ImageSource) -> Fingerprint:
    """The fingerprint of a path, bytes, array or image; EXIF orientation is applied first.

    Raises ``ImageEncodingError`` for what is not a readable image (as ``encode_image`` does).
    """
    image = source if isinstance(source, Image.Image) else open_image(source)
    if isinstance(source, Image.Image):
        image = ImageOps.exif_transpose(image) or image
    return fingerprint_image(image)


def _as_int(bits: np.ndarray) -> int:
    value = 0
    for bit in np.asarray(bits, dtype=bool).ravel():
        value = (value << 1) | int(bit)
    return value


@dataclass(frozen=True)
class CopyMatch:
    """The known image a fingerprint is a copy of, and how many bits apart."""

    key: str
    distance: int


class CopyIndex:
    """Known fingerprints by key; ``find`` answers the closest within the threshold.

    Vectorised: the fingerprints are two uint64 arrays, so a lookup among 100,000 is one XOR and
    a popcount over each (~1 ms). Thread-safe: ``find`` and ``add`` may run on several threads
    (an expansion screens one batch while the next is being searched).
    """

    def __init__(self, threshold: int = COPY_DISTANCE, items: Iterable[tuple[str, Fingerprint]] = ()) -> None:
        self.threshold = check_threshold(threshold)
        self._keys: list[str] = []
        self._upright: np.ndarray = np.zeros(0, np.uint64)
        self._mirrored: np.ndarray = np.zeros(0, np.uint64)
        self._pending: list[tuple[str, Fingerprint]] = []
        self._lock = threading.Lock()
        for key, fp in items:
            self.add(key, fp)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys) + len(self._pending)

    def add(self, key: str, fp: Fingerprint) -> None:
        with self._lock:
            self._pending.append((key, fp))

    def find(self, fp: Fingerprint) -> CopyMatch | None:
        """The known fingerprint nearest to ``fp`` if it is a copy (ties: the first added)."""
        with self._lock:
            self._merge_pending()
            if not self._keys:
                return None
            query = np.uint64(fp.upright)
            distance = np.minimum(_popcount(self._upright ^ query), _popcount(self._mirrored ^ query))
            best = int(np.argmin(distance))
            found = int(distance[best])
        return CopyMatch(self._keys[best], found) if found <= self.threshold else None

    def _merge_pending(self) -> None:
        if self._pending:
            self._keys.extend(key for key, _ in self._pending)
            self._upright = np.concatenate(
                [self._upright, np.array([fp.upright for _, fp in self._pending], np.uint64)]
            )
            self._mirrored = np.concatenate(
                [self._mirrored, np.array([fp.mirrored for _, fp in self._pending], np.uint64)]
            )
            self._pending.clear()


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy ≥ 2.0
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(-1, 8)
    return _BYTE_BITS[as_bytes].sum(axis=1)


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.uint8)


# --- search results ---------------------------------------------------------------------------


def collapse_copies(
    result: SearchResult, fingerprints: Mapping[str, Fingerprint], threshold: int = COPY_DISTANCE
) -> SearchResult:
    """One image per group of copies: the best-scored one, its ``copies`` naming the others' ids.

    Results keep their order. An image without a fingerprint (its thumbnail could not be read)
    is kept as it is and never merged.
    """
    check_threshold(threshold)
    kept: list[SimilarImage] = []
    groups: list[list[str]] = []
    index = CopyIndex(threshold)
    for image in result.images:
        fp = fingerprints.get(image.id)
        match = index.find(fp) if fp is not None else None
        if match is not None:
            groups[int(match.key)].append(image.id)
            continue
        if fp is not None:
            index.add(str(len(kept)), fp)
        kept.append(image)
        groups.append([])
    images = tuple(replace(image, copies=tuple(group)) for image, group in zip(kept, groups, strict=True))
    return replace(result, images=images, copies_collapsed=True)


def fingerprint_results(
    images: Iterable[SimilarImage],
    fetcher: Fetcher,
    *,
    cache: FingerprintCache | None = None,
    max_workers: int = 8,
) -> dict[str, Fingerprint]:
    """Fingerprints of search results by image id, from each one's thumbnail (its full image if none).

    An image whose thumbnail cannot be fetched or read gets none (logged at DEBUG): screening then
    treats it as new, which costs at worst a duplicate, never a lost image.
    """
    todo = {image.id: image.thumbnail_url or image.url for image in images}
    found: dict[str, Fingerprint] = {}
    missing: dict[str, str] = {}
    for image_id, url in todo.items():
        cached = cache.get(url) if cache is not None else None
        if cached is not None:
            found[image_id] = cached
        else:
            missing[image_id] = url

    def one(url: str) -> Fingerprint | None:
        try:
            return fingerprint(fetcher.fetch_bytes(url).data)
        except (ImageEncodingError, OSError, ValueError) as exc:  # FetchError is an OSError
            logger.debug("no fingerprint for %s: %s", _shown_url(url), exc)
            return None

    if missing:
        with ThreadPoolExecutor(min(max_workers, len(missing)), thread_name_prefix="fingerprint") as pool:
            for (image_id, url), fp in zip(missing.items(), pool.map(one, missing.values()), strict=True):
                if fp is not None:
                    found[image_id] = fp
                    if cache is not None:
                        cache.put(url, fp)
    return found


def _shown_url(url: str) -> str:
    from .fetch import redact_url

    return redact_url(url)


class FingerprintCache:
    """A bounded, thread-safe LRU of fingerprints by image URL, so a result seen twice is fetched once."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Fingerprint] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str) -> Fingerprint | None:
        with self._lock:
            fp = self._entries.get(url)
            if fp is not None:
                self._entries.move_to_end(url)
            return fp

    def put(self, url: str, fp: Fingerprint) -> None:
        with self._lock:
            self._entries[url] = fp
            self._entries.move_to_end(url)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
