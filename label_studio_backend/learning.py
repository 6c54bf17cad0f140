"""From an annotation Label Studio sent to ``/webhook`` to the evidence it adds to the project's store.

For each ``<Image>`` of the config whose controls the annotation answers, the task image is searched
the way ``/predict`` searches it (same query, so the core client's cache answers when the task was
predicted before). ``Choices``: the labels chosen go with the signals of the top-k similar images.
``RectangleLabels``: each annotator box goes with the class of the near-duplicate's detection it
overlaps (IoU at least ``SIMAGES_LEARN_MIN_IOU``); a detection no box took counts for its class
alone. An annotator box no near-duplicate detection took goes with the class of the region the
backend answered interactively there (``region_memos``: no new search), and so does an annotator
keypoint of a ``KeyPointLabels``. Classes an explicit mapping decides are not learned. A skipped annotation, or one whose
labels are all gone, takes back what it taught.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from simages_core import Query, SearchResult
from simages_core.boxes import scale_box

from .context import BackendContext
from .label_config import ImageTarget, LabelControl, ProjectSchema
from .learned_labels import Contribution, ContributionPart, class_signals, image_signals
from .learned_store import Applied, LearnedStoreError
from .predictions import near_duplicate
from .region_controls import RegionControl
from .region_memo_store import MemoStoreError
from .region_memos import RegionMemo, annotated_regions, latest, memo_parts, pair_by_iou
from .task_images import TaskImageError, image_ref
from .webhook_events import SubmittedAnnotation

logger = logging.getLogger("simages_label_studio")


class LearningError(Exception):
    """An annotation could not be learned from; ``status`` is the HTTP answer (422 image, 502 API)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Learned:
    """What one annotation event did to a project's evidence."""

    annotation_id: int
    applied: Applied
    parts: int
    """Observations counted (a Choices answer, an annotator box, an unclaimed detection)."""


def learnable(schema: ProjectSchema, keypoints: Sequence[RegionControl] = ()) -> bool:
    """Whether a config has anything to learn: a served control, or a KeyPointLabels, on an ``<Image>``."""
    return bool(keypoints) or any(target.choices or target.rectangles for target in schema.targets)


def search_query(target: ImageTarget, url: str | None, data: bytes | None, top_k: int) -> Query:
    """The query ``/predict`` sends for this target: the same one hits the same cache entry."""
    return Query(url=url, image=data, num_similar=top_k if target.choices else 1, labels=True)


