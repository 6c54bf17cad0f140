"""Fingerprints of search results read from their thumbnails: fetched once, through the guarded fetch.

Part of ``simages_core.identity`` (which re-exports these names); separate so each module keeps one job.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ._exceptions import SimilarImagesError
from ._models import SimilarImage
from .fetch import Fetcher, FetchPolicy, redact_url

if TYPE_CHECKING:
    from .identity import Fingerprint

logger = logging.getLogger("simages_core")


def url_fingerprint(url: str, fetcher: Fetcher) -> Fingerprint | None:
    """The fingerprint of the image at ``url``, or ``None`` when it cannot be fetched or read (logged
    at DEBUG): a result without one is screened as new, which costs at worst a duplicate."""
    from .identity import fingerprint  # at call time: identity imports this module

    try:
        return fingerprint(fetcher.fetch_bytes(url).data)
    except (SimilarImagesError, OSError, ValueError) as exc:  # FetchError, ImageEncodingError
        logger.debug("no fingerprint for %s: %s", redact_url(url), exc)
        return None


def file_fingerprint(path: str | os.PathLike[str]) -> Fingerprint | None:
    """The fingerprint of a local image file, or ``None`` when it is missing, unreadable, truncated
    or not an image (EXIF orientation applied, a large JPEG decoded at reduced scale)."""
    from .identity import fingerprint

    try:
        return fingerprint(Path(path))
    except (SimilarImagesError, OSError, ValueError):
        return None


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
        return url_fingerprint(url, fetcher)

    def record(computed: Iterable[Fingerprint | None]) -> None:
        for (image_id, url), fp in zip(missing.items(), computed, strict=True):
            if fp is not None:
                found[image_id] = fp
                if cache is not None:
                    cache.put(url, fp)

    if len(missing) == 1 or (missing and max_workers <= 1):
        # Callers that keep their own pool ask for one image at a time: no pool of our own for it.
        record(one(url) for url in missing.values())
    elif missing:
        with ThreadPoolExecutor(min(max_workers, len(missing)), thread_name_prefix="fingerprint") as pool:
            record(pool.map(one, missing.values()))
    return found


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


class ThumbnailFingerprints:
    """``fingerprint_results`` with its own pooled fetcher and cache, so a result seen twice is fetched once.

    ``with ThumbnailFingerprints() as fingerprints: result.collapse_copies(fingerprints(result.images))``.

    The URLs come from the API the user chose (the local server answers with loopback URLs), not
    from an untrusted caller, so the default policy reaches any unicast address, as the FiftyOne
    plugin's downloads do; multicast, unspecified and malformed hosts are still refused.
    """

    def __init__(
        self, policy: FetchPolicy | None = None, *, max_workers: int = 8, max_entries: int = 50_000
    ) -> None:
        if policy is None:
            from . import __version__

            policy = FetchPolicy(untrusted_caller=False, user_agent=f"simages-plugins/{__version__}")
        self.fetcher = Fetcher(policy, pool_size=max_workers)
        self.cache = FingerprintCache(max_entries)
        self.max_workers = max_workers

    def __call__(self, images: Iterable[SimilarImage]) -> dict[str, Fingerprint]:
        return fingerprint_results(images, self.fetcher, cache=self.cache, max_workers=self.max_workers)

    def close(self) -> None:
        self.fetcher.close()

    def __enter__(self) -> ThumbnailFingerprints:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
