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
removing and adding only the rows that moved (``ann.py``), never rebuilt. This module runs it; the
per-file work is ``indexing_jobs.py``, writing the generation ``indexing_writer.py``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from simages_core.identity import COPY_DISTANCE, CopyIndex, Fingerprint, check_threshold

from . import generations as gens
from .ann import ANN_THRESHOLD, AnnMode, wants_ann
from .coco_labels import apply_coco, load_coco_labels
from .detector import YoloDetector
from .embedders import DescriptorEmbedder, ImageEmbedder
from .index import ImageIndex, IndexedImage, referenced_thumbnails, start_generation
from .indexing_jobs import Job, JobPreparer, Prepared, Skipped, plan_jobs
from .indexing_report import BuildReport, CopyFound
from .indexing_writer import Changes, GenerationWriter, assemble

logger = logging.getLogger("simages_server")

EMBED_BATCH = 32


@dataclass
class _Found:
    """What streaming the jobs produced."""

    changes: Changes
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
        self.batch_size = batch_size
        self.skip_copies = skip_copies
        self.copy_threshold = copy_threshold
        self.thumbnails = index.root / gens.THUMBNAILS
        self.preparer = JobPreparer(images_dir, self.thumbnails, embedder, detector, workers, batch_size)

    def run(
        self, coco: str | Path | None, ann_mode: AnnMode, ann_threshold: int, progress: bool
    ) -> BuildReport:
        index = self.index
        jobs, gone, unchanged, not_images = plan_jobs(index, self.images_dir, self.detector)
        self.thumbnails.mkdir(parents=True, exist_ok=True)
        number, folder, previous = start_generation(index.root)
        rows_path = folder / ".new-rows.f32"
        committed = False
        try:
            found = self._stream(jobs, gone, rows_path, progress)
            records, sources = assemble(index.records, found.changes, found.labels)
            if coco is not None:
                records = apply_coco(records, load_coco_labels(Path(coco)))
            models = {
                "embedder": self.embedder.info(),
                "detector": self.detector.info() if self.detector else index.models.get("detector"),
            }
            upgraded = index.generation == 0 and (index.root / gens.POINTER).is_file()
            changes = found.changes
            rows_moved = bool(changes.removed or changes.changed or changes.added)
            writer = GenerationWriter(index, folder, number, records, sources, rows_path, self.embedder.dim)
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

    def _stream(self, jobs: list[Job], gone: set[int], rows_path: Path, progress: bool) -> _Found:
        """Run the jobs: new rows to ``rows_path`` in batches, labels, copies, and what changed."""
        from tqdm import tqdm

        found = _Found(Changes(removed=set(gone), kept={}, changed={}, added=[]))
        changes = found.changes
        copy_index: CopyIndex | None = None
        batch: list[Prepared] = []
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

            for item in self.preparer.prepared(jobs):
                if isinstance(item, Skipped):
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

    def _skip(self, item: Skipped, changes: Changes) -> str:
        """A file that does not read: an indexed one leaves the index (its old row would lie)."""
        logger.warning("skipped %s: %s", item.job.file, item.reason)
        if item.job.kind in ("check", "adopt"):
            changes.removed.add(item.job.position)
            return f"{item.job.file}: {item.reason} (removed from the index)"
        return f"{item.job.file}: {item.reason}"

    def _copy_index(self, changes: Changes, batch: list[Prepared]) -> CopyIndex:
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
