"""Which files of an images folder indexing reads (image files, by extension) and which it skips and lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


@dataclass(frozen=True)
class FolderScan:
    """What a folder holds, as relative POSIX paths, sorted; hidden files and folders are left out."""

    images: list[str]
    not_images: list[str]
    """Files whose extension is not an image's (``IMAGE_SUFFIXES``): skipped by ``index``, and listed."""


def scan_folder(images_dir: Path) -> FolderScan:
    """The image files under a folder, and the other files (not hidden) that indexing skips."""
    images: list[str] = []
    others: list[str] = []
    for path in images_dir.rglob("*"):
        rel = path.relative_to(images_dir)
        if any(p.startswith(".") for p in rel.parts) or not path.is_file():
            continue
        (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(rel.as_posix())
    return FolderScan(sorted(images), sorted(others))


def list_images(images_dir: Path) -> list[str]:
    """Relative paths of the image files under a folder, sorted, hidden files skipped."""
    return scan_folder(images_dir).images
