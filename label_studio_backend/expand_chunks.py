"""``expand``'s imports into Label Studio: chunk by chunk, each chunk all or nothing, one at a time.

A chunk is one ``import_tasks`` call (Label Studio adds all of its tasks or none) and holds
whole source tasks only, so a source task's new tasks land together and a run that stops
between chunks leaves every source task either expanded or untouched. Imports run on their
own thread while the searches go on; at most one import is in flight and one chunk waits,
so memory is bounded by two chunks whatever the project's size.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

from label_studio_sdk import LabelStudio


class ImportUnconfirmed(Exception):
    """Label Studio accepted an import but did not return one task id per new task."""


@dataclass
class Chunk:
    """New tasks for Label Studio, with the source task of each (for the report)."""

    number: int
    tasks: list[dict[str, Any]] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    """The source task of each new task, in import order."""


@dataclass(frozen=True)
class ChunkFailure:
    """An import Label Studio refused (or did not confirm): its tasks are not in the project."""

    chunk: int
    """1 for the run's first chunk."""
    source_tasks: tuple[int, ...]
    """The source tasks whose new tasks were in that chunk (run again to retry them)."""
    reason: str


def import_chunk(ls: LabelStudio, project_id: int, chunk: Chunk) -> tuple[int, ...]:
    """The ids of the chunk's tasks as Label Studio created them, in order; raises if it does not add up."""
    # Plain dicts: the SDK sends them as JSON unchanged (its pydantic types would re-validate regions).
    response = ls.projects.import_tasks(id=project_id, request=cast(Any, chunk.tasks), return_task_ids=True)
    new_ids = tuple(int(i) for i in (getattr(response, "task_ids", None) or ()))
    if len(new_ids) != len(chunk.tasks):
        # Reporting a count Label Studio did not confirm would lie about what landed.
        raise ImportUnconfirmed(
            f"Label Studio imported {len(new_ids)} of {len(chunk.tasks)} new tasks of chunk {chunk.number} "
            f"into project {project_id} without saying which; check the project before running expand again"
        )
    return new_ids


class ChunkImporter:
    """Imports chunks in order on one background thread; ``landed`` says what Label Studio confirmed."""

    def __init__(self, ls: LabelStudio, project_id: int, describe_error: Any = str) -> None:
        self._ls = ls
        self._project_id = project_id
        self._describe = describe_error
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="simages-ls-import")
        self._pending: tuple[Chunk, Future[tuple[int, ...]]] | None = None
        self.landed: dict[int, tuple[int, ...]] = {}
        """Source task id -> the ids of the new tasks made from it."""
        self.new_task_ids: list[int] = []
        self.chunks_imported = 0
        self.failure: ChunkFailure | None = None

    def submit(self, chunk: Chunk) -> bool:
        """Queue ``chunk`` after the one in flight; ``False`` (and nothing queued) once an import failed."""
        if not self.wait():
            return False
        if chunk.tasks:
            self._pending = (chunk, self._thread.submit(import_chunk, self._ls, self._project_id, chunk))
        return True

    def wait(self) -> bool:
        """Wait for the import in flight; ``False`` if it (or an earlier one) failed."""
        if self._pending is not None:
            chunk, future = self._pending
            self._pending = None
            try:
                new_ids = future.result()
            except Exception as exc:  # the SDK's ApiError, a transport error, ImportUnconfirmed
                status = getattr(exc, "status_code", None)
                if status is not None:
                    reason = f"Label Studio answered {status}: {getattr(exc, 'body', '')}"
                else:
                    reason = f"{type(exc).__name__}: {exc}"
                sources = tuple(dict.fromkeys(chunk.sources))
                self.failure = ChunkFailure(chunk.number, sources, self._describe(reason)[:1000])
            else:
                self.chunks_imported += 1
                self.new_task_ids += new_ids
                for source_id, new_id in zip(chunk.sources, new_ids, strict=True):
                    self.landed[source_id] = (*self.landed.get(source_id, ()), new_id)
        return self.failure is None

    def ok(self) -> bool:
        """``False`` once an import failed; collects a finished import's outcome without waiting."""
        if self._pending is not None and self._pending[1].done():
            self.wait()
        return self.failure is None

    def close(self) -> None:
        """Let an import in flight finish (it is all or nothing either way), then stop the thread."""
        self._thread.shutdown(wait=True)
