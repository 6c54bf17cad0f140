"""An index folder's generations: each build writes a new ``gen-NNNNNN/`` and one atomic rename commits it.

``index.json`` at the top of the folder is a small pointer naming the current generation (and the
previous one, kept for servers that have not switched yet); everything else is either named by it,
a shared content-addressed thumbnail, or left over by a killed run and removed by ``clean``.
Format 1 (the flat layout: ``index.json`` holding the metadata beside ``manifest.jsonl``,
``embeddings.npy`` and ``ann-<count>.faiss``) is still read; the next build upgrades it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

POINTER = "index.json"
FORMAT_VERSION = 2
LEGACY_FORMAT = 1
LEGACY = "legacy"
"""What the pointer's ``previous`` says when the previous index was the flat format-1 layout."""
LOCK = ".lock"
THUMBNAILS = "thumbnails"
META = "meta.json"
MANIFEST = "manifest.jsonl"
EMBEDDINGS = "embeddings.npy"
ANN_FILE = "ann.faiss"
READABLE = 0o644
"""Mode of a file written through a temp file (``mkstemp`` makes them 0600): a server running as
another user, or in a container, must read the index."""
_GENERATION = re.compile(r"^gen-(\d{6,})$")
_LEGACY_FILES = ("manifest.jsonl", "embeddings.npy")
_LEFTOVERS = (".index.json.", ".new-rows.", ".embeddings.npy.", ".manifest.jsonl.", ".ann-")
"""Prefixes of temporary files a killed run may leave at the top of the folder (this and earlier versions)."""


class IndexLocked(RuntimeError):
    """Another ``simages-server index`` run is writing this index folder."""


@dataclass(frozen=True)
class Pointer:
    """Which generation an index folder serves, as read from its ``index.json``."""

    format: int
    generation: int
    """0 for a format-1 (flat) index."""
    folder: Path
    """Where its metadata, manifest, rows and ANN file are: ``root/gen-NNNNNN`` (``root`` for format 1)."""
    previous: str | None
    """The generation before it (kept on disk), ``legacy``, or ``None``."""
    meta: dict[str, Any]
    """The generation's metadata (format 1: ``index.json`` itself)."""


def generation_name(number: int) -> str:
    return f"gen-{number:06d}"


def stamp(root: Path) -> tuple[int, int, int] | None:
    """A cheap identity of the pointer file: every commit replaces it, so this changes with it."""
    try:
        st = os.stat(root / POINTER)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_pointer(root: Path) -> Pointer:
    """The generation ``root`` serves; ``FileNotFoundError`` (with how to build one) if there is none."""
    path = root / POINTER
    if not path.is_file():
        raise FileNotFoundError(
            f"no index at {root}: build one with `simages-server index IMAGES_DIR --out {root}`"
        )
    raw = _read_json(path)
    fmt = raw.get("format", LEGACY_FORMAT)
    if fmt == LEGACY_FORMAT:
        return Pointer(LEGACY_FORMAT, 0, root, None, raw)
    if fmt != FORMAT_VERSION:
        raise ValueError(f"{path}: index format {fmt!r} is not one this server reads (1 or {FORMAT_VERSION})")
    number = raw.get("generation")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise ValueError(f"{path}: 'generation' must be a whole number ≥ 1, not {number!r}")
    folder = root / generation_name(number)
    meta = _read_json(folder / META)
    if meta.get("generation") != number:
        raise ValueError(f"{folder / META} is not generation {number}")
    previous = raw.get("previous")
    return Pointer(FORMAT_VERSION, number, folder, previous if isinstance(previous, str) else None, meta)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: the index folder is damaged") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return raw


def existing_generations(root: Path) -> list[int]:
    found = []
    for path in root.iterdir() if root.is_dir() else ():
        match = _GENERATION.match(path.name)
        if match and path.is_dir():
            found.append(int(match.group(1)))
    return sorted(found)


# --- writing --------------------------------------------------------------------------------


def fsync_path(path: Path, *, directory: bool = False) -> None:
    """Flush a file's (or a folder's entries') data to disk, so a power cut after the commit finds them."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a new file in a generation being built, and flush it (it is not visible until the commit)."""
    with open(path, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def replace_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write beside ``path`` under a temporary name, flush, then rename over it: readers see old or new."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, READABLE)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def link_or_copy(source: Path, target: Path) -> None:
    """An unchanged file of the previous generation, shared by a hard link (generations are never edited)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        fsync_path(target)


def commit(root: Path, number: int, previous: str | None) -> None:
    """Make generation ``number`` current: flush its folder, then replace the pointer in one rename."""
    fsync_path(root / generation_name(number), directory=True)
    if (root / THUMBNAILS).is_dir():
        fsync_path(root / THUMBNAILS, directory=True)
    pointer = {"format": FORMAT_VERSION, "generation": number, "previous": previous}
    replace_file(root / POINTER, lambda fh: fh.write(json.dumps(pointer, indent=2).encode("utf-8")))
    fsync_path(root, directory=True)


# --- the writer's lock and the clean-up ---------------------------------------------------------


@contextlib.contextmanager
def write_lock(root: Path, *, wait: bool = False) -> Iterator[None]:
    """One writer at a time per index folder (the kernel drops the lock when its process dies)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise IndexLocked(
                f"another `simages-server index` is writing {root}; run one at a time"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def clean(root: Path, referenced_thumbnails: Callable[[Iterable[Path]], set[str]] | None = None) -> list[str]:
    """Remove what is neither the current nor the previous generation: older and unfinished generations,
    temporary files of killed runs, a format-1 index's files once two generations replaced it, and
    thumbnails no kept generation names (``referenced_thumbnails(kept folders)`` says which are).

    The caller holds ``write_lock``. Returns the names removed, for the log.
    """
    if not (root / POINTER).is_file():
        return []
    pointer = read_pointer(root)
    if pointer.format == LEGACY_FORMAT:
        return _remove_leftovers(root)
    keep = {pointer.folder.name}
    if pointer.previous and pointer.previous != LEGACY:
        keep.add(pointer.previous)
    removed = _remove_leftovers(root)
    for number in existing_generations(root):
        name = generation_name(number)
        if name not in keep:
            shutil.rmtree(root / name, ignore_errors=True)
            removed.append(name + "/")
    kept_folders = [root / name for name in sorted(keep)]
    if pointer.previous == LEGACY:
        kept_folders.append(root)
    else:  # the flat index's files once nothing can still be serving them
        for name in _LEGACY_FILES:
            if (root / name).is_file():
                (root / name).unlink()
                removed.append(name)
        for path in root.glob("ann-*.faiss"):
            path.unlink()
            removed.append(path.name)
    thumbnails = root / THUMBNAILS
    if referenced_thumbnails is not None and thumbnails.is_dir():
        wanted = referenced_thumbnails(kept_folders)
        for entry in os.scandir(thumbnails):
            if entry.name not in wanted and entry.is_file():
                os.unlink(entry.path)
                removed.append(f"{THUMBNAILS}/{entry.name}")
    return removed


def _remove_leftovers(root: Path) -> list[str]:
    removed = []
    for entry in os.scandir(root):
        if entry.is_file() and entry.name.startswith(_LEFTOVERS):
            os.unlink(entry.path)
            removed.append(entry.name)
    thumbnails = root / THUMBNAILS
    if thumbnails.is_dir():
        for entry in os.scandir(thumbnails):
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                os.unlink(entry.path)
                removed.append(f"{THUMBNAILS}/{entry.name}")
    return removed
