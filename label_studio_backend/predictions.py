"""From search results to Label Studio prediction results: pure functions, no I/O.

Boxes come only from a *near-duplicate* of the task image (similarity at or
above a threshold and the same aspect ratio), because a detection's box
describes where an object is in that very picture; on a merely similar image it
would be misplaced. Image-level Choices, in contrast, are voted by the top-k
similar images, weighted by similarity.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simages_core import Detection, SearchResult, SimilarImage
from simages_core.boxes import scale_box, to_label_studio

from .label_config import ImageTarget, LabelControl
from .learned_labels import ControlEvidence, Evidence, learned_label_for, learned_vote

Size = tuple[int, int]


@dataclass(frozen=True)
class Thresholds:
    near_duplicate_score: float = 0.9
    aspect_tolerance: float = 0.03
    min_detection_score: float = 0.25
    top_k: int = 5
    choice_threshold: float = 0.5


def aspect_matches(a: Size, b: Size, tolerance: float) -> bool:
    """Whether two sizes have the same width/height ratio within a relative tolerance."""
    ratio_a, ratio_b = a[0] / a[1], b[0] / b[1]
    return abs(ratio_a - ratio_b) <= tolerance * max(ratio_a, ratio_b)


def near_duplicate(result: SearchResult, task_size: Size, thresholds: Thresholds) -> SimilarImage | None:
    """The best match that is a near-duplicate of the task image and has labels, if any."""
    for image in result.images:  # ordered by score, best first
        if image.score < thresholds.near_duplicate_score:
            return None
        if image.detections is None or not image.width or not image.height:
            continue
        if aspect_matches(task_size, (image.width, image.height), thresholds.aspect_tolerance):
            return image
    return None


def rectangle_regions(
    control: LabelControl,
    match: SimilarImage,
    task_size: Size,
    min_detection_score: float,
    *,
    label_for: Callable[[str], str | None] | None = None,
) -> list[dict[str, Any]]:
    """The match's detections as ``rectanglelabels`` regions on the task image (percent coordinates).

    ``label_for`` maps a COCO class to a project label (default: the control's explicit mapping).
    """
    label_for = label_for or control.label_for
    assert match.width and match.height and match.detections is not None
    width, height = task_size
    sx, sy = width / match.width, height / match.height
    regions: list[dict[str, Any]] = []
    for det in match.detections:
        label = label_for(det.name)
        if label is None or det.score < min_detection_score:
            continue
        box = to_label_studio(scale_box(det.box, sx, sy), width, height)
        if box is None:  # degenerate after clamping: nothing an annotator could see
            continue
        regions.append(
            {
                "id": f"{control.from_name}-{len(regions)}",
                "from_name": control.from_name,
                "to_name": control.to_name,
                "type": "rectanglelabels",
                "original_width": box.original_width,
                "original_height": box.original_height,
                "image_rotation": 0,
                "value": {
                    "x": box.x,
                    "y": box.y,
                    "width": box.width,
                    "height": box.height,
                    "rotation": 0,
                    "rectanglelabels": [label],
                },
                "score": round(det.score, 4),
            }
        )
    return regions


def own_rectangle_regions(
    control: LabelControl, image: SimilarImage, min_detection_score: float
) -> list[dict[str, Any]]:
    """An image's own detections as regions on itself (for tasks made from that very image)."""
    if image.detections is None or not image.width or not image.height:
        return []
    return rectangle_regions(control, image, (image.width, image.height), min_detection_score)


def _classes(detections: tuple[Detection, ...], control: LabelControl, min_score: float) -> set[str]:
    return {
        label
        for det in detections
        if det.score >= min_score and (label := control.label_for(det.name)) is not None
    }


def vote_choices(
    control: LabelControl, images: tuple[SimilarImage, ...], thresholds: Thresholds
) -> list[tuple[str, float]]:
    """Choices voted by the top-k labelled images, each weighted by its similarity.

    A choice's share is the weight of the images showing it over the weight of all
    voting images (an image with no matching object votes for nothing but still
    counts). Returns ``(choice, share)`` at or above the threshold, best first; one
    at most for a single-choice control.
    """
    voters = [im for im in images if im.detections is not None][: thresholds.top_k]
    total = sum(max(im.score, 0.0) for im in voters)
    if total <= 0:
        return []
    votes: dict[str, float] = defaultdict(float)
    for image in voters:
        assert image.detections is not None
        for label in _classes(image.detections, control, thresholds.min_detection_score):
            votes[label] += max(image.score, 0.0)
    ranked = sorted(((label, w / total) for label, w in votes.items()), key=lambda kv: (-kv[1], kv[0]))
    chosen = [(label, round(share, 4)) for label, share in ranked if share >= thresholds.choice_threshold]
    return chosen if control.multiple else chosen[:1]


def learned_choices(
    control: LabelControl, images: tuple[SimilarImage, ...], evidence: ControlEvidence, thresholds: Thresholds
) -> list[tuple[str, float]]:
    """Choices voted from what annotators taught (``learned_labels``), when no explicit mapping decided.

    The same voters, weights and threshold as ``vote_choices``; classes the control maps explicitly are
    left out of the learned signals, so an explicit mapping always wins.
    """
    voters = [im for im in images if im.detections is not None][: thresholds.top_k]
    shares = learned_vote(
        evidence,
        control.labels,
        voters,
        min_detection_score=thresholds.min_detection_score,
        explicit=control.class_to_label.keys(),
    )
    ranked = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
    chosen = [
        (label, round(share, 4))
        for label, share in ranked
        if share > 0 and share >= thresholds.choice_threshold
    ]
    return chosen if control.multiple else chosen[:1]


def best_similarity(images: tuple[SimilarImage, ...], thresholds: Thresholds) -> float:
    """The similarity of the closest voter: a vote among distant neighbours is less sure than among close ones."""
    voters = [im for im in images if im.detections is not None][: thresholds.top_k]
    return max((max(im.score, 0.0) for im in voters), default=0.0)


def choices_certainty(chosen: list[tuple[str, float]], similarity: float) -> float:
    """How sure a Choices answer is: its weakest vote share times the closest voter's similarity."""
    return min(share for _, share in chosen) * min(similarity, 1.0) if chosen else 0.0


def boxes_certainty(match: SimilarImage, regions: list[dict[str, Any]]) -> float:
    """How sure near-duplicate boxes are: the match's similarity times its detections' mean score."""
    scores = [r["score"] for r in regions if isinstance(r.get("score"), (int, float))]
    return min(match.score, 1.0) * (sum(scores) / len(scores)) if scores else 0.0


def choices_region(control: LabelControl, chosen: list[tuple[str, float]]) -> dict[str, Any] | None:
    if not chosen:
        return None
    return {
        "id": f"{control.from_name}-0",
        "from_name": control.from_name,
        "to_name": control.to_name,
        "type": "choices",
        "value": {"choices": [label for label, _ in chosen]},
        "score": min(share for _, share in chosen),
    }


def prediction(
    result: list[dict[str, Any]], model_version: str, certainties: list[float] | None = None
) -> dict[str, Any]:
    """A Label Studio prediction. Its score is the mean of ``certainties`` (one per part of the answer:
    the boxes, each Choices control) when given, else of its regions' scores; 0 when empty.
    """
    scores = (
        certainties
        if certainties is not None
        else [r["score"] for r in result if isinstance(r.get("score"), (int, float))]
    )
    return {
        "result": result,
        "score": round(sum(scores) / len(scores), 4) if scores and result else 0.0,
        "model_version": model_version,
    }


def box_label_for(
    control: LabelControl, learned: ControlEvidence, threshold: float
) -> Callable[[str], str | None]:
    """COCO class -> box label: the explicit mapping first, then what annotators' boxes taught."""
    taught = learned_label_for(learned, control.labels, threshold)

    def label_for(coco_class: str) -> str | None:
        explicit = control.label_for(coco_class)
        if explicit is not None:
            return explicit
        found = taught(coco_class)
        return found[0] if found else None

    return label_for


def answer_target(
    target: ImageTarget, result: SearchResult, size: Size | None, learned: Evidence, thresholds: Thresholds
) -> tuple[list[dict[str, Any]], list[float]]:
    """The regions for one ``<Image>`` and one certainty per control (0 for a control left unanswered).

    Boxes come from a near-duplicate (certainty: its similarity times the boxes' mean score); Choices
    from the explicit vote, else the learned one (certainty: the weakest share times the closest
    voter's similarity). The prediction's score is the mean of all certainties: README "What the score means".
    """
    regions: list[dict[str, Any]] = []
    certainties: list[float] = []
    match = near_duplicate(result, size, thresholds) if target.rectangles and size is not None else None
    for control in target.rectangles:
        boxes: list[dict[str, Any]] = []
        if match is not None and size is not None:
            label_for = box_label_for(
                control, learned.control(control.from_name), thresholds.choice_threshold
            )
            boxes = rectangle_regions(
                control, match, size, thresholds.min_detection_score, label_for=label_for
            )
        regions += boxes
        certainties.append(boxes_certainty(match, boxes) if match is not None else 0.0)
    for control in target.choices:
        chosen = vote_choices(control, result.images, thresholds)
        if not chosen:  # an explicit mapping that decides always wins over what was learned
            chosen = learned_choices(control, result.images, learned.control(control.from_name), thresholds)
        region = choices_region(control, chosen)
        if region is not None:
            regions.append(region)
        certainties.append(choices_certainty(chosen, best_similarity(result.images, thresholds)))
    return regions, certainties
