"""Concurrent, atomic image downloads into a media folder, through the core's guarded fetch.

Each file is streamed (``simages_core.fetch``: size cap, content-type check, deadline, retries,
one refetch of a body that breaks off) into a temp file in the target folder and moved into
place only when it is complete and decodable, so a failed or interrupted download never leaves
a file behind; an existing file is never replaced (a name that is taken gets a ``-<n>``
suffix). Results are yielded as they finish, so the caller can report progress.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from simages_core import __version__ as core_version
from simages_core.fetch import (
    FetchContentTypeError,
    Fetcher,
    FetchError,
    FetchHTTPError,
    FetchPolicy,
    FetchTimeout,
    FetchTooLarge,
)

_EXIF_ORIENTATION = 0x0112

_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/tiff": ".tif",
}
_FORMAT_EXTENSIONS = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
}
_MAX_NAME_TRIES = 1000


@dataclass(frozen=True)
class DownloadPolicy:
    """How patient and how strict downloads are; the defaults suit images from the API."""

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    attempts: int = 3
    """Tries per file; connection errors, timeouts, 429 and 5xx are retried."""
    backoff: float = 0.25
    """Seconds before the second try, doubled for each further one."""
    max_bytes: int = 50 * 1024 * 1024
    max_workers: int = 32
    deadline: float = 120.0
    """Seconds for one file, every retry and byte included."""

    def fetch_policy(self) -> FetchPolicy:
        """The core fetch policy for these downloads.

        The URLs come from the API the user chose (the local server answers with loopback
        URLs), not from an untrusted caller, so any unicast address may be reached; multicast,
        unspecified and malformed hosts are still refused, and environment proxies are ignored.
        """
        return FetchPolicy(
            untrusted_caller=False,
            # urllib3 applies one timeout to connecting and each read: the larger bounds both.
            timeout=max(self.connect_timeout, self.read_timeout),
            deadline=self.deadline,
            max_bytes=self.max_bytes,
            retries=max(0, self.attempts - 1),
            backoff=self.backoff,
            user_agent=f"simages-plugins/{core_version} (fiftyone plugin)",
        )


@dataclass(frozen=True)
class DownloadJob:
    key: str
    """The caller's id for this file (the API image id); also the file's stem."""
    url: str


@dataclass(frozen=True)
class DownloadOutcome:
    """A finished job: ``path`` and the image's upright size (EXIF orientation applied) on success,
    ``error`` otherwise."""

    job: DownloadJob
    path: Path | None = None
    width: int | None = None
    height: int | None = None
    size_bytes: int = 0
    mime_type: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class DownloadError(Exception):
    """One download failed for a reason worth reporting."""


def safe_stem(key: str) -> str:
    """A file-name-safe stem from an API image id."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in key)[:120]
    return stem or "image"


