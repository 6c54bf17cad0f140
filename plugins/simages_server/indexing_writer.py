"""Writing a run's new generation: the records in row order (a removed row's place goes to the last row),
the embeddings file chunk by chunk, the ANN index updated by the rows that moved, then the commit."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import generations as gens
from .ann import ANN_FILE_NAME, AnnError, AnnIndex, AnnInfo, AnnMode, AnnReport, wants_ann
from .index import ImageIndex, IndexedImage, index_metadata, write_manifest

logger = logging.getLogger("simages_server")

COPY_ROWS = 8192  # rows copied at a time when the embeddings file is assembled


@dataclass
class Changes:
    """What a run found, by old row position, as results stream in."""

    removed: set[int]
    kept: dict[int, IndexedImage]
    """Unchanged rows whose record was refreshed (touched, adopted, labelled)."""
    changed: dict[int, tuple[IndexedImage, int]]
    """Changed rows: the new record and its row in the new-rows file."""
    added: list[tuple[IndexedImage, int]]


@dataclass(frozen=True)
class Sources:
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


def assemble(
    old: list[IndexedImage], changes: Changes, labels: dict[str, tuple[Any, ...]]
) -> tuple[list[IndexedImage], Sources]:
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
    return records, Sources(kept, moved, fresh, deleted, len(changes.removed) + len(fresh))


class GenerationWriter:
    """Writes one generation folder (rows, ANN file, manifest, metadata), then commits it."""

    def __init__(
        self,
        index: ImageIndex,
        folder: Path,
        number: int,
        records: list[IndexedImage],
        sources: Sources,
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
