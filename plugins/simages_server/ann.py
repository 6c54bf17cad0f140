"""The approximate-nearest-neighbour (ANN) index that answers visual queries on large collections.

One job: build, update, save, load and search a faiss IVF-Flat index over the index's
L2-normalised float32 rows (inner product = cosine similarity). A faiss id is always the
row's position in ``embeddings.npy``. An update removes and adds rows by id
(``remove``/``put``): the coarse quantizer (the k-means centroids) trained at the first
build is kept, nothing is re-trained. After a build and after every update ``nprobe`` is
chosen by measuring recall on sampled rows (``ann_tuning.py``). The generation's metadata
records the file, its parameters, its count and the measured recall (``AnnInfo``); a file
whose count disagrees is refused.
Why faiss IVF-Flat (and not HNSW): see DESIGN.md, "Index at scale".
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .ann_tuning import MAX_PROBE_SHARE, TARGET_RECALL, Tuning, tune_nprobe

ANN_THRESHOLD = 50_000
"""Images from which ``--ann auto`` builds the ANN index. Below it one matrix product over all
rows takes a few ms at 512 dimensions and is exact, with no build step and no extra file; above
it that time grows linearly (~145 ms a query at 1M over HTTP) while the ANN index stays at a few ms."""

ANN_FILE_NAME = "ann.faiss"
"""The file's name inside a generation folder (format 1 named it ``ann-<count>.faiss`` beside the rest)."""

AnnMode = Literal["auto", "on", "off"]
ANN_MODES: tuple[AnnMode, ...] = ("auto", "on", "off")
ANN_KIND = "faiss-ivf-flat"

_LISTS_PER_SQRT = 2
"""nlist = 2·√n inverted lists: ~500 rows a list at 1M; k-means cost grows with nlist."""
_TRAIN_PER_LIST = 40
"""k-means sample: faiss warns below 39 points a centroid; more only slows the build."""
RETUNE_SHARE = 0.05
"""An update measures ``nprobe`` again once the rows changed since the last measurement exceed this
share of the index. A few changed rows cannot move recall@10 measurably (the sample measures to
±0.01), and the measurement is most of an update's cost: at 200,000 rows, removing and adding 1% of
them took 0.03 s, the tuning pass that followed 22 s (2 busy cores)."""
_ADD_CHUNK = 65_536
"""Rows handed to faiss at a time, so a memory-mapped embeddings file is never loaded whole."""


class AnnError(ValueError):
    """The ANN file is missing, unreadable, or disagrees with the index it belongs to."""


