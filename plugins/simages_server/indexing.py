"""Building and updating an index so it follows its folder: one streamed pipeline, one new generation a run.

A run compares the folder with the current generation's manifest: a file whose size and mtime
are unchanged is kept as it is; otherwise its bytes are hashed, and only a changed digest
re-embeds, re-labels and re-thumbnails it; files gone are removed; new files are added (and
screened for copies of indexed images). Worker threads read, hash, decode, thumbnail and run
the models' per-image preprocessing; the calling thread runs the embedder on batches and the
detector per image, so decoding and I/O hide behind inference, with bounded memory on
100,000 images. The result is written as a new generation folder and committed by one rename
(``generations.py``): a kill at any moment leaves the previous index or the new one. Rows keep
their positions (a removed row's place is filled by the last row), so the ANN index is updated by
removing and adding only the rows that moved (``ann.py``), never rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from simages_core import ImageEncodingError, open_image
from simages_core.identity import COPY_DISTANCE, CopyIndex, Fingerprint, check_threshold, fingerprint_image

from . import generations as gens
from .ann import ANN_FILE_NAME, ANN_THRESHOLD, AnnError, AnnIndex, AnnInfo, AnnMode, AnnReport, wants_ann
from .detector import Letterbox, YoloDetector
from .embedders import DescriptorEmbedder, ImageEmbedder
from .index import (
    THUMBNAIL_SIDE,
    BuildReport,
    CopyFound,
    ImageIndex,
    IndexedImage,
    apply_coco,
    image_id_for,
    index_metadata,
    load_coco_labels,
    referenced_thumbnails,
    scan_folder,
    start_generation,
    write_manifest,
)

logger = logging.getLogger("simages_server")

EMBED_BATCH = 32
COPY_ROWS = 8192  # rows copied at a time when the embeddings file is assembled
_ORIENTATION = 0x0112

JobKind = Literal["new", "check", "adopt", "label"]


@dataclass(frozen=True)
class _Job:
    kind: JobKind
    """``new``: not indexed; ``check``: size or mtime changed, compare digests; ``adopt``: a format-1
    record (no digest yet); ``label``: unchanged, needs the detector's labels only."""
    file: str
    position: int = -1
    """The record's row (``-1``: a new file)."""
    record: IndexedImage | None = None


@dataclass(frozen=True)
class _Prepared:
    job: _Job
    record: IndexedImage
    """What the manifest will hold (the new record for a new or changed file)."""
    embedding_input: np.ndarray | None
    """``None``: the row stays (the file is unchanged; it may still be labelled)."""
    detector_input: tuple[np.ndarray, Letterbox] | None


@dataclass(frozen=True)
class _Skipped:
    job: _Job
    reason: str


@dataclass
class _Changes:
    """What a run found, by old row position, as results stream in."""

    removed: set[int]
    kept: dict[int, IndexedImage]
    """Unchanged rows whose record was refreshed (touched, adopted, labelled)."""
    changed: dict[int, tuple[IndexedImage, int]]
    """Changed rows: the new record and its row in the new-rows file."""
    added: list[tuple[IndexedImage, int]]


@dataclass
class _Found:
    """What streaming the jobs produced."""

    changes: _Changes
    labels: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    copies: list[CopyFound] = field(default_factory=list)
    unchanged: int = 0
    """Indexed files whose bytes turned out the same (touched, adopted, only labelled)."""


def build_index(
    images_dir: str | Path,
    out: str | Path,
    *,
    coco: str | Path | None = None,
    embedder: ImageEmbedder | None = None,
    detector: YoloDetector | None = None,
    progress: bool = True,
    workers: int | None = None,
    batch_size: int = EMBED_BATCH,
    ann: AnnMode = "auto",
    ann_threshold: int = ANN_THRESHOLD,
    skip_copies: bool = False,
    copy_threshold: int = COPY_DISTANCE,
) -> BuildReport:
    """Index a folder, or bring the index at ``out`` up to date with it (added, changed, removed files).

    With a detector, every image gets its detections; on an existing index, images without labels
    are labelled without being embedded again. A COCO file wins for the images it covers. ``ann``:
    ``auto`` gives an index of ``ann_threshold`` images or more an ANN index (and keeps one it has),
    ``on`` always, ``off`` never (removes one). New images that are copies (``copy_threshold`` bits)
    of indexed ones are reported, and with ``skip_copies`` not added. Raises ``gens.IndexLocked``
    if another run is writing ``out``.
    """
    images_dir, out = Path(images_dir), Path(out)
    wants_ann(ann, 0, has_ann=False)  # an unknown mode fails before any work
    check_threshold(copy_threshold)
    if ann_threshold < 0:
        raise ValueError(f"ann_threshold must be ≥ 0, not {ann_threshold}")
    if not images_dir.is_dir():
        raise NotADirectoryError(f"not a folder: {images_dir}")
    chosen: ImageEmbedder = embedder if embedder is not None else DescriptorEmbedder()
    with gens.write_lock(out):
        removed = gens.clean(out, referenced_thumbnails)
        if removed:
            logger.info("removed what an interrupted run left in %s: %s", out, ", ".join(removed[:10]))
        index = _existing_or_new(images_dir, out, chosen, detector)
        report = _Run(
            index, images_dir, chosen, detector, workers, batch_size, skip_copies, copy_threshold
        ).run(coco, ann, ann_threshold, progress)
        gens.clean(out, referenced_thumbnails)
    if report.ann is not None:
        logger.info("%s", report.ann.describe())
    return report


