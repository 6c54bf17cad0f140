"""What interactive answers leave behind to learn from: the class each answered region's crop looked like.

When the backend answers a drawn region, it remembers (``region_memo_store``) the region's place on
the task image and the COCO class its similar images mostly showed. When the task's annotation
reaches ``/webhook``, each annotator region is paired with a remembered region by IoU (at least
``SIMAGES_LEARN_MIN_IOU``; a keypoint by the IoU of the crop windows around the two points), and the
pair counts as one (annotator label, class) observation in the evidence model of ``learned_labels``.
No API call is made: the class was voted when the box was drawn.

Only the paired regions teach. A remembered region nobody kept is most often one the annotator
redrew, not a statement that its class has no label; counting it would work against the redrawn one.
A region whose crop's neighbours agree on no class (the best under ``MEMO_MIN_SHARE`` of the weight),
or whose class an explicit mapping decides, leaves no memo: it has nothing to teach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from simages_core import SimilarImage
from simages_core.boxes import LabelStudioBox, from_label_studio
from simages_core.crops import point_window

from .learned_labels import ContributionPart, class_signals, iou
from .region_votes import vote_region

Box = tuple[float, float, float, float]

MEMO_MIN_SHARE = 0.3
"""The crop's best class must carry this share of its neighbours' weighted detections to be remembered."""
LABEL_KEYS = {"rectangle": "rectanglelabels", "keypoint": "keypointlabels"}


@dataclass(frozen=True)
class RegionMemo:
    """A region the backend answered: where it was (pixels of the task image) and the class it looked like."""

    region_id: str
    from_name: str
    shape: str
    """``rectangle`` or ``keypoint`` (``box`` is then the crop window around the point)."""
    box: Box
    size: tuple[int, int]
    coco_class: str
    share: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.region_id,
            "from": self.from_name,
            "shape": self.shape,
            "box": list(self.box),
            "size": list(self.size),
            "class": self.coco_class,
            "share": self.share,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RegionMemo:
        x0, y0, x1, y1 = (float(v) for v in body["box"])
        width, height = (int(v) for v in body["size"])
        return cls(
            str(body["id"]),
            str(body["from"]),
            str(body["shape"]),
            (x0, y0, x1, y1),
            (width, height),
            str(body["class"]),
            float(body["share"]),
        )


def region_box(shape: str, value: dict[str, Any], size: tuple[int, int], point_fraction: float) -> Box | None:
    """A region's pixel box on an image of ``size`` from Label Studio's percent ``value``; ``None`` if unplaceable.

    A keypoint becomes the window ``interactive`` crops around it, so two clicks on one object overlap.
    Rotation is ignored: an annotator box and the backend's answer of the same region share it.
    """
    try:
        x, y = float(value["x"]), float(value["y"])
        if shape == "keypoint":
            return point_window(x * size[0] / 100, y * size[1] / 100, size, fraction=point_fraction)
        ls_box = LabelStudioBox(x, y, float(value["width"]), float(value["height"]), size[0], size[1])
        return from_label_studio(ls_box)
    except (KeyError, TypeError, ValueError):
        return None


def memo_of(
    region_id: str,
    from_name: str,
    shape: str,
    box: Box,
    size: tuple[int, int],
    images: Sequence[SimilarImage],
    explicit: Callable[[str], object],
    *,
    top_k: int,
    min_detection_score: float,
) -> RegionMemo | None:
    """The memo of an answered region: its crop's best COCO class, or ``None`` when it teaches nothing."""
    by_class = vote_region(
        images,
        lambda name: name.lower(),
        threshold=MEMO_MIN_SHARE,
        top_k=top_k,
        min_detection_score=min_detection_score,
    )
    if by_class.label is None or explicit(by_class.label) is not None:
        return None
    return RegionMemo(region_id, from_name, shape, box, size, by_class.label, by_class.share)


def pair_by_iou(first: Sequence[Box], second: Sequence[Box], min_iou: float) -> list[tuple[int, int]]:
    """Greedy best-IoU pairs ``(i, j)``: each box in at most one pair, every pair at least ``min_iou``."""
    ranked = sorted(
        ((iou(a, b), i, j) for i, a in enumerate(first) for j, b in enumerate(second)), reverse=True
    )
    used_first: set[int] = set()
    used_second: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for overlap, i, j in ranked:
        if overlap < min_iou or overlap <= 0:
            break
        if i in used_first or j in used_second:
            continue
        used_first.add(i)
        used_second.add(j)
        pairs.append((i, j))
    return pairs


def latest(memos: Iterable[RegionMemo]) -> list[RegionMemo]:
    """One memo per region id, the last one remembered (a region moved and asked again replaces itself)."""
    by_id: dict[tuple[str, str], RegionMemo] = {}
    for memo in memos:
        by_id.pop((memo.from_name, memo.region_id), None)
        by_id[(memo.from_name, memo.region_id)] = memo
    return list(by_id.values())


def memo_parts(
    from_name: str,
    shape: str,
    annotated: Sequence[tuple[str, Box]],
    size: tuple[int, int],
    memos: Iterable[RegionMemo],
    min_iou: float,
) -> list[ContributionPart]:
    """One (label, class) observation per annotator region paired with a remembered region of its control."""
    own = [m for m in memos if m.from_name == from_name and m.shape == shape and m.size == size]
    pairs = pair_by_iou([box for _, box in annotated], [m.box for m in own], min_iou)
    return [
        ContributionPart(from_name, frozenset({annotated[i][0]}), frozenset(class_signals(own[j].coco_class)))
        for i, j in pairs
    ]


def annotated_regions(
    result: Iterable[dict[str, Any]],
    from_name: str,
    shape: str,
    labels: Iterable[str] | None,
    fraction: float,
) -> tuple[list[tuple[str, Box]], tuple[int, int] | None]:
    """An annotation's labelled regions of one control: ``(label, pixel box)`` and the image size they are on.

    ``labels`` keeps only the control's own labels (``None``: every label, for controls the schema skips).
    """
    allowed = None if labels is None else set(labels)
    kind = LABEL_KEYS[shape]
    regions: list[tuple[str, Box]] = []
    size = None
    for item in result:
        value = item.get("value")
        if item.get("from_name") != from_name or item.get("type") != kind or not isinstance(value, dict):
            continue
        chosen = [str(v) for v in value.get(kind) or () if allowed is None or str(v) in allowed]
        try:
            item_size = (int(item["original_width"]), int(item["original_height"]))
        except (KeyError, TypeError, ValueError):
            continue
        if min(item_size) < 1:
            continue
        box = region_box(shape, value, item_size, fraction)
        if box is None:
            continue  # a region this backend cannot place teaches nothing
        size = item_size
        regions += [(label, box) for label in chosen[:1]]
    return regions, size
