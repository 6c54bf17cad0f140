"""The events Label Studio sends to ``/webhook``, checked and typed (the shapes of 1.23.2, recorded in
``tests/label_studio/data/webhook_*.json``). Every check raises a ``BadRequest`` naming what was wrong.

Only what the backend reads is kept: the project's id and label config, each annotation's id, result
and ``was_cancelled``, its task's id and data. The project's ``token`` and ``task_data_password``,
which Label Studio includes, are never read, stored or logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import BadRequest

from .context import project_key
from .wire import _kind, _object


@dataclass(frozen=True)
class WebhookProject:
    """The project an event is about, as Label Studio serializes it (only what the backend reads)."""

    id: int
    label_config: str | None = None
    created_at: str | None = None
    """With ``id``, Label Studio's project uid (``context.project_key``): one instance's project 7 is
    not another's."""

    @property
    def key(self) -> str:
        return project_key(self.id, self.created_at) or str(self.id)

    @classmethod
    def from_json(cls, document: Any) -> WebhookProject:
        body = _object(document, "the project's 'id'")
        project_id = body.get("id")
        if isinstance(project_id, bool) or not isinstance(project_id, int):
            raise BadRequest(
                f"'project.id' must be the project's id (an integer), got a JSON {_kind(project_id)}"
            )
        config = body.get("label_config")
        if config is not None and not isinstance(config, str):
            raise BadRequest(
                f"'project.label_config' must be a string when given, got a JSON {_kind(config)}"
            )
        created_at = body.get("created_at")
        return cls(project_id, config, created_at if isinstance(created_at, str) else None)


def _integer(body: dict[str, Any], key: str, where: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        got = "it is missing" if key not in body else f"got a JSON {_kind(value)}"
        raise BadRequest(f"'{where}.{key}' must be an integer id; {got}")
    return value


@dataclass(frozen=True)
class SubmittedAnnotation:
    """An annotation and its task, as an ``ANNOTATION_CREATED``/``_UPDATED`` event carries them."""

    id: int
    task_id: int
    task: dict[str, Any]
    """The task (``id``, ``data``): what the backend searches to learn from the annotation."""
    result: tuple[dict[str, Any], ...]
    cancelled: bool
    """Skipped by the annotator (``was_cancelled``): it teaches nothing, and takes back what it taught."""

    @classmethod
    def from_json(cls, annotation: Any, task: Any, where: str) -> SubmittedAnnotation:
        body = _object(annotation, f"the annotation in '{where}'")
        task_body = _object(task, "the annotated task in 'task'")
        annotation_id = _integer(body, "id", where)
        task_id = _integer(task_body, "id", "task")
        if body.get("task") not in (None, task_id):
            raise BadRequest(f"'{where}.task' is {body.get('task')!r} but 'task.id' is {task_id}")
        if not isinstance(task_body.get("data"), dict):
            raise BadRequest(
                f"'task.data' must be the task's data (a JSON object), got a JSON {_kind(task_body.get('data'))}"
            )
        result = body.get("result") or []
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise BadRequest(f"'{where}.result' must be a list of result objects")
        return cls(annotation_id, task_id, task_body, tuple(result), bool(body.get("was_cancelled")))


LEARNED_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
DELETED_ACTION = "ANNOTATIONS_DELETED"
TRAIN_ACTION = "START_TRAINING"


@dataclass(frozen=True)
class WebhookEvent:
    """``POST /webhook``: an event Label Studio sends; the annotation events are checked and typed.

    Shapes recorded from Label Studio 1.23.2 are in ``tests/label_studio/data/webhook_*.json``.
    ``ANNOTATIONS_CREATED`` (an import of annotations) carries lists of annotations and tasks.
    """

    action: str
    project: WebhookProject | None = None
    annotations: tuple[SubmittedAnnotation, ...] = ()
    deleted: tuple[int, ...] = ()
    """Annotation ids of an ``ANNOTATIONS_DELETED`` event."""

    @classmethod
    def from_json(cls, document: Any) -> WebhookEvent:
        body = _object(document, "the event name in 'action'")
        action = body.get("action")
        if not isinstance(action, str) or not action.strip():
            got = "it is missing" if "action" not in body else f"got a JSON {_kind(action)}"
            raise BadRequest(f"'action' must be the event name (a string); {got}")
        needs_project = action in (*LEARNED_ACTIONS, DELETED_ACTION, TRAIN_ACTION)
        if "project" not in body or body.get("project") is None:
            if needs_project:
                raise BadRequest(f"a {action} event must carry the 'project' it is about; it is missing")
            return cls(action=action)
        project = WebhookProject.from_json(body["project"]) if needs_project else None
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            annotation = SubmittedAnnotation.from_json(body.get("annotation"), body.get("task"), "annotation")
            return cls(action, project, (annotation,))
        if action == "ANNOTATIONS_CREATED":
            annotations, tasks = body.get("annotation"), body.get("task")
            if not isinstance(annotations, list) or not isinstance(tasks, list):
                raise BadRequest("an ANNOTATIONS_CREATED event must carry lists 'annotation' and 'task'")
            by_id = {t.get("id"): t for t in tasks if isinstance(t, dict)}
            parsed = tuple(
                SubmittedAnnotation.from_json(
                    a, by_id.get(a.get("task") if isinstance(a, dict) else None), f"annotation[{i}]"
                )
                for i, a in enumerate(annotations)
            )
            return cls(action, project, parsed)
        if action == DELETED_ACTION:
            items = body.get("annotations")
            if not isinstance(items, list):
                raise BadRequest(
                    f"an {DELETED_ACTION} event must carry the list 'annotations'; got a JSON {_kind(items)}"
                )
            ids = tuple(
                _integer(_object(item, "an annotation id"), "id", f"annotations[{i}]")
                for i, item in enumerate(items)
            )
            return cls(action, project, deleted=ids)
        return cls(action, project)
