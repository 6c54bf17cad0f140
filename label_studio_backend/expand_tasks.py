"""What ``expand`` learns from a project before its first query: which tasks to search, what is already there.

The project's tasks are read page by page and only a few small facts are kept per task
(its id, its image reference, its API image id), never the task's data, its predictions
or its image: a project of tens of thousands of tasks costs a few megabytes here.
The provenance ``expand`` writes into every task it makes (``simages_source_task``) is
the record of earlier runs: a source task with tasks made from it was expanded already,
so an interrupted run, run again, continues with the tasks it had not reached.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from label_studio_sdk import LabelStudio

from simages_core.identity import Fingerprint, FingerprintError

from .task_fingerprints import FINGERPRINT_KEY, TaskImageRef
from .task_images import TaskImageError, image_ref

SOURCE_TASK_KEY = "simages_source_task"
PAGE_SIZE = 500
"""Tasks per page when listing a project (Label Studio's own default is 100)."""


@dataclass(frozen=True)
class SourceTask:
    """A task to search for: only what the search and its deduplication need."""

    id: int
    ref: str | None
    """The image reference in the task data (URL or Label Studio path); ``None`` if it has none."""
    simages_id: str | None
    """The API image id, for tasks made by ``expand`` (their own image is not "similar")."""
    ref_error: str | None = None
    """Why the image reference could not be read (the task fails, the run goes on)."""


@dataclass
class ProjectScan:
    """A project as ``expand`` needs it, gathered in one pass over its pages."""

    total_tasks: int = 0
    sources: list[SourceTask] = field(default_factory=list)
    """Tasks to search, in id order; those already expanded are left out (see ``resumed``)."""
    resumed: dict[int, int] = field(default_factory=dict)
    """Source task id -> how many tasks earlier runs made from it: those are not searched again."""
    searched_before: int = 0
    """Sources an earlier run searched with the same parameters (``searched_tasks``): not searched again."""
    known_ids: set[str] = field(default_factory=set)
    """API image ids already in the project."""
    known_urls: set[str] = field(default_factory=set)
    """Image references already in the project."""
    fingerprints: list[tuple[int, Fingerprint]] = field(default_factory=list)
    """(task id, fingerprint) of the tasks that carry one in their data (``expand`` made them)."""
    to_fingerprint: list[TaskImageRef] = field(default_factory=list)
    """The other tasks with an image: screening fingerprints them (or finds them in its store)."""


def iter_tasks(ls: LabelStudio, project_id: int, page_size: int = PAGE_SIZE) -> Iterable[Any]:
    """The project's tasks, one page in memory at a time (the SDK's pager fetches pages lazily)."""
    # Only the id and the data: Label Studio then skips counting annotations and predictions per task.
    return ls.tasks.list(project=project_id, fields="task_only", include="id,data", page_size=page_size)


def scan_project(
    tasks: Iterable[Any], value_key: str, task_ids: list[int] | None = None
) -> tuple[ProjectScan, set[int]]:
    """The scan of ``tasks`` (SDK task objects), and which of ``task_ids`` were not found.

    Without ``task_ids``, the sources are every task not made by ``expand``; with them, exactly
    those tasks. Either way a source already expanded by an earlier run is skipped (``resumed``).
    """
    scan = ProjectScan()
    wanted = set(task_ids) if task_ids is not None else None
    candidates: list[SourceTask] = []
    made_from: Counter[int] = Counter()
    for task in tasks:
        scan.total_tasks += 1
        data = task.data or {}
        simages_id = str(data["simages_id"]) if data.get("simages_id") else None
        ref, ref_error = None, None
        try:
            ref = image_ref({"id": task.id, "data": data}, value_key)
        except TaskImageError as exc:
            ref_error = str(exc)
        if simages_id:
            scan.known_ids.add(simages_id)
        if ref is not None:
            scan.known_urls.add(ref)
            _note_fingerprint(scan, task.id, ref, data)
        if SOURCE_TASK_KEY in data:
            # Provenance edited by hand into a non-number: the task still counts as made by expand.
            with contextlib.suppress(TypeError, ValueError):
                made_from[int(data[SOURCE_TASK_KEY])] += 1
        is_source = task.id in wanted if wanted is not None else SOURCE_TASK_KEY not in data
        if is_source:
            candidates.append(SourceTask(task.id, ref, simages_id, ref_error))
    missing = (wanted or set()) - {s.id for s in candidates}
    candidates.sort(key=lambda s: s.id)  # the order decides which source claims a shared image
    for source in candidates:
        if made_from[source.id]:
            scan.resumed[source.id] = made_from[source.id]
        else:
            scan.sources.append(source)
    return scan, missing


def _note_fingerprint(scan: ProjectScan, task_id: int, ref: str, data: dict[str, Any]) -> None:
    """The task's recorded fingerprint, or what to fetch for one (``expand``'s thumbnail if it recorded one)."""
    try:
        scan.fingerprints.append((task_id, Fingerprint.from_hex(data[FINGERPRINT_KEY])))
        return
    except (KeyError, FingerprintError):
        pass  # none, or edited by hand into something else: the image decides
    thumbnail = data.get("simages_thumbnail_url") if SOURCE_TASK_KEY in data else None
    fetch_ref = thumbnail.strip() if isinstance(thumbnail, str) and thumbnail.strip() else ref
    scan.to_fingerprint.append(TaskImageRef(task_id, ref, fetch_ref))


def skip_searched(scan: ProjectScan, searched: Callable[[int], bool]) -> None:
    """Leaves out of ``scan.sources`` the tasks an earlier run searched (``searched(task_id)``)."""
    kept = [source for source in scan.sources if not searched(source.id)]
    scan.searched_before += len(scan.sources) - len(kept)
    scan.sources = kept