def _answered(control: LabelControl, result: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [
        item
        for item in result
        if item.get("from_name") == control.from_name
        and item.get("type") == kind
        and isinstance(item.get("value"), dict)
    ]


def _choice_parts(
    control: LabelControl, answered: list[dict[str, Any]], found: SearchResult, ctx: BackendContext
) -> list[ContributionPart]:
    chosen = {
        str(label)
        for item in answered
        for label in item["value"].get("choices") or ()
        if str(label) in control.labels
    }
    voters = [im for im in found.images if im.detections is not None][: ctx.thresholds.top_k]
    signals: set[str] = set()
    for image in voters:
        signals |= image_signals(image, ctx.thresholds.min_detection_score, control.class_to_label.keys())
    return [ContributionPart(control.from_name, frozenset(chosen), frozenset(signals))] if signals else []


def _box_parts(
    control: LabelControl,
    answered: list[dict[str, Any]],
    found: SearchResult,
    ctx: BackendContext,
    memos: list[RegionMemo],
) -> list[ContributionPart]:
    """Annotator boxes paired with a near-duplicate's detections, then the rest with remembered regions."""
    fraction, min_iou = ctx.settings.region_point_window, ctx.settings.learn_min_iou
    boxes, size = annotated_regions(answered, control.from_name, "rectangle", control.labels, fraction)
    if size is None:
        return []
    parts: list[ContributionPart] = []
    taken: set[int] = set()
    match = near_duplicate(found, size, ctx.thresholds)
    # Without a near-duplicate, detections would not be where the annotator drew: memos only.
    if match is not None and match.width and match.height:
        sx, sy = size[0] / match.width, size[1] / match.height
        explicit = control.class_to_label.keys()
        detections = [
            (det.name.lower(), scale_box(det.box, sx, sy))
            for det in match.detections or ()
            if det.score >= ctx.thresholds.min_detection_score and det.name.lower() not in explicit
        ]
        pairs = pair_by_iou([box for _, box in boxes], [box for _, box in detections], min_iou)
        taken = {i for i, _ in pairs}
        parts += [
            ContributionPart(
                control.from_name, frozenset({boxes[i][0]}), frozenset(class_signals(detections[j][0]))
            )
            for i, j in pairs
        ]
        # A detection no annotator box took is evidence too: its class went with no label of this control.
        used = {j for _, j in pairs}
        parts += [
            ContributionPart(control.from_name, frozenset(), frozenset(class_signals(name)))
            for j, (name, _) in enumerate(detections)
            if j not in used
        ]
    rest = [box for i, box in enumerate(boxes) if i not in taken]
    return parts + memo_parts(control.from_name, "rectangle", rest, size, memos, min_iou)


def _keypoint_parts(
    control: RegionControl, annotation: SubmittedAnnotation, memos: list[RegionMemo], ctx: BackendContext
) -> list[ContributionPart]:
    """Annotator keypoints paired with remembered smart keypoints (by their crop windows' IoU)."""
    fraction = ctx.settings.region_point_window
    points, size = annotated_regions(
        annotation.result, control.from_name, "keypoint", control.labels, fraction
    )
    if size is None:
        return []
    return memo_parts(control.from_name, "keypoint", points, size, memos, ctx.settings.learn_min_iou)


def recalled(project: str, annotation: SubmittedAnnotation, ctx: BackendContext) -> list[RegionMemo]:
    """The regions answered interactively on the annotation's task (``LearnedStoreError`` if unreadable)."""
    try:
        return latest(ctx.learned_store().memos().recall(project, annotation.task_id))
    except MemoStoreError as exc:
        raise LearnedStoreError(str(exc)) from None


def contribution_of(
    annotation: SubmittedAnnotation,
    schema: ProjectSchema,
    ctx: BackendContext,
    memos: list[RegionMemo] | None = None,
    keypoints: Sequence[RegionControl] = (),
) -> Contribution:
    """The evidence an annotation adds; searching its task's image once per ``<Image>`` it answers.

    ``memos``: the regions answered interactively on its task; ``keypoints``: the config's KeyPointLabels.
    """
    if annotation.cancelled:
        return Contribution()
    memos = memos or []
    parts: list[ContributionPart] = []
    for keypoint in keypoints:
        parts += _keypoint_parts(keypoint, annotation, memos, ctx)
    for target in schema.targets:
        answers = {
            control.from_name: _answered(control, annotation.result, control.kind)
            for control in (*target.choices, *target.rectangles)
        }
        if not any(answers.values()):
            continue
        found = _search(annotation, target, ctx)
        for control in target.choices:
            if answers[control.from_name] or control.multiple:
                parts += _choice_parts(control, answers[control.from_name], found, ctx)
        for control in target.rectangles:
            parts += _box_parts(control, answers[control.from_name], found, ctx, memos)
    return Contribution.build(parts)


def _search(annotation: SubmittedAnnotation, target: ImageTarget, ctx: BackendContext) -> SearchResult:
    try:
        ref = image_ref(annotation.task, target.value_key)
        image = ctx.resolver.resolve(ref, annotation.task_id, need_size=False)
    except TaskImageError as exc:
        raise LearningError(ctx.redact(f"task {annotation.task_id}: {exc.public_message}"), 422) from None
    item = ctx.client.run_query(search_query(target, image.url, image.data, ctx.settings.top_k))
    if item.result is None:
        raise LearningError(ctx.redact(f"task {annotation.task_id}: the search failed: {item.error}"), 502)
    return item.result


def learn(
    project: str,
    annotation: SubmittedAnnotation,
    schema: ProjectSchema,
    ctx: BackendContext,
    keypoints: Sequence[RegionControl] = (),
) -> Learned:
    """Replace what ``annotation`` taught the project with what it teaches now (store errors propagate)."""
    memos = recalled(project, annotation, ctx) if not annotation.cancelled else []
    contribution = contribution_of(annotation, schema, ctx, memos, keypoints)
    applied = ctx.learned_store().apply(project, annotation.id, contribution)
    parts = sum(v for k, v in contribution.counts.items() if k.startswith("s"))
    logger.info(
        "project %s: annotation %s learned (%d signals counted); %d annotations, generation %d",
        project,
        annotation.id,
        parts,
        applied.annotations,
        applied.generation,
    )
    return Learned(annotation.id, applied, parts)


def forget(project: str, annotation_ids: tuple[int, ...], ctx: BackendContext) -> Applied | None:
    """Take back what deleted annotations taught (an id never learned from changes nothing)."""
    applied = None
    for annotation_id in annotation_ids:
        applied = ctx.learned_store().apply(project, annotation_id, Contribution())
    return applied
