"""Building and growing an index: a streamed pipeline with decoding in threads and batched inference.

Worker threads decode each image, write its thumbnail and run the models'
per-image preprocessing; the calling thread runs the embedder on batches and the
detector on each image, so decoding and I/O hide behind inference. At most a few
batches are in flight and new embedding rows go to a temporary file as they are
made, so memory stays bounded on a folder of 100,000 images. The index files are
replaced only at the end (``index.json`` last), so an interrupted build leaves the
previous index whole. From ``ANN_THRESHOLD`` images (``ann="auto"``) the rows also go into
an ANN index: built once, then grown by adding the new rows to the loaded file; its
``nprobe`` is measured again after each (``ann_tuning.py``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simages_core import ImageEncodingError, open_image

from .ann import ANN_THRESHOLD, AnnError, AnnIndex, AnnInfo, AnnMode, AnnReport, remove_stale, wants_ann
from .detector import Letterbox, YoloDetector
from .embedders import DescriptorEmbedder, ImageEmbedder
from .index import (
    FORMAT_VERSION,
    THUMBNAIL_SIDE,
    BuildReport,
    ImageIndex,
    IndexedImage,
    _atomic_write,
    apply_coco,
    image_id_for,
    list_images,
    load_coco_labels,
)

logger = logging.getLogger("simages_server")

EMBED_BATCH = 32
COPY_ROWS = 8192  # rows copied at a time when the embeddings file is assembled


@dataclass(frozen=True)
class _Job:
    file: str
    embed: bool
    """False: an image already in the index that only needs labels."""


@dataclass(frozen=True)
class _Prepared:
    job: _Job
    width: int
    height: int
    embedding_input: np.ndarray | None
    detector_input: tuple[np.ndarray, Letterbox] | None


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
) -> BuildReport:
    """Index a folder, or add its new images to an existing index at ``out``.

    With a detector, every image gets its detections; on an existing index, images
    without labels are labelled without being embedded again. A COCO file wins for
    the images it covers. ``ann``: ``auto`` gives an index of ``ann_threshold`` images or
    more an ANN index (and keeps one it has), ``on`` always, ``off`` never (removes one).
    """
    from tqdm import tqdm

    images_dir, out = Path(images_dir), Path(out)
    wants_ann(ann, 0, has_ann=False)  # an unknown mode fails before any work
    if ann_threshold < 0:
        raise ValueError(f"ann_threshold must be ≥ 0, not {ann_threshold}")
    if not images_dir.is_dir():
        raise NotADirectoryError(f"not a folder: {images_dir}")
    chosen: ImageEmbedder = embedder if embedder is not None else DescriptorEmbedder()
    index = _existing_or_new(images_dir, out, chosen, detector)
    known = {record.file for record in index.records}
    jobs = [_Job(rel, True) for rel in list_images(images_dir) if rel not in known]
    if detector is not None:
        jobs += [_Job(r.file, False) for r in index.records if r.detections is None]
    (out / "thumbnails").mkdir(parents=True, exist_ok=True)

    labels: dict[str, tuple[Any, ...]] = {}
    new_records: list[IndexedImage] = []
    skipped: list[str] = []
    fd, rows_tmp = tempfile.mkstemp(dir=out, prefix=".new-rows.", suffix=".f32")
    try:
        with os.fdopen(fd, "wb") as rows_file, tqdm(
            total=len(jobs), desc="indexing", unit="img", disable=not progress
        ) as bar:
            batch: list[_Prepared] = []

            def flush() -> None:
                if batch:
                    vectors = chosen.embed_prepared(np.stack([p.embedding_input for p in batch]))  # type: ignore[misc]
                    rows_file.write(np.ascontiguousarray(vectors, np.float32).tobytes())
                    new_records.extend(
                        IndexedImage(image_id_for(p.job.file), p.job.file, p.width, p.height, labels.get(p.job.file))
                        for p in batch
                    )
                    bar.update(len(batch))
                    batch.clear()

            for item in _prepared(jobs, images_dir, out, chosen, detector, workers, batch_size):
                if isinstance(item, str):
                    skipped.append(item)
                    bar.update(1)
                    continue
                if item.detector_input is not None and detector is not None:
                    labels[item.job.file] = detector.detect_prepared(*item.detector_input)
                    item = replace(item, detector_input=None)  # 5 MB at 640 px: not kept for the batch
                if item.embedding_input is None:
                    bar.update(1)
                    continue
                batch.append(item)
                if len(batch) >= batch_size:
                    flush()
            flush()

        records = [
            replace(r, detections=labels[r.file]) if r.detections is None and r.file in labels else r
            for r in index.records
        ] + new_records
        if coco is not None:
            records = apply_coco(records, load_coco_labels(Path(coco)))
        models = {"embedder": chosen.info(), "detector": detector.info() if detector else index.models.get("detector")}
        ann_report = _write(index, records, Path(rows_tmp), chosen, models, ann, ann_threshold)
    finally:
        Path(rows_tmp).unlink(missing_ok=True)
    if ann_report is not None:
        logger.info("%s", ann_report.describe())
    return BuildReport(
        added=len(new_records), skipped=skipped, total=len(records), labelled=len(labels), ann=ann_report
    )


def _existing_or_new(
    images_dir: Path, out: Path, embedder: ImageEmbedder, detector: YoloDetector | None
) -> ImageIndex:
    if not (out / "index.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        return ImageIndex(out, images_dir, [], np.zeros((0, embedder.dim), np.float32), embedder.name)
    index = ImageIndex.load(out, mmap=True, ann=False)  # the ANN file is read only if it will grow
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


def _prepared(
    jobs: list[_Job],
    images_dir: Path,
    out: Path,
    embedder: ImageEmbedder,
    detector: YoloDetector | None,
    workers: int | None,
    batch_size: int,
) -> Iterator[_Prepared | str]:
    """Jobs prepared in worker threads, yielded in order; a string is a skipped file and why."""

    def prepare(job: _Job) -> _Prepared | str:
        try:
            image = open_image(images_dir / job.file)
        except ImageEncodingError as exc:
            logger.warning("skipped %s: %s", job.file, exc)
            return f"{job.file}: {exc}"
        if job.embed:
            thumb = image.copy()
            # reducing_gap=1: a cheap integer box reduction first, Lanczos only for the last step.
            thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS, reducing_gap=1.0)
            thumb.save(out / "thumbnails" / f"{image_id_for(job.file)}.webp", format="WEBP", quality=80)
        return _Prepared(
            job,
            image.width,
            image.height,
            embedder.prepare(image) if job.embed else None,
            detector.prepare(image) if detector is not None else None,
        )

    threads = workers or min(4, os.cpu_count() or 1)
    # A bounded window of work in flight (executor.map would submit, and hold, every image at once):
    # while the model runs on one batch, the workers prepare the next one.
    window = batch_size + 2 * threads
    with ThreadPoolExecutor(threads, thread_name_prefix="index-prepare") as pool:
        pending: deque[Future[_Prepared | str]] = deque()
        remaining = iter(jobs)
        for job in remaining:
            pending.append(pool.submit(prepare, job))
            if len(pending) >= window:
                break
        while pending:
            result = pending.popleft().result()
            next_job = next(remaining, None)
            if next_job is not None:
                pending.append(pool.submit(prepare, next_job))
            yield result


def _write(
    index: ImageIndex,
    records: list[IndexedImage],
    rows_path: Path,
    embedder: ImageEmbedder,
    models: dict[str, Any],
    ann_mode: AnnMode,
    ann_threshold: int,
) -> AnnReport | None:
    """Old rows + new rows into a new ``embeddings.npy``, chunk by chunk; the ANN file, if any, to a new
    name; then manifest; then metadata (naming the ANN file), so an interruption anywhere before that
    leaves the previous ``index.json`` and the files it names whole."""
    dim = embedder.dim
    count = rows_path.stat().st_size // (4 * dim)
    new_rows = np.memmap(rows_path, np.float32, "r", shape=(count, dim)) if count else np.zeros((0, dim), np.float32)
    old_rows = index.embeddings
    total = len(old_rows) + len(new_rows)
    if total != len(records):
        raise RuntimeError(f"index build is inconsistent: {len(records)} records, {total} rows")
    root = index.root
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".embeddings.npy.", suffix=".tmp")
    os.close(fd)
    try:
        target = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim))
        position = 0
        for source in (old_rows, new_rows):
            for start in range(0, len(source), COPY_ROWS):
                chunk = source[start : start + COPY_ROWS]
                target[position : position + len(chunk)] = chunk
                position += len(chunk)
        target.flush()
        ann_report, ann_info = _update_ann(index, target, len(new_rows), ann_mode, ann_threshold)
        del target
        del new_rows
        os.replace(tmp, root / "embeddings.npy")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _atomic_write(
        root / "manifest.jsonl",
        lambda fh: fh.writelines((json.dumps(r.to_json()) + "\n").encode("utf-8") for r in records),
    )
    meta = {
        "format": FORMAT_VERSION,
        "embedder": embedder.name,
        "dim": dim,
        "count": len(records),
        "images_dir": str(index.images_dir.resolve()),
        "models": models,
    }
    if ann_info is not None:
        meta["ann"] = ann_info.to_json()
    _atomic_write(root / "index.json", lambda fh: fh.write(json.dumps(meta, indent=2).encode("utf-8")))
    remove_stale(root, ann_info.file if ann_info else None)
    return ann_report


def _update_ann(
    index: ImageIndex, rows: np.ndarray, added: int, mode: AnnMode, threshold: int
) -> tuple[AnnReport | None, AnnInfo | None]:
    """Grow the recorded ANN index by the last ``added`` rows, build one, keep it, or drop it."""
    recorded = index.ann_info
    if not wants_ann(mode, len(rows), has_ann=recorded is not None, threshold=threshold):
        return (AnnReport("removed", 0, 0) if recorded else None), None
    existing = None
    if recorded is not None:
        try:
            existing = AnnIndex.load(index.root, recorded, rows=len(index))
        except AnnError as exc:  # a missing or foreign file: rebuilding is the only way on
            logger.warning("rebuilding the ANN index: %s", exc)
    if existing is not None and recorded is not None:
        if not added:
            return AnnReport("kept", 0, existing.count, recorded), recorded
        existing.add(rows[len(rows) - added :])
        # New rows can shift the recall a given nprobe reaches (new lists fill, new kinds of images):
        # measured again over all the rows, like at the build.
        existing.tune(rows)
        info = existing.write(index.root)
        return AnnReport("added", added, existing.count, info), info
    built = AnnIndex.build(rows)
    info = built.write(index.root)
    return AnnReport("built", len(rows), built.count, info), info
