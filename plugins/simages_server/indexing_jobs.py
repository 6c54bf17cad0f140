"""One indexing run's work per file: which files to look at (``plan_jobs``), and what the worker threads
make of each (``JobPreparer``: read, hash, decode, thumbnail, the models' per-image preprocessing)."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from simages_core import ImageEncodingError, open_image
from simages_core.identity import fingerprint_image

from . import generations as gens
from .detector import Letterbox, YoloDetector
from .embedders import ImageEmbedder
from .image_folder import scan_folder
from .index import THUMBNAIL_SIDE, ImageIndex, IndexedImage, image_id_for

_ORIENTATION = 0x0112  # EXIF tag: a format-1 record's size is compared with the upright image's

JobKind = Literal["new", "check", "adopt", "label"]


@dataclass(frozen=True)
class Job:
    """One file to look at in this run, and why."""

    kind: JobKind
    """``new``: not indexed; ``check``: size or mtime changed, compare digests; ``adopt``: a format-1
    record (no digest yet); ``label``: unchanged, needs the detector's labels only."""
    file: str
    position: int = -1
    """The record's row (``-1``: a new file)."""
    record: IndexedImage | None = None


@dataclass(frozen=True)
class Prepared:
    """A job read and decoded by a worker, its model inputs ready (or not needed)."""

    job: Job
    record: IndexedImage
    """What the manifest will hold (the new record for a new or changed file)."""
    embedding_input: np.ndarray | None
    """``None``: the row stays (the file is unchanged; it may still be labelled)."""
    detector_input: tuple[np.ndarray, Letterbox] | None


@dataclass(frozen=True)
class Skipped:
    """A job whose file does not read or decode, and the reason."""

    job: Job
    reason: str


def plan_jobs(
    index: ImageIndex, images_dir: Path, detector: YoloDetector | None
) -> tuple[list[Job], set[int], int, list[str]]:
    """What to look at: indexed files first (so the copy screening knows their fingerprints), then
    labels, then new files. Returns the jobs, the rows whose file is gone, the unchanged count, and the
    files that are not images (by extension)."""
    scan = scan_folder(images_dir)
    present: dict[str, os.stat_result] = {}
    for rel in scan.images:
        try:
            present[rel] = os.stat(images_dir / rel)
        except FileNotFoundError:  # deleted while we listed
            continue
    checks: list[Job] = []
    labels: list[Job] = []
    gone: set[int] = set()
    unchanged = 0
    for position, record in enumerate(index.records):
        st = present.get(record.file)
        if st is None:
            gone.add(position)
        elif record.digest is None:
            checks.append(Job("adopt", record.file, position, record))
        elif record.size != st.st_size or record.mtime_ns != st.st_mtime_ns:
            checks.append(Job("check", record.file, position, record))
        elif detector is not None and record.detections is None:
            labels.append(Job("label", record.file, position, record))
        else:
            unchanged += 1
    known = {record.file for record in index.records}
    new = [Job("new", rel) for rel in present if rel not in known]
    return checks + labels + new, gone, unchanged, scan.not_images


