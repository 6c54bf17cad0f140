"""Which project label a drawn region shows, voted by the images most similar to its crop: pure, no I/O.

A crop of one object finds images in which that kind of object is prominent, so every detection
of every similar image votes for its class, weighted by

- the image's similarity to the crop (a closer image is better evidence), and
- the share of its image the detection covers (the dominant object of a similar image is most
  likely what matched the crop; a small object in its background is likely not).

A label's share is its weight over the weight of every detection that voted, including those whose
class maps to no project label: a crop whose neighbours mostly show other things gets a low share
and, below the threshold, no label at all. The class-to-label mapping is a callable, so the
explicit mapping of the label config and anything learned later plug in the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from simages_core import Detection, SimilarImage

LabelFor = Callable[[str], "str | tuple[str, float] | None"]
"""COCO class -> project label (or ``(label, weight)`` with a weight in [0, 1]); ``None`` for no label."""


@dataclass(frozen=True)
class RegionVote:
    """The outcome of a vote: the winning label (``None`` if none reached the threshold) and the tally."""

    label: str | None
    share: float
    """The winner's share of the vote (0 when nothing voted); for ``label=None``, the best loser's."""
    runner_up: str | None
    """The best label, whether or not it reached the threshold: for "no label" explanations."""
    voters: int
    """How many similar images had a detection that voted."""
    shares: tuple[tuple[str, float], ...] = ()
    """Every label's share, best first."""


def _coverage(detection: Detection, image: SimilarImage, largest: float) -> float:
    """The fraction of its image a detection covers; without the image size, relative to the largest one."""
    x0, y0, x1, y1 = detection.box
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    if image.width and image.height:
        return min(area / (image.width * image.height), 1.0)
    return area / largest if largest > 0 else 1.0


def _mapped(label_for: LabelFor, name: str) -> tuple[str, float] | None:
    mapped = label_for(name)
    if mapped is None:
        return None
    if isinstance(mapped, tuple):
        label, weight = mapped
        return (label, min(max(float(weight), 0.0), 1.0))
    return (mapped, 1.0)


def vote_region(
    images: Sequence[SimilarImage],
    label_for: LabelFor,
    *,
    threshold: float,
    top_k: int,
    min_detection_score: float = 0.25,
) -> RegionVote:
    """Vote a region's label from the ``top_k`` best similar images that carry detections."""
    voters = [im for im in images if im.detections][:top_k]
    votes: dict[str, float] = defaultdict(float)
    total = 0.0
    counted = 0
    for image in voters:
        assert image.detections is not None
        detections = [d for d in image.detections if d.score >= min_detection_score]
        if not detections:
            continue
        counted += 1
        similarity = max(image.score, 0.0)
        largest = max((d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) for d in detections)
        for det in detections:
            weight = similarity * _coverage(det, image, largest)
            total += weight
            mapped = _mapped(label_for, det.name)
            if mapped is not None:
                # A learned association may count only partly; the rest stays in the total.
                votes[mapped[0]] += weight * mapped[1]
    if total <= 0:
        return RegionVote(None, 0.0, None, counted)
    ranked = tuple(
        sorted(((label, round(w / total, 4)) for label, w in votes.items()), key=lambda kv: (-kv[1], kv[0]))
    )
    if not ranked:
        return RegionVote(None, 0.0, None, counted)
    best, share = ranked[0]
    if share < threshold:
        return RegionVote(None, share, best, counted, ranked)
    return RegionVote(best, share, best, counted, ranked)