def iter_downloads(
    jobs: Sequence[DownloadJob],
    folder: str | os.PathLike[str],
    policy: DownloadPolicy = DownloadPolicy(),
    fetcher: Fetcher | None = None,
) -> Generator[DownloadOutcome, None, None]:
    """Download ``jobs`` into ``folder`` concurrently, yielding each outcome as it finishes.

    Files of yielded outcomes belong to the caller. If the caller stops early (closes the
    generator, or an exception ends its loop), downloads still running are waited for and
    the files it never saw are removed, so nothing is left that nobody knows about.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not jobs:
        return
    own_fetcher = fetcher is None
    fetcher = fetcher or Fetcher(policy.fetch_policy(), pool_size=max(policy.max_workers, 1))
    pool = ThreadPoolExecutor(max_workers=max(1, min(policy.max_workers, len(jobs))))
    batch = DownloadBatch(folder, fetcher, pool)
    for job in jobs:
        batch.submit(job)
    try:
        yield from batch
    finally:
        batch.close()
        pool.shutdown(wait=True)
        if own_fetcher:
            fetcher.close()


class DownloadBatch:
    """Downloads submitted to a pool (a run's shared one, so its limit holds across batches) one by
    one as they are decided, their outcomes read later, each as it finishes.

    Files of outcomes read from the batch belong to the caller. ``close`` cancels what has not
    started, waits for what has, and removes the files nobody read, so nothing is left that nobody
    knows about.
    """

    def __init__(self, folder: str | os.PathLike[str], fetcher: Fetcher, pool: Executor) -> None:
        self._folder = Path(folder)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._fetcher = fetcher
        self._pool = pool
        self._futures: list[Future[DownloadOutcome]] = []
        self._handed_over: set[Future[DownloadOutcome]] = set()

    def submit(self, job: DownloadJob) -> None:
        self._futures.append(self._pool.submit(download_one, job, self._folder, self._fetcher))

    def __iter__(self) -> Iterator[DownloadOutcome]:
        for future in as_completed(self._futures):
            self._handed_over.add(future)
            yield future.result()

    def close(self) -> None:
        for future in self._futures:
            future.cancel()
        wait(self._futures)
        for future in self._futures:
            if future in self._handed_over or future.cancelled() or future.exception() is not None:
                continue
            orphan = future.result()
            if orphan.ok and orphan.path is not None:
                orphan.path.unlink(missing_ok=True)


def download_one(job: DownloadJob, folder: Path, fetcher: Fetcher) -> DownloadOutcome:
    """One file; never raises for a failed download (the outcome says why)."""
    fd, tmp_name = tempfile.mkstemp(prefix=".simages-", suffix=".part", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fetched = fetcher.fetch_to_file(job.url, tmp)
        if fetched.size == 0:
            raise DownloadError("empty body")
        width, height, fmt = _probe(tmp)
        content_type = fetched.content_type.split(";")[0].strip().lower()
        ext = _FORMAT_EXTENSIONS.get(fmt) or _EXTENSIONS.get(content_type, ".img")
        final = place_new(tmp, folder, safe_stem(job.key), ext)
    except (FetchError, DownloadError) as exc:
        tmp.unlink(missing_ok=True)
        return DownloadOutcome(job=job, error=_reason(exc))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return DownloadOutcome(
        job=job, path=final, width=width, height=height, size_bytes=fetched.size, mime_type=content_type
    )


def _reason(exc: FetchError | DownloadError) -> str:
    """The failure as the import report words it; the user's own download, so details help."""
    if isinstance(exc, FetchHTTPError):
        return f"HTTP {exc.status}"
    if isinstance(exc, FetchContentTypeError):
        return f"not an image (content-type {exc.content_type or 'missing'!r})"
    if isinstance(exc, FetchTooLarge):
        return f"too large ({exc})"
    if isinstance(exc, FetchTimeout):
        return f"timed out ({exc})"
    return str(exc)


def place_new(tmp: Path, folder: Path, stem: str, ext: str) -> Path:
    """Move a finished temp file to ``<stem><ext>``, or ``<stem>-<n><ext>`` if that name is taken.

    An existing file is never replaced: another sample (of this dataset or another) may point
    at it. A hard link claims the name atomically and fails if it exists; where links are not
    supported, an exclusively created empty file reserves the name before the rename.
    """
    for n in range(_MAX_NAME_TRIES):
        final = folder / (f"{stem}{ext}" if n == 0 else f"{stem}-{n}{ext}")
        try:
            os.link(tmp, final)
        except FileExistsError:
            continue
        except OSError:
            try:
                os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                continue
            os.replace(tmp, final)
            return final
        tmp.unlink()
        return final
    raise DownloadError(f"no free file name for {stem}{ext} in {folder} after {_MAX_NAME_TRIES} tries")


def _probe(path: Path) -> tuple[int, int, str]:
    """Upright width, height and format from the file's header; a body that is no image is an error.

    The size is after EXIF orientation (5 to 8 swap the axes), as the core's encoder, the server's
    index and a browser (the FiftyOne App) all see the image: the API's boxes and the sample's
    metadata then describe the same upright image.
    """
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:  # verify() spends the image; reading EXIF first upsets it (PNG)
            orientation = _orientation(img)
            width, height, fmt = int(img.width), int(img.height), str(img.format or "")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DownloadError(f"not a decodable image ({type(exc).__name__})") from None
    return (height, width, fmt) if orientation in (5, 6, 7, 8) else (width, height, fmt)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 when absent); broken EXIF data is no orientation, not a failed download."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # Pillow's EXIF parser raises struct and key errors on damaged blocks
        return 1
    return value if isinstance(value, int) else 1