def _existing_or_new(
    images_dir: Path, out: Path, embedder: ImageEmbedder, detector: YoloDetector | None
) -> ImageIndex:
    if not (out / gens.POINTER).is_file():
        out.mkdir(parents=True, exist_ok=True)
        return ImageIndex(out, images_dir, [], np.zeros((0, embedder.dim), np.float32), embedder.name)
    index = ImageIndex.load(out, mmap=True, ann=False)  # the ANN file is read only if it will change
    if index.embedder != embedder.name:
        raise ValueError(
            f"index at {out} was built with {_shown(index.models.get('embedder'), index.embedder)}, "
            f"not {_shown(embedder.info(), embedder.name)}: an index is built with one embedder, "
            "so use a new --out for another model"
        )
    if index.images_dir.resolve() != images_dir.resolve():
        raise ValueError(f"index at {out} is of {index.images_dir}, not {images_dir}")
    recorded = index.models.get("detector") or {}
    if detector is not None and recorded.get("name") and recorded["name"] != detector.name:
        raise ValueError(
            f"index at {out} was labelled by {_shown(recorded, '')}, not {_shown(detector.info(), '')}: "
            "labels from two detectors would be mixed, so use a new --out"
        )
    return index


def _shown(info: dict[str, Any] | None, fallback: str) -> str:
    """A model as people recognise it: its name and where its files were."""
    if not info:
        return fallback
    where = info.get("folder") or info.get("file")
    return f"{info.get('name', fallback)} ({where})" if where else str(info.get("name", fallback))


def _jobs(
    index: ImageIndex, images_dir: Path, detector: YoloDetector | None
) -> tuple[list[_Job], set[int], int, list[str]]:
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
    checks: list[_Job] = []
    labels: list[_Job] = []
    gone: set[int] = set()
    unchanged = 0
    for position, record in enumerate(index.records):
        st = present.get(record.file)
        if st is None:
            gone.add(position)
        elif record.digest is None:
            checks.append(_Job("adopt", record.file, position, record))
        elif record.size != st.st_size or record.mtime_ns != st.st_mtime_ns:
            checks.append(_Job("check", record.file, position, record))
        elif detector is not None and record.detections is None:
            labels.append(_Job("label", record.file, position, record))
        else:
            unchanged += 1
    known = {record.file for record in index.records}
    new = [_Job("new", rel) for rel in present if rel not in known]
    return checks + labels + new, gone, unchanged, scan.not_images