class JobPreparer:
    """The worker side of a run: each job read, hashed, decoded and prepared for the models in a thread pool."""

    def __init__(
        self,
        images_dir: Path,
        thumbnails: Path,
        embedder: ImageEmbedder,
        detector: YoloDetector | None,
        workers: int | None,
        batch_size: int,
    ) -> None:
        self.images_dir = images_dir
        self.thumbnails = thumbnails
        self.embedder = embedder
        self.detector = detector
        self.workers = workers
        self.batch_size = batch_size

    def prepared(self, jobs: list[Job]) -> Iterator[Prepared | Skipped]:
        """Jobs prepared in worker threads, yielded in order."""
        threads = self.workers or min(4, os.cpu_count() or 1)
        # A bounded window of work in flight (executor.map would submit, and hold, every image at once):
        # while the model runs on one batch, the workers prepare the next one.
        window = self.batch_size + 2 * threads
        with ThreadPoolExecutor(threads, thread_name_prefix="index-prepare") as pool:
            pending: deque[Future[Prepared | Skipped]] = deque()
            remaining = iter(jobs)
            for job in remaining:
                pending.append(pool.submit(self.prepare, job))
                if len(pending) >= window:
                    break
            while pending:
                result = pending.popleft().result()
                next_job = next(remaining, None)
                if next_job is not None:
                    pending.append(pool.submit(self.prepare, next_job))
                yield result

    def prepare(self, job: Job) -> Prepared | Skipped:
        path = self.images_dir / job.file
        try:
            if job.kind == "label":
                assert job.record is not None
                return Prepared(job, job.record, None, self._detector_input(open_image(path)))
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
        except ImageEncodingError as exc:
            return Skipped(job, str(exc))
        except OSError as exc:
            return Skipped(job, f"cannot read the file: {exc.strerror or exc}")
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        size, mtime_ns = st.st_size, st.st_mtime_ns
        record = job.record
        try:
            if record is not None and (job.kind == "check" and digest == record.digest):
                return self._unchanged(
                    job, replace(record, size=size, mtime_ns=mtime_ns, digest=digest), data
                )
            if (
                record is not None
                and job.kind == "adopt"
                and _upright_size(data) == (record.width, record.height)
            ):
                return self._unchanged(
                    job,
                    replace(
                        record,
                        size=size,
                        mtime_ns=mtime_ns,
                        digest=digest,
                        fingerprint=self._adopted_fingerprint(record, data),
                    ),
                    data,
                )
            image = open_image(data)
        except ImageEncodingError as exc:
            return Skipped(job, str(exc))
        image_id = image_id_for(job.file)
        thumb = image.copy()
        # reducing_gap=1: a cheap integer box reduction first, Lanczos only for the last step.
        thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS, reducing_gap=1.0)
        # Named by content: a changed file gets a new name, so a generation still being served keeps its own.
        thumb_name = f"{image_id}-{digest[:16]}.webp"
        if not (self.thumbnails / thumb_name).is_file():
            _write_thumbnail(thumb, self.thumbnails / thumb_name)
        new = IndexedImage(
            image_id, job.file, image.width, image.height,
            size=size, mtime_ns=mtime_ns, digest=digest, fingerprint=fingerprint_image(thumb).to_hex(), thumb=thumb_name,
        )  # fmt: skip
        return Prepared(job, new, self.embedder.prepare(image), self._detector_input(image))

    def _unchanged(self, job: Job, record: IndexedImage, data: bytes) -> Prepared:
        """Same bytes (or a format-1 record whose image still has its size): the row stays; labels if wanted."""
        wants_labels = self.detector is not None and record.detections is None
        return Prepared(job, record, None, self._detector_input(open_image(data)) if wants_labels else None)

    def _adopted_fingerprint(self, record: IndexedImage, data: bytes) -> str:
        """A format-1 record's fingerprint, from its thumbnail when it has one (a 256 px decode)."""
        thumbnail = self.thumbnails / record.thumbnail_name
        try:
            with Image.open(thumbnail) as thumb:
                return fingerprint_image(thumb.convert("RGB")).to_hex()
        except OSError:
            image = open_image(data)
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS, reducing_gap=1.0)
            return fingerprint_image(image).to_hex()

    def _detector_input(self, image: Image.Image) -> tuple[np.ndarray, Letterbox] | None:
        return self.detector.prepare(image) if self.detector is not None else None


def _upright_size(data: bytes) -> tuple[int, int] | None:
    """Width and height after EXIF orientation, from the header alone (no decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            orientation = image.getexif().get(_ORIENTATION, 1)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _write_thumbnail(thumb: Image.Image, path: Path) -> None:
    """Temp file then rename: a reader (a running server) never sees half a thumbnail."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, gens.READABLE)
        with os.fdopen(fd, "wb") as fh:
            thumb.save(fh, format="WEBP", quality=80)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
