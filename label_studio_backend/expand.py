"""Grow a Label Studio project with images similar to its tasks, imported as new pre-labelled tasks.

For each source task, the API's most similar images (with their ``coco_yolov7``
labels) become new tasks in one bulk import through label-studio-sdk, each with
a prediction made from that very image's detections, mapped to the project's
labels, and provenance in its data (``simages_*`` keys: source task, score, API
image id, thumbnail, time). An image already in the project (same API image id
or same URL) is skipped, and tasks made by ``expand`` are not expanded again
unless named, so running it twice adds nothing new.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
from label_studio_sdk import LabelStudio

from simages_core import MAX_NUM_SIMILAR, Query, SimilarImage

from .context import BackendContext, model_version_for, raise_if_account_error
from .label_config import ImageTarget, parse_label_config
from .predictions import Thresholds, choices_region, own_rectangle_regions, prediction, vote_choices
from .settings import BackendSettings
from .task_images import TaskImage, TaskImageError, image_ref

logger = logging.getLogger("simages_label_studio.expand")

SOURCE_TASK_KEY = "simages_source_task"


class ExpandError(Exception):
    """The project cannot be expanded (no Label Studio credentials, a config without an image, ...)."""


class ImportUnconfirmed(ExpandError):
    """Label Studio accepted the import but did not return one task id per new task."""


@dataclass(frozen=True)
class ExpandReport:
    project_id: int
    source_tasks: int
    added: int
    skipped_existing: int
    new_task_ids: tuple[int, ...] = ()
    failed_tasks: dict[int, str] = field(default_factory=dict)
    """Source task id -> why its search failed (those tasks added nothing; run again to retry them)."""
    landed: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Source task id -> the ids of the new tasks made from it, as Label Studio reported them."""


def _single_target(targets: tuple[ImageTarget, ...]) -> ImageTarget:
    if len(targets) != 1:
        raise ExpandError(
            f"expand needs a label config with exactly one <Image> to label, found {len(targets)}: a new task "
            "holds one similar image"
        )
    return targets[0]


def _new_task_data(
    target: ImageTarget, image: SimilarImage, source_task_id: int, rank: int, when: str
) -> dict[str, Any]:
    return {
        target.value_key: image.url,
        "simages_id": image.id,
        "simages_score": round(image.score, 6),
        "simages_rank": rank,
        SOURCE_TASK_KEY: source_task_id,
        "simages_thumbnail_url": image.thumbnail_url,
        "simages_imported_at": when,
    }


def _own_prediction(
    target: ImageTarget, image: SimilarImage, thresholds: Thresholds, model_version: str
) -> dict:
    """A prediction from the image's own detections: its boxes are exact for it, not borrowed."""
    regions: list[dict[str, Any]] = []
    for control in target.rectangles:
        regions += own_rectangle_regions(control, image, thresholds.min_detection_score)
    one_voter = Thresholds(min_detection_score=thresholds.min_detection_score, top_k=1, choice_threshold=1.0)
    for control in target.choices:
        region = choices_region(control, vote_choices(control, (image,), one_voter))
        if region is not None:
            regions.append(region)
    return prediction(regions, model_version)


def expand_project(
    project_id: int,
    *,
    task_ids: list[int] | None = None,
    per_task: int = 5,
    min_score: float = 0.0,
    settings: BackendSettings | None = None,
    context: BackendContext | None = None,
) -> ExpandReport:
    """Import up to ``per_task`` similar images per source task as new tasks; see the module docstring."""
    if not 1 <= per_task < MAX_NUM_SIMILAR:
        raise ExpandError(f"per_task must be from 1 to {MAX_NUM_SIMILAR - 1}, got {per_task}")
    if not 0.0 <= min_score <= 1.0:
        raise ExpandError(f"min_score must be from 0 to 1, got {min_score}")
    settings = settings or (context.settings if context else BackendSettings())
    if not settings.label_studio_url or not settings.label_studio_api_key:
        raise ExpandError(
            "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (a legacy token or a personal access token)"
        )
    owns_context = context is None
    context = context or BackendContext.from_settings(settings)
    # Our own HTTP client for the SDK, so its connections are closed when expand is done.
    try:
        with httpx.Client(timeout=60, follow_redirects=True) as http:
            ls = LabelStudio(
                base_url=settings.label_studio_url,
                api_key=settings.label_studio_api_key.get_secret_value(),
                httpx_client=http,
            )
            return _expand(ls, project_id, task_ids, per_task, min_score, settings, context)
    finally:
        if owns_context:
            context.close()


