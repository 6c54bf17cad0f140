"""From an annotation Label Studio sent to ``/webhook`` to the evidence it adds to the project's store.

For each ``<Image>`` of the config whose controls the annotation answers, the task image is searched
the way ``/predict`` searches it (same query, so the core client's cache answers when the task was
predicted before). ``Choices``: the labels chosen go with the signals of the top-k similar images.
``RectangleLabels``: each annotator box goes with the class of the near-duplicate's detection it
overlaps (IoU at least ``SIMAGES_LEARN_MIN_IOU``); a detection no box took counts for its class
alone. Classes an explicit mapping decides are not learned. A skipped annotation, or one whose
labels are all gone, takes back what it taught.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from simages_core import Query, SearchResult
from simages_core.boxes import LabelStudioBox, from_label_studio, scale_box

from .context import BackendContext
from .label_config import ImageTarget, LabelControl, ProjectSchema
from .learned_labels import (
    Contribution,
    ContributionPart,
    class_signals,
    image_signals,
    match_boxes,
)
from .learned_store import Applied
from .predictions import near_duplicate
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


def learnable(schema: ProjectSchema) -> bool:
    """Whether a config has anything to learn: a served control on an ``<Image>``."""
    return any(target.choices or target.rectangles for target in schema.targets)


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


def _annotator_boxes(
    control: LabelControl, answered: list[dict[str, Any]]
) -> tuple[list[tuple[str, tuple[float, float, float, float]]], tuple[int, int] | None]:
    boxes = []
    size = None
    for item in answered:
        value = item["value"]
        labels = [str(label) for label in value.get("rectanglelabels") or () if str(label) in control.labels]
        try:
            width, height = int(item["original_width"]), int(item["original_height"])
            box = from_label_studio(
                LabelStudioBox(
                    float(value["x"]),
                    float(value["y"]),
                    float(value["width"]),
                    float(value["height"]),
                    width,
                    height,
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # a region this backend cannot place teaches nothing
        size = (width, height)
        boxes += [(label, box) for label in labels[:1]]
    return boxes, size


def _box_parts(
    control: LabelControl, answered: list[dict[str, Any]], found: SearchResult, ctx: BackendContext
) -> list[ContributionPart]:
    boxes, size = _annotator_boxes(control, answered)
    if size is None:
        return []
    match = near_duplicate(found, size, ctx.thresholds)
    if match is None or not match.width or not match.height:
        return []  # no near-duplicate: its detections would not be where the annotator drew
    sx, sy = size[0] / match.width, size[1] / match.height
    explicit = control.class_to_label.keys()
    detections = [
        (det, scale_box(det.box, sx, sy))
        for det in match.detections or ()
        if det.score >= ctx.thresholds.min_detection_score and det.name.lower() not in explicit
    ]
    matched, unmatched = match_boxes(boxes, detections, ctx.settings.learn_min_iou)
    parts = [
        ContributionPart(control.from_name, frozenset({label}), frozenset(class_signals(c)))
        for label, c in matched
    ]
    parts += [
        ContributionPart(control.from_name, frozenset(), frozenset(class_signals(c))) for c in unmatched
    ]
    return parts


def contribution_of(
    annotation: SubmittedAnnotation, schema: ProjectSchema, ctx: BackendContext
) -> Contribution:
    """The evidence an annotation adds; searching its task's image once per ``<Image>`` it answers."""
    if annotation.cancelled:
        return Contribution()
    parts: list[ContributionPart] = []
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
            parts += _box_parts(control, answers[control.from_name], found, ctx)
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
    project: int, annotation: SubmittedAnnotation, schema: ProjectSchema, ctx: BackendContext
) -> Learned:
    """Replace what ``annotation`` taught the project with what it teaches now (store errors propagate)."""
    contribution = contribution_of(annotation, schema, ctx)
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


def forget(project: int, annotation_ids: tuple[int, ...], ctx: BackendContext) -> Applied | None:
    """Take back what deleted annotations taught (an id never learned from changes nothing)."""
    applied = None
    for annotation_id in annotation_ids:
        applied = ctx.learned_store().apply(project, annotation_id, Contribution())
    return applied
