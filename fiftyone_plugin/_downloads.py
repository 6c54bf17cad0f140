"""Concurrent, atomic image downloads into a media folder.

Each file is streamed into a temp file in the target folder and renamed into place only
when it is complete, within the size cap, declared as an image and decodable, so a failed
or interrupted download never leaves a file behind. Results are yielded as they finish, so
the caller can report progress.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image, UnidentifiedImageError
from requests.adapters import HTTPAdapter

from simages_core import __version__ as core_version

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
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class DownloadPolicy:
    """How patient and how strict downloads are; the defaults suit images from the API."""

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    attempts: int = 3
    """Tries per file; connection errors, timeouts, 408/425/429 and 5xx are retried."""
    backoff: float = 0.25
    """Seconds before the second try, doubled for each further one."""
    max_bytes: int = 50 * 1024 * 1024
    max_workers: int = 32


@dataclass(frozen=True)
class DownloadJob:
    key: str
    """The caller's id for this file (the API image id); also the file's stem."""
    url: str


@dataclass(frozen=True)
class DownloadOutcome:
    """A finished job: ``path`` and the image's size on success, ``error`` otherwise."""

    job: DownloadJob
    path: Path | None = None
    width: int | None = None
    height: int | None = None
    size_bytes: int = 0
    mime_type: str | None = None
    created: bool = True
    """False when an identical name already existed and was replaced (keep it on rollback)."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class DownloadError(Exception):
    """One download failed for a reason worth reporting; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


def safe_stem(key: str) -> str:
    """A file-name-safe stem from an API image id."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in key)[:120]
    return stem or "image"


def make_session(policy: DownloadPolicy) -> requests.Session:
    session = requests.Session()
    session.headers["user-agent"] = f"simages-plugins/{core_version} (fiftyone plugin)"
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(policy.max_workers, 1), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def iter_downloads(
    jobs: Sequence[DownloadJob],
    folder: str | os.PathLike[str],
    policy: DownloadPolicy = DownloadPolicy(),
    session: requests.Session | None = None,
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
    own_session = session is None
    session = session or make_session(policy)
    pool = ThreadPoolExecutor(max_workers=max(1, min(policy.max_workers, len(jobs))))
    futures = [pool.submit(download_one, job, folder, policy, session) for job in jobs]
    handed_over: set[Future[DownloadOutcome]] = set()
    try:
        for future in as_completed(futures):
            handed_over.add(future)
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for future in futures:
            if future in handed_over or future.cancelled() or future.exception() is not None:
                continue
            orphan = future.result()
            if orphan.ok and orphan.created and orphan.path is not None:
                orphan.path.unlink(missing_ok=True)
        if own_session:
            session.close()


def download_one(
    job: DownloadJob, folder: Path, policy: DownloadPolicy, session: requests.Session
) -> DownloadOutcome:
    """One file, with retries; never raises for a failed download (the outcome says why)."""
    last: DownloadError | None = None
    for attempt in range(max(1, policy.attempts)):
        if attempt:
            time.sleep(policy.backoff * 2 ** (attempt - 1))
        try:
            return _fetch(job, folder, policy, session)
        except DownloadError as exc:
            last = exc
            if not exc.retry:
                break
    assert last is not None
    return DownloadOutcome(job=job, error=str(last))


def _fetch(
    job: DownloadJob, folder: Path, policy: DownloadPolicy, session: requests.Session
) -> DownloadOutcome:
    try:
        response = session.get(
            job.url, stream=True, timeout=(policy.connect_timeout, policy.read_timeout), allow_redirects=True
        )
    except requests.Timeout:
        raise DownloadError("timed out", retry=True) from None
    except requests.ConnectionError as exc:
        raise DownloadError(f"connection failed ({type(exc).__name__})", retry=True) from None
    except requests.RequestException as exc:
        raise DownloadError(f"bad request ({type(exc).__name__}: {exc})") from None
    with response:
        if response.status_code != 200:
            raise DownloadError(f"HTTP {response.status_code}", retry=response.status_code in _RETRY_STATUSES)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not content_type.startswith("image/"):
            raise DownloadError(f"not an image (content-type {content_type or 'missing'!r})")
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > policy.max_bytes:
            raise DownloadError(f"too large ({int(declared)} bytes > {policy.max_bytes})")
        fd, tmp_name = tempfile.mkstemp(prefix=".simages-", suffix=".part", dir=folder)
        tmp = Path(tmp_name)
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                try:
                    for chunk in response.iter_content(_CHUNK):
                        size += len(chunk)
                        if size > policy.max_bytes:
                            raise DownloadError(f"too large (more than {policy.max_bytes} bytes)")
                        out.write(chunk)
                except requests.RequestException as exc:
                    raise DownloadError(f"transfer failed ({type(exc).__name__})", retry=True) from None
            if size == 0:
                raise DownloadError("empty body")
            width, height, fmt = _probe(tmp)
            ext = _FORMAT_EXTENSIONS.get(fmt) or _EXTENSIONS.get(content_type, ".img")
            final = folder / f"{safe_stem(job.key)}{ext}"
            existed = final.exists()
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return DownloadOutcome(
        job=job,
        path=final,
        width=width,
        height=height,
        size_bytes=size,
        mime_type=content_type,
        created=not existed,
    )


def _probe(path: Path) -> tuple[int, int, str]:
    """Width, height and format from the file's header; a body that is no image is an error."""
    try:
        with Image.open(path) as img:
            img.verify()
            return int(img.width), int(img.height), str(img.format or "")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DownloadError(f"not a decodable image ({type(exc).__name__})") from None