@dataclass(frozen=True)
class AnnInfo:
    """What the index's metadata records under ``"ann"``: which file, how it was built, how many rows."""

    kind: str
    file: str
    """File name inside the generation folder (``ann.faiss``; format 1: ``ann-<count>.faiss``)."""
    count: int
    dim: int
    nlist: int
    nprobe: int
    """Chosen by measurement (``ann_tuning.tune_nprobe``); ``serve`` searches with it."""
    recall: float | None = None
    """recall@10 measured at ``nprobe`` on ``tuned_queries`` sampled rows (``None``: not measured)."""
    tuned_queries: int = 0
    drift: int = 0
    """Rows removed, changed or added since ``nprobe`` was measured (see ``RETUNE_SHARE``)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: object, where: Path) -> AnnInfo:
        if not isinstance(raw, dict):
            raise AnnError(f"{where}: 'ann' must be an object, not {type(raw).__name__}")
        if raw.get("kind") != ANN_KIND:
            raise AnnError(f"{where}: 'ann.kind' is {raw.get('kind')!r}; this server reads {ANN_KIND!r}")
        file = raw.get("file")
        if not isinstance(file, str) or not file or Path(file).name != file:
            raise AnnError(f"{where}: 'ann.file' must be a file name inside the index folder, not {file!r}")
        numbers = {}
        for name in ("count", "dim", "nlist", "nprobe"):
            value = raw.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise AnnError(f"{where}: 'ann.{name}' must be a whole number ≥ 0, not {value!r}")
            numbers[name] = value
        recall = raw.get("recall")
        is_number = isinstance(recall, int | float) and not isinstance(recall, bool)
        if recall is not None and not (is_number and 0 <= recall <= 1):
            raise AnnError(f"{where}: 'ann.recall' must be a number from 0 to 1, not {recall!r}")
        queries = raw.get("tuned_queries", 0)
        if not isinstance(queries, int) or isinstance(queries, bool) or queries < 0:
            raise AnnError(f"{where}: 'ann.tuned_queries' must be a whole number ≥ 0, not {queries!r}")
        drift = raw.get("drift", 0)
        if not isinstance(drift, int) or isinstance(drift, bool) or drift < 0:
            raise AnnError(f"{where}: 'ann.drift' must be a whole number ≥ 0, not {drift!r}")
        return cls(
            kind=ANN_KIND,
            file=file,
            recall=None if recall is None else float(recall),
            tuned_queries=queries,
            drift=drift,
            **numbers,
        )


@dataclass(frozen=True)
class AnnReport:
    """What one ``simages-server index`` run did to the ANN index."""

    action: Literal["built", "added", "updated", "kept", "removed"]
    added: int
    """Rows added to an ANN index loaded from disk (``added``, ``updated``), or indexed by a new one (``built``)."""
    count: int
    """Rows in the ANN index after the run (0 once removed)."""
    info: AnnInfo | None = None
    """What the metadata now records (``None`` once removed)."""
    deleted: int = 0
    """Rows taken out (``updated``): removed files, changed ones, and rows moved into their places."""

    def tuning(self) -> str | None:
        """``ANN index: N rows, nprobe P, recall@10 R on S sampled queries`` (``None`` once removed)."""
        if self.info is None:
            return None
        recall = "not measured" if self.info.recall is None else f"{self.info.recall:.3f}"
        return (
            f"ANN index: {self.info.count:,} rows, nprobe {self.info.nprobe} of {self.info.nlist} lists, "
            f"recall@10 {recall} on {self.info.tuned_queries:,} sampled queries"
        )

    def describe(self) -> str:
        if self.action == "added":
            return f"added {self.added:,} to the ANN index ({self.count:,} rows)"
        if self.action == "updated":
            return (
                f"updated the ANN index: {self.deleted:,} rows out, {self.added:,} in ({self.count:,} rows)"
            )
        if self.action == "built":
            return f"built the ANN index over {self.count:,} rows"
        if self.action == "kept":
            return f"ANN index unchanged ({self.count:,} rows)"
        return "removed the ANN index (exact search)"


def wants_ann(mode: AnnMode, rows: int, *, has_ann: bool, threshold: int = ANN_THRESHOLD) -> bool:
    """Whether an index of ``rows`` rows should carry an ANN index after this build.

    ``auto`` keeps an existing ANN index even if the threshold was raised since: dropping it
    would make the next growth past the threshold a full rebuild again.
    """
    if mode not in ANN_MODES:
        raise ValueError(f"ann mode must be one of {', '.join(ANN_MODES)}, not {mode!r}")
    if mode == "off" or rows == 0:
        return False
    return mode == "on" or has_ann or rows >= threshold


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - the [server] extra installs it
        raise AnnError("the ANN index needs faiss-cpu: pip install 'simages-plugins[server]'") from exc
    return faiss


class AnnIndex:
    """A faiss IVF-Flat index whose ids are row positions; searched with ``nprobe`` lists."""

    def __init__(
        self, index: Any, nprobe: int, recall: float | None = None, tuned_queries: int = 0, drift: int = 0
    ) -> None:
        self._index = index
        self.nprobe = nprobe
        self._index.nprobe = nprobe
        # A server searches one query per request: faiss's default (parallel_mode 0) splits work by
        # query, so one query scans its lists on one core. Mode 1 splits the probed lists across
        # OpenMP threads instead: 1.6x lower latency for a single query on 2 cores (measured at 300k).
        self._index.parallel_mode = 1
        self.recall = recall
        self.tuned_queries = tuned_queries
        self.drift = drift
        """Rows removed, changed or added since the last ``tune``."""

    def needs_tuning(self, churn: int) -> bool:
        """Whether ``churn`` more changed rows move the index far enough from its measured ``nprobe``
        (``RETUNE_SHARE`` of its rows since the last measurement) to measure again."""
        return self.recall is None or self.drift + churn > RETUNE_SHARE * self.count

    def tune(
        self, rows: np.ndarray, *, target: float = TARGET_RECALL, max_probe_share: float = MAX_PROBE_SHARE
    ) -> Tuning:
        """Measure and set ``nprobe`` over ``rows`` (all the rows this index holds, in id order)."""
        if len(rows) != self.count:
            raise AnnError(f"tuning needs the index's {self.count:,} rows, got {len(rows):,}")
        tuning = tune_nprobe(self._index, rows, target=target, max_probe_share=max_probe_share)
        self.nprobe, self.recall, self.tuned_queries = tuning.nprobe, tuning.recall, tuning.queries
        self.drift = 0
        self._index.nprobe = tuning.nprobe
        return tuning

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def nlist(self) -> int:
        return int(self._index.nlist)

    def centroids(self) -> np.ndarray:
        """The coarse quantizer's centroids: unchanged by ``add`` (a rebuild would re-train them)."""
        quantizer = self._index.quantizer
        return np.array(quantizer.reconstruct_n(0, quantizer.ntotal), np.float32)

    @classmethod
    def build(
        cls,
        rows: np.ndarray,
        *,
        seed: int = 0,
        target: float = TARGET_RECALL,
        max_probe_share: float = MAX_PROBE_SHARE,
    ) -> AnnIndex:
        """Train the coarse quantizer on a sample of ``rows``, add them all, then tune ``nprobe``."""
        faiss = _faiss()
        n, dim = rows.shape
        if n == 0:
            raise AnnError("cannot build an ANN index over no rows")
        nlist = max(1, min(int(_LISTS_PER_SQRT * math.sqrt(n)), n // _TRAIN_PER_LIST))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.min_points_per_centroid = 1  # the sample size is chosen above; no warning for tiny indexes
        sample_size = min(n, _TRAIN_PER_LIST * nlist)
        # Sorted positions: a memory-mapped file is read front to back, not at random.
        sample = np.sort(np.random.default_rng(seed).choice(n, sample_size, replace=False))
        index.train(np.ascontiguousarray(rows[sample], np.float32))
        built = cls(index, nlist)  # exhaustive until tuned
        built.add(rows)
        built.tune(rows, target=target, max_probe_share=max_probe_share)
        return built

    def add(self, rows: np.ndarray) -> int:
        """Append ``rows`` (they get the next positions as ids); returns how many were added."""
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise AnnError(f"rows of shape {rows.shape} do not fit an ANN index of dimension {self.dim}")
        for start in range(0, len(rows), _ADD_CHUNK):
            self._index.add(np.ascontiguousarray(rows[start : start + _ADD_CHUNK], np.float32))
        return len(rows)

    def remove(self, ids: np.ndarray) -> int:
        """Take the rows with these ids out; returns how many were found."""
        if not len(ids):
            return 0
        return int(self._index.remove_ids(np.ascontiguousarray(ids, np.int64)))

    def put(self, rows: np.ndarray, ids: np.ndarray) -> None:
        """Add ``rows`` under the given ids (positions): a changed or moved row, after ``remove``."""
        if rows.ndim != 2 or rows.shape[1] != self.dim or len(rows) != len(ids):
            raise AnnError(
                f"rows of shape {rows.shape} with {len(ids)} ids do not fit an ANN index of dimension {self.dim}"
            )
        for start in range(0, len(rows), _ADD_CHUNK):
            self._index.add_with_ids(
                np.ascontiguousarray(rows[start : start + _ADD_CHUNK], np.float32),
                np.ascontiguousarray(ids[start : start + _ADD_CHUNK], np.int64),
            )

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k positions by inner product (cosine for unit rows), best first, scores clipped to [-1, 1]."""
        k = min(k, self.count)
        if k <= 0:
            return []
        vector = np.ascontiguousarray(query, np.float32).reshape(1, -1)
        scores, ids = self._index.search(vector, k)
        if ids[0, -1] < 0:  # faiss pads with -1 when the probed lists hold fewer than k rows: probe them all
            params = _faiss().SearchParametersIVF(nprobe=self.nlist)
            scores, ids = self._index.search(vector, k, params=params)
        return [
            (int(i), float(np.clip(s, -1.0, 1.0))) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0
        ]

    def info(self, file: str) -> AnnInfo:
        return AnnInfo(
            ANN_KIND, file, self.count, self.dim, self.nlist, self.nprobe, self.recall, self.tuned_queries,
            self.drift,
        )  # fmt: skip

    def write(self, folder: Path, name: str | None = None, *, replace: bool = True) -> AnnInfo:
        """Write to ``folder/name``; the caller records the returned ``AnnInfo`` in the metadata.

        ``replace=False``: a file in a generation being built, written and flushed in place (nothing
        reads it before the commit). Otherwise (a format-1 folder) a temp file renamed over the name,
        which by default carries the count, so the file the metadata names now is never overwritten.
        """
        name = name or f"ann-{self.count}.faiss"
        if replace:
            _atomic_file(folder / name, lambda tmp: _faiss().write_index(self._index, str(tmp)))
        else:
            _faiss().write_index(self._index, str(folder / name))
            fd = os.open(folder / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return self.info(name)

    @classmethod
    def load(cls, root: Path, info: AnnInfo, *, rows: int) -> AnnIndex:
        """Read ``info.file``; refuse it unless its count, dimension and kind agree with the index."""
        path = root / info.file
        if info.count != rows:
            raise AnnError(
                f"the index at {root} records an ANN index of {info.count:,} rows for {rows:,} images: "
                "rebuild it with `simages-server index IMAGES_DIR --out INDEX --ann on`"
            )
        if not path.is_file():
            raise AnnError(f"ANN index file {path} named by the index at {root} is missing")
        faiss = _faiss()
        try:
            loaded = faiss.read_index(str(path))  # already of its concrete class, and owning it
        except RuntimeError as exc:
            raise AnnError(f"cannot read the ANN index {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, faiss.IndexIVFFlat):
            raise AnnError(
                f"{path} is a {type(loaded).__name__}, not the {ANN_KIND} index this server builds"
            )
        found = cls(loaded, info.nprobe, info.recall, info.tuned_queries, info.drift)
        if found.count != info.count or found.dim != info.dim:
            raise AnnError(
                f"ANN index {path} holds {found.count:,} rows of dimension {found.dim}, but "
                f"the index at {root} records {info.count:,} of dimension {info.dim}: the file does not "
                "belong to this index; rebuild it with `simages-server index IMAGES_DIR --out INDEX --ann on`"
            )
        return found


def _atomic_file(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a temp file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale(root: Path, keep: str | None) -> None:
    """Delete a format-1 folder's ANN files other than ``keep``, after its ``index.json`` moved on."""
    for path in root.glob("ann-*.faiss"):
        if path.name != keep:
            path.unlink(missing_ok=True)