def _expand(
    ls: LabelStudio,
    project_id: int,
    task_ids: list[int] | None,
    per_task: int,
    min_score: float,
    settings: BackendSettings,
    context: BackendContext,
) -> ExpandReport:
    project = ls.projects.get(id=project_id)
    schema = parse_label_config(project.label_config or "", settings.label_map)
    if not schema.servable:
        raise ExpandError("the project's label config cannot be served: " + "; ".join(schema.problems))
    target = _single_target(schema.targets)
    model_version = model_version_for(schema, context.client.base_url)

    listed: Iterable[Any] = ls.tasks.list(project=project_id, fields="task_only")
    tasks = [{"id": t.id, "data": dict(t.data or {})} for t in listed]
    known_ids = {str(t["data"]["simages_id"]) for t in tasks if t["data"].get("simages_id")}
    known_urls = {str(t["data"].get(target.value_key)) for t in tasks}
    if task_ids is not None:
        wanted = set(task_ids)
        sources = [t for t in tasks if t["id"] in wanted]
        missing = wanted - {t["id"] for t in sources}
        if missing:
            raise ExpandError(f"tasks {sorted(missing)} are not in project {project_id}")
    else:
        sources = [t for t in tasks if SOURCE_TASK_KEY not in t["data"]]

    failed: dict[int, str] = {}

    def resolve(task: dict[str, Any]) -> TaskImage | None:
        try:
            return context.resolver.resolve(image_ref(task, target.value_key), task["id"], need_size=False)
        except TaskImageError as exc:
            failed[task["id"]] = context.redact(str(exc))
            return None

    # The context's bounded pool: downloads from Label Studio run concurrently, never unbounded.
    images = [future.result() for future in [context.executor.submit(resolve, t) for t in sources]]
    searchable = [(task, image) for task, image in zip(sources, images, strict=True) if image is not None]
    queries = [
        Query(url=im.url, image=im.data, num_similar=per_task + 1, labels=True) for _, im in searchable
    ]
    items = context.search_many(queries)
    raise_if_account_error([item.error for item in items])

    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    new_tasks: list[dict[str, Any]] = []
    new_sources: list[int] = []  # the source task of each new task, in import order
    skipped = 0
    for (task, _), item in zip(searchable, items, strict=True):
        if item.error is not None or item.result is None:
            failed[task["id"]] = context.redact(str(item.error))
            continue
        own_url, own_id = task["data"].get(target.value_key), task["data"].get("simages_id")
        others = [im for im in item.result.images if im.url != own_url and im.id != own_id]
        for rank, image in enumerate(others[:per_task], start=1):
            if image.score < min_score:
                break
            if image.id in known_ids or image.url in known_urls:
                skipped += 1
                continue
            known_ids.add(image.id)
            known_urls.add(image.url)
            new_tasks.append(
                {
                    "data": _new_task_data(target, image, task["id"], rank, when),
                    "predictions": [_own_prediction(target, image, context.thresholds, model_version)],
                }
            )
            new_sources.append(task["id"])
    for task_id, reason in failed.items():
        logger.warning("task %s: %s", task_id, reason)

    new_ids = _import(ls, project_id, new_tasks)
    landed: dict[int, tuple[int, ...]] = {}
    for source_id, new_id in zip(new_sources, new_ids, strict=True):
        landed[source_id] = (*landed.get(source_id, ()), new_id)
    return ExpandReport(
        project_id=project_id,
        source_tasks=len(sources),
        added=len(new_ids),
        skipped_existing=skipped,
        new_task_ids=new_ids,
        failed_tasks=failed,
        landed=landed,
    )


def _import(ls: LabelStudio, project_id: int, new_tasks: list[dict[str, Any]]) -> tuple[int, ...]:
    """The ids of the imported tasks, in order; an ``ExpandError`` if Label Studio's answer does not add up."""
    if not new_tasks:
        return ()
    # One bulk import: Label Studio adds all of these tasks or none.
    # Plain dicts: the SDK sends them as JSON unchanged (its pydantic types would re-validate regions).
    response = ls.projects.import_tasks(id=project_id, request=cast(Any, new_tasks), return_task_ids=True)
    new_ids = tuple(int(i) for i in (getattr(response, "task_ids", None) or ()))
    if len(new_ids) != len(new_tasks):
        # Reporting a count Label Studio did not confirm would lie about what landed.
        raise ImportUnconfirmed(
            f"Label Studio imported {len(new_ids)} of {len(new_tasks)} new tasks into project {project_id} "
            "without saying which; check the project before running expand again"
        )
    return new_ids
