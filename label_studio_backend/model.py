"""``SimilarImagesBackend``: the ``LabelStudioMLBase`` subclass Label Studio talks to.

One prediction per task. For every ``<Image>`` the config labels, the task's
image is one query; all queries of a batch run concurrently on the process-wide
pool of ``BackendContext``, through the core client (and its cache). A task whose query failed gets no prediction,
only an error entry, so "Retrieve predictions" tries it again later; the others
keep theirs. Errors that no retry of any task can fix (402 daily limit, 401/403
key problems) are raised once for the whole batch as ``AccountError``.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from label_studio_ml.model import LabelStudioMLBase

from simages_core import BatchItem, Query, SearchResult

from .context import (
    ACCOUNT_ERRORS,
    AccountError,
    BackendContext,
    model_version_for,
    project_key,
    raise_if_account_error,
)
from .label_config import ImageTarget, parse_label_config
from .learned_labels import Evidence
from .predictions import answer_target, prediction
from .task_images import TaskImage, TaskImageError, image_ref

logger = logging.getLogger("simages_label_studio")

# Re-exported: they lived here before ``context.py`` existed.
__all__ = [
    "ACCOUNT_ERRORS",
    "AccountError",
    "BackendContext",
    "SimilarImagesBackend",
    "model_version_for",
    "raise_if_account_error",
]


@dataclass
class _Job:
    """One (task, image target) query and what became of it."""

    task: dict[str, Any]
    target: ImageTarget
    image: TaskImage | None = None
    size: Future[tuple[int, int]] | tuple[int, int] | None = None
    result: SearchResult | None = None
    error: Exception | None = None


def _unexpected(task: dict[str, Any], what: str) -> TaskImageError:
    """A bug or an unforeseen library error stays with its task: logged once with its traceback."""
    logger.exception("task %s: unexpected error while %s", task.get("id"), what)
    return TaskImageError(f"unexpected error while {what} (the backend's log has the details)")


def _size_or_error(
    job: _Job, future: Future[tuple[int, int]]
) -> tuple[tuple[int, int] | None, Exception | None]:
    try:
        return future.result(), None
    except TaskImageError as exc:
        return None, exc
    except Exception:
        return None, _unexpected(job.task, "reading the image size")


def _own_size(job: _Job) -> tuple[int, int] | None:
    if job.result is None or job.image is None or job.image.url is None:
        return None
    for image in job.result.images:
        if image.url == job.image.url and image.width and image.height:
            return image.width, image.height
    return None


class SimilarImagesBackend(LabelStudioMLBase):
    """Pre-annotations from the Similar Images API for one project label config."""

    def __init__(self, label_config: str | None = None, *, context: BackendContext, **kwargs: Any) -> None:
        # The base class would parse the config again with its own parser, which raises on malformed
        # XML; ``parse_label_config`` reads it once and reports problems instead.
        super().__init__(label_config=None, **kwargs)
        self.label_config = label_config
        self.context = context
        self.schema = parse_label_config(label_config or "", context.settings.label_map)
        self.model_version = model_version_for(self.schema, context.client.base_url)
        for problem in self.schema.problems:
            logger.warning("label config: %s", problem)

    def version_for(self, project: object) -> str:
        """The ``model_version`` of this config for a project: with its learned generation, if any."""
        return model_version_for(
            self.schema, self.context.client.base_url, self.context.evidence(project_key(project))
        )

    def predict(
        self, tasks: list[dict[str, Any]], project: object = None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """One entry per task, in order: a prediction, or ``{"error": ...}`` when that task failed.

        ``project`` (``/predict``'s ``"7.1712345678"``, else the tasks' own ``project``) picks the
        learned labels used where no explicit mapping decides.
        """
        if project is None and tasks:
            project = tasks[0].get("project")
        learned = self.context.evidence(project_key(project)) if self.schema.servable else None
        version = model_version_for(self.schema, self.context.client.base_url, learned)
        if not self.schema.servable:
            logger.warning(
                "label config cannot be served (%s): empty predictions", "; ".join(self.schema.problems)
            )
            return [prediction([], version) for _ in tasks]
        jobs = [_Job(task, target) for task in tasks for target in self.schema.targets]
        self._run(jobs)
        by_task: dict[int, list[_Job]] = {}
        for job in jobs:
            by_task.setdefault(id(job.task), []).append(job)
        assert learned is not None
        return [self._task_prediction(by_task[id(task)], learned, version) for task in tasks]

    # --- stages --------------------------------------------------------------

    def _run(self, jobs: list[_Job]) -> None:
        # Everything runs on the process-wide pool; only this (request) thread waits on futures.
        ctx = self.context
        pool = ctx.executor
        # 1. Label Studio-hosted images are downloaded, since they are sent as bytes.
        prepared = [pool.submit(self._prepare, job) for job in jobs]
        for job, future in zip(jobs, prepared, strict=True):
            job.image, job.error = future.result()
        # 2. Every query at once, through the core client (cache, retries). A URL elsewhere has its
        #    size probed alongside its search: boxes need it only afterwards.
        ready = [job for job in jobs if job.image is not None]
        searches: list[Future[BatchItem]] = []
        for job in ready:
            assert job.image is not None
            query = Query(
                url=job.image.url,
                image=job.image.data,
                num_similar=self._num_similar(job.target),
                labels=True,
            )
            searches.append(ctx.submit_search(query))
            if self._needs_probe(job):
                job.size = pool.submit(ctx.resolver.probe_size, job.image.url or "")
        for job, search in zip(ready, searches, strict=True):
            item = search.result()
            job.result, job.error = item.result, item.error
            ctx.unlabelled_answers.note(self.model_version, item.result, ctx.client.base_url)
        # 3. Sizes still unknown are probed now, concurrently.
        unsized = [job for job in jobs if self._settle_size(job)]
        probes = [pool.submit(ctx.resolver.probe_size, job.image.url or "") for job in unsized if job.image]
        for job, probe in zip(unsized, probes, strict=True):
            job.size, job.error = _size_or_error(job, probe)
        self._raise_account_error(jobs)

    def _prepare(self, job: _Job) -> tuple[TaskImage | None, Exception | None]:
        try:
            ref = image_ref(job.task, job.target.value_key)
            image = self.context.resolver.resolve(ref, job.task.get("id"), need_size=job.target.needs_boxes)
        except TaskImageError as exc:
            return None, exc
        except Exception:
            return None, _unexpected(job.task, "reading the task's image")
        job.size = image.size
        return image, None

    def _needs_probe(self, job: _Job) -> bool:
        image = job.image
        return (
            job.target.needs_boxes
            and image is not None
            and image.url is not None
            and job.size is None
            and not self._on_api_host(image.url)
        )

    def _on_api_host(self, url: str) -> bool:
        # Compared without userinfo: SIMAGES_API_URL may carry credentials, task URLs do not need to.
        return urlparse(url).netloc.rsplit("@", 1)[-1] == urlparse(self.context.api_url).netloc

    @staticmethod
    def _settle_size(job: _Job) -> bool:
        """Fill ``job.size`` from what is known; ``True`` if it must still be probed."""
        if job.error is not None or not job.target.needs_boxes or isinstance(job.size, tuple):
            if isinstance(job.size, Future):
                job.size.cancel()  # nobody will read it; free the worker if it has not started
            return False
        # When the API returns the task's very image, its reported size is the task image's: no
        # probe is needed (and one may not reach it, e.g. a localhost URL inside compose).
        own = _own_size(job)
        if own is not None:
            if isinstance(job.size, Future):
                job.size.cancel()
            job.size = own
            return False
        if isinstance(job.size, Future):
            job.size, job.error = _size_or_error(job, job.size)
            return False
        return True

    def _num_similar(self, target: ImageTarget) -> int:
        # Boxes need only the best match; choices are voted by the top k.
        return self.context.settings.top_k if target.choices else 1

    def _raise_account_error(self, jobs: list[_Job]) -> None:
        """If every query failed for an account reason, say so once for the batch."""
        errors = [job.error for job in jobs]
        raise_if_account_error(errors)
        counts = Counter(str(e) for e in errors if e is not None)
        for message, count in counts.items():
            logger.warning("%d of %d queries failed: %s", count, len(jobs), self.context.redact(message))

    def _task_prediction(self, jobs: list[_Job], learned: Evidence, version: str) -> dict[str, Any]:
        failed = next((job.error for job in jobs if job.error is not None), None)
        if failed is not None:
            # No "result" key: Label Studio skips this task and keeps the others' predictions.
            # A fetch error says only "could not fetch" here: the task's author must not learn what an
            # internal address answered. The log has the detail.
            reason = failed.public_message if isinstance(failed, TaskImageError) else str(failed)
            message = self.context.redact(f"task {jobs[0].task.get('id')}: {reason}")
            return {"error": message, "model_version": version}
        regions: list[dict[str, Any]] = []
        certainties: list[float] = []
        for job in jobs:
            assert job.result is not None
            size = job.size if isinstance(job.size, tuple) else None
            found, sure = answer_target(job.target, job.result, size, learned, self.context.thresholds)
            regions += found
            certainties += sure
        return prediction(regions, version, certainties)
