"""The local server's index of a folder of images: manifest, embeddings, thumbnails, labels.

On disk (every file replaced atomically, so an interrupted build leaves the old index intact):
``index.json`` (metadata), ``manifest.jsonl`` (one image a line), ``embeddings.npy``
(float32, rows in manifest order) and ``thumbnails/{id}.webp``. ``index.json`` also records
which models built the index; ``indexing.py`` builds and grows it. A large index also has an
ANN file (``ann-<count>.faiss``, see ``ann.py``) that ``index.json`` names under ``"ann"``:
then ``nearest`` asks it, and ``embeddings.npy`` is memory-mapped instead of loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simages_core import Detection
from simages_core.boxes import clamp_box, scale_box
from simages_core.coco import YOLO_CLASS_INDEX

from .ann import AnnIndex, AnnInfo, AnnReport, remove_stale

logger = logging.getLogger("simages_server")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
THUMBNAIL_SIDE = 256
FORMAT_VERSION = 1


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

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "caption": self.caption,
            "detections": None
            if self.detections is None
            else [[d.name, d.score, list(d.box), d.category_id] for d in self.detections],
        }

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
        )


@dataclass(frozen=True)
class BuildReport:
    added: int
    skipped: list[str]
    """Files that could not be read as images, with the reason."""
    total: int
    labelled: int = 0
    """Images the detector labelled in this run (new ones and earlier ones that had no labels)."""
    ann: AnnReport | None = None
    """What happened to the ANN index (built, rows added, kept, removed); ``None``: exact search only."""


def image_id_for(relative_path: str) -> str:
    """Stable id from the path inside the folder, so re-indexing keeps ids (and URLs) unchanged."""
    return hashlib.sha1(relative_path.encode("utf-8")).hexdigest()[:16]


class ImageIndex:
    """An index loaded in memory: one matrix product answers a visual query."""

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
            raise ValueError(f"index at {root}: the ANN index holds {ann.count:,} rows for {len(records):,} images")
        self.ann = ann
        """Answers ``nearest`` when set; ``None``: exact search over ``embeddings``."""
        self.ann_info = ann_info
        """What ``index.json`` records about the ANN file (set even when loaded without it)."""

    def __len__(self) -> int:
        return len(self.records)

    # --- lookups -------------------------------------------------------------

    def position(self, image_id: str) -> int | None:
        return self._by_id.get(image_id)

    def image_path(self, image_id: str) -> Path | None:
        i = self._by_id.get(image_id)
        return None if i is None else self.images_dir / self.records[i].file

    def thumbnail_path(self, image_id: str) -> Path | None:
        return self.root / "thumbnails" / f"{image_id}.webp" if image_id in self._by_id else None

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
        """Read an index folder. With an ANN file recorded (and ``ann``), load it and memory-map the rows.

        The ANN index holds its own copy of the rows, so loading ``embeddings.npy`` as well would
        double the memory; mapped, only the rows a query looks up by position are read.
        ``ann=False`` (growing an index) leaves the ANN file to the caller; ``ann_info`` is still set.
        """
        root = Path(root)
        meta_path = root / "index.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"no index at {root}: build one with `simages-server index IMAGES_DIR --out {root}`"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        with (root / "manifest.jsonl").open(encoding="utf-8") as fh:
            records = [IndexedImage.from_json(json.loads(line)) for line in fh if line.strip()]
        info = AnnInfo.from_json(meta["ann"], meta_path) if meta.get("ann") is not None else None
        embeddings = (
            np.load(root / "embeddings.npy", mmap_mode="r" if mmap or (info and ann) else None)
            if records
            else np.zeros((0, meta["dim"]), np.float32)
        )
        found = AnnIndex.load(root, info, rows=len(records)) if info is not None and ann else None
        if ann:
            logger.info(
                "index %s: %d images, %s", root, len(records),
                (
                    f"ANN search ({info.kind}, nlist {info.nlist}, nprobe {info.nprobe}, measured recall@10 "
                    f"{'unknown' if info.recall is None else f'{info.recall:.3f}'})"
                    if info
                    else "exact search"
                ),
            )  # fmt: skip
        return cls(
            root, Path(meta["images_dir"]), records, embeddings, meta["embedder"], meta.get("models"), found, info
        )

    def save(self) -> None:
        """Write every file; with ``ann`` set its file too, else ``index.json`` records no ANN index."""
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_VERSION,
            "embedder": self.embedder,
            "dim": int(self.embeddings.shape[1]),
            "count": len(self.records),
            "images_dir": str(self.images_dir.resolve()),
            "models": self.models,
        }
        # The ANN file first, under a new name (the one index.json names now stays), then embeddings
        # and manifest, metadata last: index.json names a consistent set.
        if self.ann is not None:
            self.ann_info = self.ann.write(self.root)
            meta["ann"] = self.ann_info.to_json()
        _atomic_write(self.root / "embeddings.npy", lambda fh: np.save(fh, self.embeddings))
        _atomic_write(
            self.root / "manifest.jsonl",
            lambda fh: fh.write(
                "".join(json.dumps(r.to_json()) + "\n" for r in self.records).encode("utf-8")
            ),
        )
        _atomic_write(
            self.root / "index.json", lambda fh: fh.write(json.dumps(meta, indent=2).encode("utf-8"))
        )
        remove_stale(self.root, self.ann_info.file if self.ann is not None and self.ann_info else None)


def _atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_images(images_dir: Path) -> list[str]:
    """Relative paths of the image files under a folder, sorted, hidden files skipped."""
    found = []
    for path in images_dir.rglob("*"):
        rel = path.relative_to(images_dir)
        if (
            path.is_file()
            and path.suffix.lower() in IMAGE_SUFFIXES
            and not any(p.startswith(".") for p in rel.parts)
        ):
            found.append(rel.as_posix())
    return sorted(found)


def build_index(images_dir: str | Path, out: str | Path, **options: Any) -> BuildReport:
    """Index a folder, or add its new images to an existing index: see ``indexing.build_index``."""
    from .indexing import build_index as build  # indexing imports this module

    return build(images_dir, out, **options)


@dataclass(frozen=True)
class CocoImageLabels:
    width: int | None
    height: int | None
    detections: tuple[Detection, ...]
    caption: str | None


def load_coco_labels(path: Path) -> dict[str, CocoImageLabels]:
    """COCO annotations by file name. Ground truth (no ``score``) counts as score 1.0."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        per_image: dict[int, list[Detection]] = {}
        ignored: set[str] = set()
        for ann in data.get("annotations", []):
            name = categories.get(ann["category_id"])
            if name not in YOLO_CLASS_INDEX:
                ignored.add(str(name))
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            per_image.setdefault(ann["image_id"], []).append(
                Detection(name, float(ann.get("score", 1.0)), (x, y, x + w, y + h), YOLO_CLASS_INDEX[name])
            )
        labels = {
            image["file_name"]: CocoImageLabels(
                width=image.get("width"),
                height=image.get("height"),
                detections=tuple(per_image.get(image["id"], ())),
                caption=image.get("caption"),
            )
            for image in data.get("images", [])
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read COCO annotations from {path}: {type(exc).__name__}: {exc}") from None
    if ignored:
        logger.warning("ignored annotations of classes outside COCO-80: %s", ", ".join(sorted(ignored)))
    return labels


def apply_coco(records: Iterable[IndexedImage], labels: dict[str, CocoImageLabels]) -> list[IndexedImage]:
    """Attach labels by relative path (or, failing that, by file name); rescale boxes if sizes differ."""
    by_name = {Path(name).name: value for name, value in labels.items()}
    out = []
    for record in records:
        found = labels.get(record.file) or by_name.get(Path(record.file).name)
        if found is None:
            out.append(record)
            continue
        sx = record.width / found.width if found.width else 1.0
        sy = record.height / found.height if found.height else 1.0
        dets = []
        for det in found.detections:
            box = clamp_box(scale_box(det.box, sx, sy), record.width, record.height)
            if box is not None:
                dets.append(Detection(det.name, det.score, box, det.category_id))
        out.append(
            IndexedImage(
                record.id,
                record.file,
                record.width,
                record.height,
                tuple(dets),
                found.caption or record.caption,
            )
        )
    return out
