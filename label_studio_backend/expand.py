"""Grow a Label Studio project with images similar to its tasks, imported as new pre-labelled tasks.

For each source task, the API's most similar images (with their ``coco_yolov7``
labels) become new tasks, each with a prediction made from that very image's
detections, mapped to the project's labels, and provenance in its data
(``simages_*`` keys: source task, score, API image id, thumbnail, time). An image
already in the project (same API image id or same URL) is skipped, and so is a *copy* of
one (a resized, recompressed, cropped, mirrored... version: same perceptual fingerprint within
``copy_threshold`` bits) of a task's image or of an image the run took; tasks made by ``expand``
are not expanded again unless named, so running it twice adds nothing new. Task images are
fingerprinted once and remembered locally (``task_fingerprints``); tasks ``expand`` makes carry
their fingerprint.

Projects of thousands of tasks stream: tasks are listed page by page
(``expand_tasks``), each task's image is downloaded only when its search runs (on the
context's bounded pool, a bounded window ahead), and new tasks are imported in chunks
while the searches go on (``expand_chunks``). A source task that already has tasks made
from it was expanded by an earlier run and is not searched again, so an interrupted
run, run again, continues where it stopped; a source task searched with the same parameters that
added nothing is remembered locally (``searched_tasks``) and not searched again either. ``plan_expand`` says what a run would cost
without sending anything; ``max_requests`` caps what it sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from label_studio_sdk import LabelStudio

from simages_core import MAX_NUM_SIMILAR, RequestBudget, budget_for
from simages_core.identity import COPY_DISTANCE, check_threshold

from .context import BackendContext, model_version_for, public_url
from .expand_chunks import ChunkFailure, ImportUnconfirmed
from .expand_report import ExpandReport, Options
from .expand_run import ExpandRun, FingerprintProgress, Progress
from .expand_screen import SkippedCopy
from .expand_tasks import SOURCE_TASK_KEY, ProjectScan, iter_tasks, scan_project, skip_searched
from .label_config import ImageTarget, parse_label_config
from .searched_tasks import STORE_FOLDER, SearchedTaskStore, SearchParameters
from .settings import BackendSettings

T = TypeVar("T")

__all__ = [
    "SOURCE_TASK_KEY",
    "ChunkFailure",
    "ExpandError",
    "ExpandPlan",
    "ExpandReport",
    "FingerprintProgress",
    "ImportUnconfirmed",
    "Progress",
    "SkippedCopy",
    "expand_project",
    "plan_expand",
]

CHUNK_SIZE = 200
"""New tasks per Label Studio import (at least; a chunk ends on a source task's boundary)."""


class ExpandError(Exception):
    """The project cannot be expanded (no Label Studio credentials, a config without an image, ...)."""


@dataclass(frozen=True)
class ExpandPlan:
    """What a run would do, found without sending any search (``--dry-run``)."""

    project_id: int
    total_tasks: int
    source_tasks: int
    """Source tasks the run would search."""
    resumed: int
    """Source tasks an earlier run expanded or searched already (not searched again)."""
    budget: RequestBudget

    def describe(self) -> str:
        earlier = f" ({self.resumed} searched by an earlier run)" if self.resumed else ""
        return (
            f"project {self.project_id}: {self.source_tasks} source tasks to search of {self.total_tasks} "
            f"tasks{earlier}; {self.budget.describe()}"
        )


def _single_target(targets: tuple[ImageTarget, ...]) -> ImageTarget:
    if len(targets) != 1:
        raise ExpandError(
            f"expand needs a label config with exactly one <Image> to label, found {len(targets)}: a new task "
            "holds one similar image"
        )
    return targets[0]


def _check(
    per_task: int,
    min_score: float,
    max_requests: int | None,
    chunk_size: int,
    copy_threshold: int = COPY_DISTANCE,
) -> None:
    if not 1 <= per_task < MAX_NUM_SIMILAR:
        raise ExpandError(f"per_task must be from 1 to {MAX_NUM_SIMILAR - 1}, got {per_task}")
    if not 0.0 <= min_score <= 1.0:
        raise ExpandError(f"min_score must be from 0 to 1, got {min_score}")
    if max_requests is not None and max_requests < 0:
        raise ExpandError(f"max_requests must be 0 or more, got {max_requests}")
    if chunk_size < 1:
        raise ExpandError(f"chunk_size must be 1 or more, got {chunk_size}")
    try:
        check_threshold(copy_threshold)
    except ValueError as exc:
        raise ExpandError(str(exc)) from None


def _with_label_studio(
    settings: BackendSettings | None,
    context: BackendContext | None,
    work: Callable[[LabelStudio, BackendSettings, BackendContext], T],
) -> T:
    """Runs ``work`` with an SDK client and a context, closing whatever this call opened."""
    settings = settings or (context.settings if context else BackendSettings())
    if not settings.label_studio_url or not settings.label_studio_api_key:
        raise ExpandError(
            "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (a legacy token or a personal access token)"
        )
    owns_context = context is None
    context = context or BackendContext.from_settings(settings)
    # Our own HTTP client for the SDK, so its connections are closed when expand is done.
    try:
        with httpx.Client(timeout=120, follow_redirects=True) as http:
            ls = LabelStudio(
                base_url=settings.label_studio_url,
                api_key=settings.label_studio_api_key.get_secret_value(),
                httpx_client=http,
            )
            return work(ls, settings, context)
    finally:
        if owns_context:
            context.close()


def _scan(
    ls: LabelStudio, project_id: int, task_ids: list[int] | None, context: BackendContext
) -> tuple[ImageTarget, str, ProjectScan]:
    """The project's image target, the ``model_version`` of its predictions, and its scan."""
    project = ls.projects.get(id=project_id)
    schema = parse_label_config(project.label_config or "", context.settings.label_map)
    if not schema.servable:
        raise ExpandError("the project's label config cannot be served: " + "; ".join(schema.problems))
    target = _single_target(schema.targets)
    scan, missing = scan_project(iter_tasks(ls, project_id), target.value_key, task_ids)
    if missing:
        raise ExpandError(f"tasks {sorted(missing)} are not in project {project_id}")
    return target, model_version_for(schema, context.client.base_url), scan


def _searched_store(project_id: int, options: Options, context: BackendContext) -> SearchedTaskStore:
    settings = context.settings
    parameters = SearchParameters(
        context.client.base_url, options.per_task, options.min_score, options.copy_threshold
    )
    return SearchedTaskStore(
        settings.simages_home / STORE_FOLDER,
        public_url(settings.label_studio_url or ""),
        project_id,
        parameters,
    )


def plan_expand(
    project_id: int,
    *,
    task_ids: list[int] | None = None,
    max_requests: int | None = None,
    per_task: int = 5,
    min_score: float = 0.0,
    screen_copies: bool = True,
    copy_threshold: int = COPY_DISTANCE,
    settings: BackendSettings | None = None,
    context: BackendContext | None = None,
) -> ExpandPlan:
    """What ``expand_project`` would send, against today's free requests; reads Label Studio only.

    The search parameters say which earlier searches count (``searched_tasks``): the same as the run's.
    """
    _check(per_task, min_score, max_requests, 1, copy_threshold)
    options = Options(per_task, min_score, max_requests, 1, copy_threshold if screen_copies else None)

    def work(ls: LabelStudio, settings: BackendSettings, context: BackendContext) -> ExpandPlan:
        _, _, scan = _scan(ls, project_id, task_ids, context)
        store = _searched_store(project_id, options, context)
        try:
            skip_searched(scan, store.searched)
        finally:
            store.close()
        planned = sum(1 for s in scan.sources if s.ref is not None)  # a task without an image sends nothing
        return ExpandPlan(
            project_id=project_id,
            total_tasks=scan.total_tasks,
            source_tasks=len(scan.sources),
            resumed=len(scan.resumed) + scan.searched_before,
            budget=budget_for(planned, context.client.usage, max_requests=max_requests),
        )

    return _with_label_studio(settings, context, work)


def expand_project(
    project_id: int,
    *,
    task_ids: list[int] | None = None,
    per_task: int = 5,
    min_score: float = 0.0,
    max_requests: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    screen_copies: bool = True,
    copy_threshold: int = COPY_DISTANCE,
    settings: BackendSettings | None = None,
    context: BackendContext | None = None,
    progress: Progress | None = None,
    fingerprint_progress: FingerprintProgress | None = None,
) -> ExpandReport:
    """Import up to ``per_task`` similar images per source task as new tasks; see the module docstring.

    ``screen_copies=False`` skips only images already in the project by API id or URL (no
    fingerprint is fetched); ``copy_threshold`` is in bits of 64 (``simages_core.identity``).
    """
    _check(per_task, min_score, max_requests, chunk_size, copy_threshold)
    options = Options(
        per_task, min_score, max_requests, chunk_size, copy_threshold if screen_copies else None
    )

    def work(ls: LabelStudio, settings: BackendSettings, context: BackendContext) -> ExpandReport:
        started = time.perf_counter()
        target, model_version, scan = _scan(ls, project_id, task_ids, context)
        store = _searched_store(project_id, options, context)
        try:
            skip_searched(scan, store.searched)
            return ExpandRun(
                ls,
                project_id,
                target,
                model_version,
                scan,
                options,
                context,
                progress,
                started,
                fingerprint_progress,
                store,
            ).run()
        finally:
            store.close()

    return _with_label_studio(settings, context, work)
