"""Merging the answers of several queries into one ranking, and choosing which detections to keep.

No FiftyOne and no network here, so every rule is a unit test away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from simages_core import Detection, SearchResult, SimilarImage

from ._outcomes import QueryLabel, RankedImage


@dataclass(frozen=True)
class ClassFilter:
    """Which detections to keep: an optional set of class names and a minimum confidence."""

    classes: frozenset[str] | None = None
    min_confidence: float = 0.0

    def keep(self, detection: Detection) -> bool:
        if detection.score < self.min_confidence:
            return False
        return self.classes is None or detection.name in self.classes


def merge_results(answers: Sequence[tuple[QueryLabel, SearchResult]]) -> list[RankedImage]:
    """Merge the answers of several queries: one entry per API image id, best score wins, ranked.

    An image found by several queries keeps the highest score (and the query that gave it);
    ties are broken by how many queries found it, then by first appearance, so the order is
    deterministic. Images whose source URL was already seen under another id are dropped too.
    """
    best: dict[str, tuple[SimilarImage, QueryLabel, int, int]] = {}
    order = 0
    for label, result in answers:
        for image in result.images:
            seen = best.get(image.id)
            if seen is None:
                best[image.id] = (image, label, 1, order)
                order += 1
                continue
            kept, kept_label, hits, first = seen
            if image.score > kept.score:
                kept, kept_label = image, label
            best[image.id] = (kept, kept_label, hits + 1, first)
    ranked = sorted(best.values(), key=lambda t: (-t[0].score, -t[2], t[3]))
    out: list[RankedImage] = []
    urls: set[str] = set()
    for image, label, hits, _ in ranked:
        if image.url in urls:
            continue
        urls.add(image.url)
        out.append(RankedImage(image=image, rank=len(out) + 1, query=label, hits=hits))
    return out


def kept_detections(image: SimilarImage, keep: ClassFilter) -> list[Detection]:
    return [d for d in image.detections or () if keep.keep(d)]


def class_summary(image: SimilarImage, keep: ClassFilter = ClassFilter()) -> str:
    """``"cat 0.92, cup 0.71"``, or ``""`` when the image has no (kept) detections."""
    return ", ".join(f"{d.name} {d.score:.2f}" for d in kept_detections(image, keep))
