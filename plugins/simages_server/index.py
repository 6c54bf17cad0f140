"""The local server's index of a folder of images: records, rows, thumbnails and labels, loaded for search.

On disk (``generations.py``): ``index.json`` names the current generation ``gen-NNNNNN/``, which holds
``meta.json`` (embedder, models, counts), ``manifest.jsonl`` (one image a line: path, size, mtime,
content digest, perceptual fingerprint, labels), ``embeddings.npy`` (float32, rows in manifest
order) and, on a large index, ``ann.faiss`` (``ann.py``); thumbnails are shared in ``thumbnails/``
under content-addressed names. A format-1 (flat) index still loads. This module only reads and
saves an index as it is; ``indexing.py`` (and its ``indexing_*`` modules) builds and updates one from a
folder, importing this module, never the reverse.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from simages_core import Detection

from . import generations as gens
from .ann import ANN_FILE_NAME, AnnIndex, AnnInfo

logger = logging.getLogger("simages_server")

THUMBNAIL_SIDE = 256
FORMAT_VERSION = gens.FORMAT_VERSION
LEGACY_FORMAT = gens.LEGACY_FORMAT


@dataclass(frozen=True)
class IndexedImage:
    id: str
    file: str
    """Path relative to the indexed folder, with forward slashes."""
    width: int
    height: int
    detections: tuple[Detection, ...] | None = None
    """``None``: no labels known for this image; ``()``: labelled, and nothing is in it."""
    caption: str | None = None
    size: int | None = None
    """Bytes of the file when it was indexed (``None``: a format-1 record, not yet checked)."""
    mtime_ns: int | None = None
    digest: str | None = None
    """BLAKE2b-128 of the file's bytes: tells a touched file (same bytes) from a changed one."""
    fingerprint: str | None = None
    """``simages_core.identity.Fingerprint.to_hex()`` of the upright image (copy detection)."""
    thumb: str | None = None
    """Thumbnail file name in ``thumbnails/`` (``None``: format 1's ``{id}.webp``)."""

    @property
    def thumbnail_name(self) -> str:
        return self.thumb or f"{self.id}.webp"

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "id": self.id,
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "caption": self.caption,
            "detections": None
            if self.detections is None
            else [[d.name, d.score, list(d.box), d.category_id] for d in self.detections],
        }
        for name in ("size", "mtime_ns", "digest", "fingerprint", "thumb"):
            value = getattr(self, name)
            if value is not None:
                raw[name] = value
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> IndexedImage:
        dets = raw.get("detections")
        return cls(
            id=raw["id"],
            file=raw["file"],
            width=int(raw["width"]),
            height=int(raw["height"]),
            caption=raw.get("caption"),
            detections=None
            if dets is None
            else tuple(Detection(name, float(score), tuple(box), int(cid)) for name, score, box, cid in dets),
            size=raw.get("size"),
            mtime_ns=raw.get("mtime_ns"),
            digest=raw.get("digest"),
            fingerprint=raw.get("fingerprint"),
            thumb=raw.get("thumb"),
        )


def image_id_for(relative_path: str) -> str:
    """Stable id from the path inside the folder, so re-indexing keeps ids (and URLs) unchanged."""
    return hashlib.sha1(relative_path.encode("utf-8")).hexdigest()[:16]


def read_meta(root: str | Path) -> dict[str, Any]:
    """The current generation's metadata (which models built it, counts); ``{}`` if there is no index."""
    try:
        return gens.read_pointer(Path(root)).meta
    except FileNotFoundError:
        return {}