class _Run:
    """One ``build_index`` run over a loaded index (held under the folder's write lock)."""

    def __init__(
        self,
        index: ImageIndex,
        images_dir: Path,
        embedder: ImageEmbedder,
        detector: YoloDetector | None,
        workers: int | None,
        batch_size: int,
        skip_copies: bool,
        copy_threshold: int,
    ) -> None:
        self.index = index
        self.images_dir = images_dir
        self.embedder = embedder
        self.detector = detector
        self.workers = workers
        self.batch_size = batch_size
        self.skip_copies = skip_copies
        self.copy_threshold = copy_threshold
        self.thumbnails = index.root / gens.THUMBNAILS

    def run(
        self, coco: str | Path | None, ann_mode: AnnMode, ann_threshold: int, progress: bool
    ) -> BuildReport:
        index = self.index
        jobs, gone, unchanged, not_images = _jobs(index, self.images_dir, self.detector)
        self.thumbnails.mkdir(parents=True, exist_ok=True)
        number, folder, previous = start_generation(index.root)
        rows_path = folder / ".new-rows.f32"
        committed = False
        try:
            found = self._stream(jobs, gone, rows_path, progress)
            records, sources = _assemble(index.records, found.changes, found.labels)
            if coco is not None:
                records = apply_coco(records, load_coco_labels(Path(coco)))
            models = {
                "embedder": self.embedder.info(),
                "detector": self.detector.info() if self.detector else index.models.get("detector"),
            }
            upgraded = index.generation == 0 and (index.root / gens.POINTER).is_file()
            changes = found.changes
            rows_moved = bool(changes.removed or changes.changed or changes.added)
            writer = _GenerationWriter(index, folder, number, records, sources, rows_path, self.embedder.dim)
            ann_report = writer.write_rows_and_ann(rows_moved, ann_mode, ann_threshold)
            nothing_new = (
                index.generation > 0
                and not upgraded
                and not rows_moved
                and records == index.records
                and models == index.models
                and (ann_report is None or ann_report.action == "kept")
            )
            if nothing_new:
                ann_report = ann_report if ann_report is None else replace(ann_report, info=index.ann_info)
            else:
                writer.commit(models, previous)
                committed = True
        finally:
            if not committed:
                shutil.rmtree(folder, ignore_errors=True)
        return BuildReport(
            added=len(changes.added),
            skipped=found.skipped,
            total=len(records),
            labelled=len(found.labels),
            ann=ann_report,
            changed=len(changes.changed),
            removed=len(changes.removed),
            unchanged=unchanged + found.unchanged,
            copies=tuple(found.copies),
            copies_skipped=self.skip_copies,
            generation=number if committed else index.generation,
            committed=committed,
            upgraded=upgraded and committed,
            not_images=tuple(not_images),
        )

    def _stream(self, jobs: list[_Job], gone: set[int], rows_path: Path, progress: bool) -> _Found:
        """Run the jobs: new rows to ``rows_path`` in batches, labels, copies, and what changed."""
        from tqdm import tqdm

        found = _Found(_Changes(removed=set(gone), kept={}, changed={}, added=[]))
        changes = found.changes
        copy_index: CopyIndex | None = None
        batch: list[_Prepared] = []
        written = 0
        with (
            open(rows_path, "wb") as rows_file,
            tqdm(total=len(jobs), desc="indexing", unit="img", disable=not progress) as bar,
        ):

            def flush() -> None:
                nonlocal written
                if batch:
                    vectors = self.embedder.embed_prepared(np.stack([p.embedding_input for p in batch]))  # type: ignore[misc]
                    rows_file.write(np.ascontiguousarray(vectors, np.float32).tobytes())
                    for offset, item in enumerate(batch):
                        if item.job.kind == "new":
                            changes.added.append((item.record, written + offset))
                        else:
                            changes.changed[item.job.position] = (item.record, written + offset)
                    written += len(batch)
                    bar.update(len(batch))
                    batch.clear()

            for item in self._prepared(jobs):
                if isinstance(item, _Skipped):
                    found.skipped.append(self._skip(item, changes))
                    bar.update(1)
                    continue
                if item.embedding_input is not None and item.job.kind == "new":
                    if copy_index is None:  # every indexed file is resolved by now (they come first)
                        copy_index = self._copy_index(changes, batch)
                    copy = self._screen(item.record, copy_index)
                    if copy is not None:
                        found.copies.append(copy)
                        if self.skip_copies:
                            bar.update(1)
                            continue
                if item.detector_input is not None and self.detector is not None:
                    found.labels[item.record.file] = self.detector.detect_prepared(*item.detector_input)
                    item = replace(item, detector_input=None)  # 5 MB at 640 px: not kept for the batch
                if item.embedding_input is None:  # same bytes (touched, adopted, labelled): the row stays
                    found.unchanged += 1
                    changes.kept[item.job.position] = item.record
                    bar.update(1)
                    continue
                batch.append(item)
                if len(batch) >= self.batch_size:
                    flush()
            flush()
        return found

    def _skip(self, item: _Skipped, changes: _Changes) -> str:
        """A file that does not read: an indexed one leaves the index (its old row would lie)."""
        logger.warning("skipped %s: %s", item.job.file, item.reason)
        if item.job.kind in ("check", "adopt"):
            changes.removed.add(item.job.position)
            return f"{item.job.file}: {item.reason} (removed from the index)"
        return f"{item.job.file}: {item.reason}"

    def _copy_index(self, changes: _Changes, batch: list[_Prepared]) -> CopyIndex:
        """The fingerprints of every indexed file that stays, as this run leaves them."""
        current: dict[int, IndexedImage] = dict(enumerate(self.index.records))
        current.update(changes.kept)
        current.update({position: record for position, (record, _) in changes.changed.items()})
        current.update({item.job.position: item.record for item in batch if item.job.kind != "new"})
        copy_index = CopyIndex(self.copy_threshold)
        for position, record in current.items():
            if position not in changes.removed and record.fingerprint:
                copy_index.add(record.file, Fingerprint.from_hex(record.fingerprint))
        return copy_index

    def _screen(self, record: IndexedImage, copy_index: CopyIndex) -> CopyFound | None:
        assert record.fingerprint is not None
        fp = Fingerprint.from_hex(record.fingerprint)
        match = copy_index.find(fp)
        if match is None or not self.skip_copies:
            copy_index.add(record.file, fp)  # later files in this run are screened against it too
        return None if match is None else CopyFound(record.file, match.key, match.distance)

    # --- the worker side ----------------------------------------------------------------------

    def _prepared(self, jobs: list[_Job]) -> Iterator[_Prepared | _Skipped]:
        """Jobs prepared in worker threads, yielded in order."""
        threads = self.workers or min(4, os.cpu_count() or 1)
        # A bounded window of work in flight (executor.map would submit, and hold, every image at once):
        # while the model runs on one batch, the workers prepare the next one.
        window = self.batch_size + 2 * threads
        with ThreadPoolExecutor(threads, thread_name_prefix="index-prepare") as pool:
            pending: deque[Future[_Prepared | _Skipped]] = deque()
            remaining = iter(jobs)
            for job in remaining:
                pending.append(pool.submit(self._prepare, job))
                if len(pending) >= window:
                    break
            while pending:
                result = pending.popleft().result()
                next_job = next(remaining, None)
                if next_job is not None:
                    pending.append(pool.submit(self._prepare, next_job))
                yield result

    def _prepare(self, job: _Job) -> _Prepared | _Skipped:
        path = self.images_dir / job.file
        try:
            if job.kind == "label":
                assert job.record is not None
                return _Prepared(job, job.record, None, self._detector_input(open_image(path)))
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
        except ImageEncodingError as exc:
            return _Skipped(job, str(exc))
        except OSError as exc:
            return _Skipped(job, f"cannot read the file: {exc.strerror or exc}")
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
            return _Skipped(job, str(exc))
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
        return _Prepared(job, new, self.embedder.prepare(image), self._detector_input(image))

    def _unchanged(self, job: _Job, record: IndexedImage, data: bytes) -> _Prepared:
        """Same bytes (or a format-1 record whose image still has its size): the row stays; labels if wanted."""
        wants_labels = self.detector is not None and record.detections is None
        return _Prepared(job, record, None, self._detector_input(open_image(data)) if wants_labels else None)

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


