"""``SimilarImagesBackend``: the ``LabelStudioMLBase`` subclass Label Studio talks to.

One prediction per task. For every ``<Image>`` the config labels, the task's
image is one query; all queries of a batch run concurrently through the core's
``search_many`` (and its cache). A task whose query failed gets no prediction,
only an error entry, so "Retrieve predictions" tries it again later; the others
keep theirs. Errors that no retry of any task can fix (402 daily limit, 401/403
key problems) are raised once for the whole batch as ``AccountError``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from label_studio_ml.model import LabelStudioMLBase

from simages_core import (
    InvalidApiKey,
    MissingApiKey,
    Query,
    QuotaExceeded,
    SearchResult,
    SimilarImagesClient,
    SimilarImagesError,
)

from . import __version__
from .label_config import ImageTarget, ProjectSchema, parse_label_config
from .predictions import (
    Thresholds,
    choices_region,
    near_duplicate,
    prediction,
    rectangle_regions,
    vote_choices,
)
from .settings import BackendSettings
from .task_images import TaskImage, TaskImageError, TaskImageResolver, image_ref

logger = logging.getLogger("simages_label_studio")

ACCOUNT_ERRORS = (QuotaExceeded, InvalidApiKey, MissingApiKey)


class AccountError(Exception):
    """The API refused the whole batch (daily limit, missing or invalid key): no task can succeed."""

    def __init__(self, error: SimilarImagesError) -> None:
        self.status = error.status or 401
        super().__init__(f"{type(error).__name__} ({self.status}): {error.message}")


def raise_if_account_error(errors: Sequence[Exception | None]) -> None:
    """If every query failed for an account reason (402, 401, 403), one ``AccountError`` says so for all."""
    first = errors[0] if errors else None
    if isinstance(first, ACCOUNT_ERRORS) and all(isinstance(e, ACCOUNT_ERRORS) for e in errors):
        raise AccountError(first)


@dataclass
class BackendContext:
    """What every model instance shares: settings, one pooled API client, one image resolver."""

    settings: BackendSettings
    client: SimilarImagesClient
    resolver: TaskImageResolver
    thresholds: Thresholds = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.thresholds = Thresholds(
            s.near_duplicate_score, s.aspect_tolerance, s.min_detection_score, s.top_k, s.choice_threshold
        )

    @classmethod
    def from_settings(cls, settings: BackendSettings) -> BackendContext:
        client = SimilarImagesClient(
            settings.api_key.get_secret_value() if settings.api_key else None,
            base_url=settings.api_url,
            cache="auto" if settings.cache else False,
            pool_size=max(32, settings.max_workers),
        )
        ls_key = settings.label_studio_api_key.get_secret_value() if settings.label_studio_api_key else None
        resolver = TaskImageResolver(settings.label_studio_url, ls_key, settings.image_fetch_timeout)
        return cls(settings, client, resolver)

    def close(self) -> None:
        self.client.close()


@dataclass
class _Job:
    """One (task, image target) query and what became of it."""

    task: dict[str, Any]
    target: ImageTarget
    image: TaskImage | None = None
    size: Future[tuple[int, int]] | tuple[int, int] | None = None
    result: SearchResult | None = None
    error: Exception | None = None


def _size_or_error(future: Future[tuple[int, int]]) -> tuple[tuple[int, int] | None, TaskImageError | None]:
    try:
        return future.result(), None
    except TaskImageError as exc:
        return None, exc


def _own_size(job: _Job) -> tuple[int, int] | None:
    if job.result is None or job.image is None or job.image.url is None:
        return None
    for image in job.result.images:
        if image.url == job.image.url and image.width and image.height:
            return image.width, image.height
    return None


def model_version_for(schema: ProjectSchema, api_url: str) -> str:
    """Names the API, the label set and the backend version, e.g. ``simages.info/coco_yolov7/labels-1a2b3c4d/backend-0.1.0``."""
    host = urlparse(api_url).netloc or api_url
    return f"{host}/coco_yolov7/labels-{schema.digest()}/backend-{__version__}"


class SimilarImagesBackend(LabelStudioMLBase):
    """Pre-annotations from the Similar Images API for one project label config."""

    def __init__(self, label_config: str | None = None, *, context: BackendContext, **kwargs: Any) -> None:
        super().__init__(label_config=label_config, **kwargs)
        self.context = context
        self.schema = parse_label_config(label_config or "", context.settings.label_map)
        self.model_version = model_version_for(self.schema, context.client.base_url)
        for problem in self.schema.problems:
            logger.warning("label config: %s", problem)

    def predict(self, tasks: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
        """One entry per task, in order: a prediction, or ``{"error": ...}`` when that task failed."""
        if not self.schema.servable:
            logger.warning(
                "label config cannot be served (%s): empty predictions", "; ".join(self.schema.problems)
            )
            return [prediction([], self.model_version) for _ in tasks]
        jobs = [_Job(task, target) for task in tasks for target in self.schema.targets]
        self._run(jobs)
        by_task: dict[int, list[_Job]] = {}
        for job in jobs:
            by_task.setdefault(id(job.task), []).append(job)
        return [self._task_prediction(by_task[id(task)]) for task in tasks]

    # --- stages --------------------------------------------------------------

    def _run(self, jobs: list[_Job]) -> None:
        ctx = self.context
        workers = ctx.settings.max_workers
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="simages-ls") as pool:
            # 1. Label Studio-hosted images are downloaded, since they are sent as bytes. A URL elsewhere
            #    has its size probed alongside the search: boxes need it only afterwards.
            for job, (image, error) in zip(
                jobs, pool.map(self._prepare, jobs, [pool] * len(jobs)), strict=True
            ):
                job.image, job.error = image, error
            # 2. Every query at once, through the core client (cache, retries, order kept).
            ready = [job for job in jobs if job.image is not None]
            queries = [
                Query(
                    url=job.image.url,
                    image=job.image.data,
                    num_similar=self._num_similar(job.target),
                    labels=True,
                )
                for job in ready
                if job.image is not None
            ]
            for job, item in zip(ready, ctx.client.search_many(queries, max_workers=workers), strict=True):
                job.result, job.error = item.result, item.error
            # 3. Sizes still unknown are probed now, concurrently.
            unsized = [job for job in jobs if self._settle_size(job)]
            probes = [
                pool.submit(ctx.resolver.probe_size, job.image.url)
                for job in unsized
                if job.image and job.image.url
            ]
            for job, probe in zip(unsized, probes, strict=True):
                job.size, job.error = _size_or_error(probe)
        self._raise_account_error(jobs)

    def _prepare(self, job: _Job, pool: ThreadPoolExecutor) -> tuple[TaskImage | None, Exception | None]:
        try:
            ref = image_ref(job.task, job.target.value_key)
            image = self.context.resolver.resolve(ref, job.task.get("id"), need_size=job.target.needs_boxes)
        except TaskImageError as exc:
            return None, exc
        job.size = image.size
        if job.target.needs_boxes and image.url is not None and not self._on_api_host(image.url):
            job.size = pool.submit(self.context.resolver.probe_size, image.url)
        return image, None

    def _on_api_host(self, url: str) -> bool:
        return urlparse(url).netloc == urlparse(self.context.client.base_url).netloc

    @staticmethod
    def _settle_size(job: _Job) -> bool:
        """Fill ``job.size`` from what is known; ``True`` if it must still be probed."""
        if job.error is not None or not job.target.needs_boxes or isinstance(job.size, tuple):
            return False
        # When the API returns the task's very image, its reported size is the task image's: no
        # probe is needed (and one may not reach it, e.g. a localhost URL inside compose).
        own = _own_size(job)
        if own is not None:
            job.size = own
            return False
        if isinstance(job.size, Future):
            job.size, job.error = _size_or_error(job.size)
            return False
        return True

    def _num_similar(self, target: ImageTarget) -> int:
        # Boxes need only the best match; choices are voted by the top k.
        return self.context.settings.top_k if target.choices else 1

    @staticmethod
    def _raise_account_error(jobs: list[_Job]) -> None:
        """If every query failed for an account reason, say so once for the batch."""
        errors = [job.error for job in jobs]
        raise_if_account_error(errors)
        counts = Counter(str(e) for e in errors if e is not None)
        for message, count in counts.items():
            logger.warning("%d of %d queries failed: %s", count, len(jobs), message)

    def _task_prediction(self, jobs: list[_Job]) -> dict[str, Any]:
        failed = next((job.error for job in jobs if job.error is not None), None)
        if failed is not None:
            # No "result" key: Label Studio skips this task and keeps the others' predictions.
            return {"error": f"task {jobs[0].task.get('id')}: {failed}", "model_version": self.model_version}
        thresholds = self.context.thresholds
        regions: list[dict[str, Any]] = []
        for job in jobs:
            assert job.result is not None
            if job.target.rectangles and isinstance(job.size, tuple):
                match = near_duplicate(job.result, job.size, thresholds)
                if match is not None:
                    for control in job.target.rectangles:
                        regions += rectangle_regions(control, match, job.size, thresholds.min_detection_score)
            for control in job.target.choices:
                region = choices_region(control, vote_choices(control, job.result.images, thresholds))
                if region is not None:
                    regions.append(region)
        return prediction(regions, self.model_version)