class ImageIndex:
    """An index loaded in memory: one matrix product (or the ANN index) answers a visual query."""

    def __init__(
        self,
        root: Path,
        images_dir: Path,
        records: list[IndexedImage],
        embeddings: np.ndarray,
        embedder: str,
        models: dict[str, Any] | None = None,
        ann: AnnIndex | None = None,
        ann_info: AnnInfo | None = None,
        generation: int = 0,
        folder: Path | None = None,
        previous: str | None = None,
    ) -> None:
        if len(records) != embeddings.shape[0]:
            raise ValueError(
                f"index at {root} is inconsistent: {len(records)} records, {embeddings.shape[0]} rows"
            )
        self.root = root
        self.images_dir = images_dir
        self.records = records
        # A memory map stays one (indexing reads the old rows without loading them all).
        self.embeddings = (
            embeddings
            if isinstance(embeddings, np.memmap)
            else np.ascontiguousarray(embeddings, dtype=np.float32)
        )
        self.embedder = embedder
        self.models: dict[str, Any] = models or {}
        """Which models built the index (``embedder``, ``detector``: names, files, digests)."""
        self._by_id = {record.id: i for i, record in enumerate(records)}
        if ann is not None and ann.count != len(records):
            raise ValueError(
                f"index at {root}: the ANN index holds {ann.count:,} rows for {len(records):,} images"
            )
        self.ann = ann
        """Answers ``nearest`` when set; ``None``: exact search over ``embeddings``."""
        self.ann_info = ann_info
        """What the metadata records about the ANN file (set even when loaded without it)."""
        self.generation = generation
        """Which generation this is (0: a format-1 index, or one not saved yet)."""
        self.folder = folder or root
        """Where its files are: ``root/gen-NNNNNN`` (``root`` itself for format 1)."""
        self.previous = previous

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labelled(self) -> int:
        return sum(record.detections is not None for record in self.records)

    # --- lookups -------------------------------------------------------------

    def position(self, image_id: str) -> int | None:
        return self._by_id.get(image_id)

    def image_path(self, image_id: str) -> Path | None:
        i = self._by_id.get(image_id)
        return None if i is None else self.images_dir / self.records[i].file

    def thumbnail_path(self, image_id: str) -> Path | None:
        i = self._by_id.get(image_id)
        return None if i is None else self.root / gens.THUMBNAILS / self.records[i].thumbnail_name

    def nearest(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k rows by cosine similarity (rows and query are L2-normalised)."""
        if not len(self.records):
            return []
        if self.ann is not None:
            return self.ann.search(query, k)  # IVF-Flat keeps full rows: its scores are exact cosines
        scores = self.embeddings @ query.astype(np.float32).ravel()
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(np.clip(scores[i], -1.0, 1.0))) for i in top]

    # --- persistence ---------------------------------------------------------

    @classmethod
    def load(cls, root: str | Path, *, mmap: bool = False, ann: bool = True) -> ImageIndex:
        """Read the current generation of an index folder (or a format-1 index). With an ANN file
        recorded (and ``ann``), load it and memory-map the rows.

        The ANN index holds its own copy of the rows, so loading ``embeddings.npy`` as well would
        double the memory; mapped, only the rows a query looks up by position are read.
        ``ann=False`` (updating an index) leaves the ANN file to the caller; ``ann_info`` is still set.
        """
        root = Path(root)
        pointer = gens.read_pointer(root)
        meta, folder = pointer.meta, pointer.folder
        with (folder / gens.MANIFEST).open(encoding="utf-8") as fh:
            records = [IndexedImage.from_json(json.loads(line)) for line in fh if line.strip()]
        where = folder / (gens.META if pointer.format == FORMAT_VERSION else gens.POINTER)
        info = AnnInfo.from_json(meta["ann"], where) if meta.get("ann") is not None else None
        embeddings = (
            np.load(folder / gens.EMBEDDINGS, mmap_mode="r" if mmap or (info and ann) else None)
            if records
            else np.zeros((0, meta["dim"]), np.float32)
        )
        found = AnnIndex.load(folder, info, rows=len(records)) if info is not None and ann else None
        if ann:
            logger.info(
                "index %s (generation %d): %d images, %s", root, pointer.generation, len(records),
                (
                    f"ANN search ({info.kind}, nlist {info.nlist}, nprobe {info.nprobe}, measured recall@10 "
                    f"{'unknown' if info.recall is None else f'{info.recall:.3f}'})"
                    if info
                    else "exact search"
                ),
            )  # fmt: skip
        return cls(
            root, Path(meta["images_dir"]), records, embeddings, meta["embedder"], meta.get("models"), found, info,
            generation=pointer.generation, folder=folder, previous=pointer.previous,
        )  # fmt: skip

    def metadata(self, generation: int) -> dict[str, Any]:
        """What ``meta.json`` records for this index as generation ``generation``."""
        return index_metadata(
            generation, self.embedder, int(self.embeddings.shape[1]), self.records, self.images_dir, self.models,
            self.ann_info,
        )  # fmt: skip

    def save(self) -> int:
        """Write these records and rows (and ANN index, if set) as a new generation and make it current.

        Returns the generation's number. Used to write an index assembled in memory (tests,
        benchmarks); ``indexing.build_index`` writes its generations the same way, chunk by chunk.
        """
        with gens.write_lock(self.root):
            number, folder, previous = start_generation(self.root)
            gens.write_file(
                folder / gens.EMBEDDINGS, lambda fh: np.save(fh, np.asarray(self.embeddings, np.float32))
            )
            if self.ann is not None:
                self.ann_info = self.ann.write(folder, ANN_FILE_NAME, replace=False)
            write_manifest(folder, self.records)
            gens.write_file(
                folder / gens.META, lambda fh: fh.write(json.dumps(self.metadata(number), indent=2).encode())
            )
            gens.commit(self.root, number, previous)
            self.generation, self.folder, self.previous = number, folder, previous
            gens.clean(self.root, referenced_thumbnails)
        return number


def index_metadata(
    generation: int,
    embedder: str,
    dim: int,
    records: list[IndexedImage],
    images_dir: Path,
    models: dict[str, Any],
    ann_info: AnnInfo | None,
) -> dict[str, Any]:
    """A generation's ``meta.json``: what built it, what it holds, and its ANN file."""
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "generation": generation,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "embedder": embedder,
        "dim": dim,
        "count": len(records),
        "labelled": sum(record.detections is not None for record in records),
        "images_dir": str(images_dir.resolve()),
        "models": models,
    }
    if ann_info is not None:
        meta["ann"] = ann_info.to_json()
    return meta


def start_generation(root: Path) -> tuple[int, Path, str | None]:
    """A new, empty generation folder numbered after every existing one; the caller holds the lock.

    Returns its number, its folder, and what the pointer will record as ``previous``.
    """
    root.mkdir(parents=True, exist_ok=True)
    try:
        pointer: gens.Pointer | None = gens.read_pointer(root)
    except FileNotFoundError:
        pointer = None
    current = pointer.generation if pointer else 0
    number = max([current, *gens.existing_generations(root)]) + 1
    folder = root / gens.generation_name(number)
    folder.mkdir()
    previous = (
        None if pointer is None else (gens.LEGACY if pointer.format == LEGACY_FORMAT else pointer.folder.name)
    )
    return number, folder, previous


def write_manifest(folder: Path, records: Iterable[IndexedImage]) -> None:
    gens.write_file(
        folder / gens.MANIFEST,
        lambda fh: fh.writelines((json.dumps(r.to_json()) + "\n").encode("utf-8") for r in records),
    )


def referenced_thumbnails(folders: Iterable[Path]) -> set[str]:
    """Thumbnail names the manifests in ``folders`` use (what the clean-up must keep)."""
    names: set[str] = set()
    for folder in folders:
        path = folder / gens.MANIFEST
        if not path.is_file():
            continue
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    raw = json.loads(line)
                    names.add(raw.get("thumb") or f"{raw['id']}.webp")
    return names