# --- assembling the new generation ------------------------------------------------------------


@dataclass(frozen=True)
class _Sources:
    """Where each row of the new generation comes from."""

    kept: int
    """Rows ``0..kept-1`` start as the old rows at the same positions."""
    moved: list[tuple[int, int]]
    """(new position, old position): the last rows moved into the places of removed ones."""
    fresh: list[tuple[int, int]]
    """(new position, row in the new-rows file): changed and added images."""
    deleted: np.ndarray
    """Old positions whose row leaves its place (the ANN index removes these ids)."""
    churn: int
    """Rows whose content left or arrived (removed, changed, added; moved rows do not count)."""


def _assemble(
    old: list[IndexedImage], changes: _Changes, labels: dict[str, tuple[Any, ...]]
) -> tuple[list[IndexedImage], _Sources]:
    """The new records in row order. A removed row's place goes to the last row (so every other row
    keeps its position and its ANN id); changed rows stay in place; added rows go at the end."""
    alive = [p for p in range(len(old)) if p not in changes.removed]
    kept = len(alive)
    holes = [p for p in sorted(changes.removed) if p < kept]
    movers = [p for p in alive if p >= kept]
    source = list(range(kept))
    for hole, mover in zip(holes, movers, strict=True):
        source[hole] = mover
    records: list[IndexedImage] = []
    fresh: list[tuple[int, int]] = []
    for position, was in enumerate(source):
        if was in changes.changed:
            record, row = changes.changed[was]
            fresh.append((position, row))
        else:
            record = changes.kept.get(was, old[was])
        records.append(record)
    for record, row in changes.added:
        fresh.append((len(records), row))
        records.append(record)
    records = [
        replace(r, detections=labels[r.file]) if r.detections is None and r.file in labels else r
        for r in records
    ]
    deleted = np.array(sorted(changes.removed | set(movers) | set(changes.changed)), np.int64)
    moved = [(hole, mover) for hole, mover in zip(holes, movers, strict=True)]
    return records, _Sources(kept, moved, fresh, deleted, len(changes.removed) + len(fresh))


