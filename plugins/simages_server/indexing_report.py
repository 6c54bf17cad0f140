"""What one ``build_index`` run reports: counts by what happened to each file, copies found, the generation."""

from __future__ import annotations

from dataclasses import dataclass

from .ann import AnnReport


@dataclass(frozen=True)
class CopyFound:
    """A new image that is a copy of one already indexed (or of another new one in the same run)."""

    file: str
    copy_of: str
    distance: int
    """Bits apart (of 64), at most the copy threshold."""


@dataclass(frozen=True)
class BuildReport:
    added: int
    skipped: list[str]
    """Image files (by extension) that could not be read as images, with the reason (a changed file that
    no longer reads is also removed from the index)."""
    total: int
    labelled: int = 0
    """Images the detector labelled in this run (new ones and earlier ones that had no labels)."""
    ann: AnnReport | None = None
    """What happened to the ANN index (built, rows added, kept, removed); ``None``: exact search only."""
    changed: int = 0
    """Files whose bytes changed since they were indexed: embedded, labelled and thumbnailed again."""
    removed: int = 0
    """Files gone from the folder (or no longer readable), removed from the index."""
    unchanged: int = 0
    copies: tuple[CopyFound, ...] = ()
    """New images that are copies of indexed ones; added unless ``copies_skipped``."""
    copies_skipped: bool = False
    generation: int = 0
    """The generation now current (unchanged when the run found nothing to do)."""
    committed: bool = True
    """False: nothing changed, so no new generation was written."""
    upgraded: bool = False
    """The run read a format-1 index and wrote it in the current format."""
    not_images: tuple[str, ...] = ()
    """Files in the folder whose extension is not an image's: not read, not indexed (hidden files are
    not listed)."""

    @property
    def skipped_by_kind(self) -> dict[str, list[str]]:
        """Every skipped file by why: ``not an image`` (its extension), ``unreadable`` (an image file
        that does not decode, with the reason)."""
        return {"not an image": list(self.not_images), "unreadable": list(self.skipped)}

    @property
    def skipped_count(self) -> int:
        return len(self.not_images) + len(self.skipped)