class _GenerationWriter:
    """Writes one generation folder (rows, ANN file, manifest, metadata), then commits it."""

    def __init__(
        self,
        index: ImageIndex,
        folder: Path,
        number: int,
        records: list[IndexedImage],
        sources: _Sources,
        rows_path: Path,
        dim: int,
    ) -> None:
        self.index = index
        self.folder = folder
        self.number = number
        self.records = records
        self.sources = sources
        self.rows_path = rows_path
        self.dim = dim
        self.ann_info: AnnInfo | None = None

    def write_rows_and_ann(self, rows_moved: bool, ann_mode: AnnMode, ann_threshold: int) -> AnnReport | None:
        target_path = self.folder / gens.EMBEDDINGS
        old_path = self.index.folder / gens.EMBEDDINGS
        if not rows_moved and old_path.is_file():
            gens.link_or_copy(old_path, target_path)
            rows = np.load(target_path, mmap_mode="r")
        elif not self.records:
            rows = np.zeros((0, self.dim), np.float32)
            gens.write_file(target_path, lambda fh: np.save(fh, rows))
        else:
            rows = self._assemble_rows(target_path)
        self.rows_path.unlink(missing_ok=True)
        return self._update_ann(rows, rows_moved, ann_mode, ann_threshold)

    def _assemble_rows(self, target_path: Path) -> np.ndarray:
        """Old rows kept in place, moved rows, then changed and new ones: chunk by chunk, never all in memory."""
        dim, src = self.dim, self.sources
        count = self.rows_path.stat().st_size // (4 * dim)
        new_rows = (
            np.memmap(self.rows_path, np.float32, "r", shape=(count, dim))
            if count
            else np.zeros((0, dim), np.float32)
        )
        old_rows = self.index.embeddings
        target = np.lib.format.open_memmap(
            target_path, mode="w+", dtype=np.float32, shape=(len(self.records), dim)
        )
        for start in range(0, src.kept, COPY_ROWS):
            end = min(src.kept, start + COPY_ROWS)
            target[start:end] = old_rows[start:end]
        for position, was in src.moved:
            target[position] = old_rows[was]
        for position, row in src.fresh:
            target[position] = new_rows[row]
        target.flush()
        del new_rows
        gens.fsync_path(target_path)
        return target

    def _update_ann(
        self, rows: np.ndarray, rows_moved: bool, mode: AnnMode, threshold: int
    ) -> AnnReport | None:
        """Update the recorded ANN index by the rows that moved, build one, keep it, or drop it."""
        index, recorded = self.index, self.index.ann_info
        if not wants_ann(mode, len(rows), has_ann=recorded is not None, threshold=threshold):
            return AnnReport("removed", 0, 0) if recorded else None
        existing = None
        if recorded is not None:
            try:
                existing = AnnIndex.load(index.folder, recorded, rows=len(index))
            except AnnError as exc:  # a missing or foreign file: rebuilding is the only way on
                logger.warning("rebuilding the ANN index: %s", exc)
        if existing is not None and recorded is not None:
            if not rows_moved:
                gens.link_or_copy(index.folder / recorded.file, self.folder / ANN_FILE_NAME)
                self.ann_info = replace(recorded, file=ANN_FILE_NAME)
                return AnnReport("kept", 0, existing.count, self.ann_info)
            src = self.sources
            deleted = existing.remove(src.deleted)
            positions = np.array(sorted([p for p, _ in src.moved] + [p for p, _ in src.fresh]), np.int64)
            existing.put(np.asarray(rows[positions], np.float32), positions)
            # Changed rows can shift the recall a given nprobe reaches (new lists fill, new kinds of
            # images): measured again over all the rows, like at the build, once enough changed.
            if existing.needs_tuning(src.churn):
                existing.tune(rows)
            else:
                existing.drift += src.churn
            self.ann_info = existing.write(self.folder, ANN_FILE_NAME, replace=False)
            action: Literal["added", "updated"] = "added" if deleted == 0 else "updated"
            return AnnReport(action, len(positions), existing.count, self.ann_info, deleted=deleted)
        built = AnnIndex.build(rows)
        self.ann_info = built.write(self.folder, ANN_FILE_NAME, replace=False)
        return AnnReport("built", len(rows), built.count, self.ann_info)

    def commit(self, models: dict[str, Any], previous: str | None) -> None:
        write_manifest(self.folder, self.records)
        index = self.index
        meta = index_metadata(
            self.number, index.embedder, self.dim, self.records, index.images_dir, models, self.ann_info
        )
        gens.write_file(
            self.folder / gens.META, lambda fh: fh.write(json.dumps(meta, indent=2).encode("utf-8"))
        )
        gens.commit(index.root, self.number, previous)
