"""The bodies Label Studio sends to ``/predict``, ``/setup`` and ``/webhook``: parsed safely, checked, typed.

Every check raises a werkzeug ``HTTPException`` whose description names what was
wrong; ``_wsgi`` turns it into a JSON answer with that status. JSON is parsed
with a depth limit, because a body of 50,000 ``[`` would otherwise end in a
``RecursionError`` (and a deep document costs memory and time in every later walk).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from werkzeug.exceptions import BadRequest, UnsupportedMediaType

MAX_JSON_DEPTH = 64
"""Label Studio's deepest payload (a webhook's annotation result) is about 10 levels deep."""
MAX_BODY_BYTES = 32 * 1024 * 1024
"""Flask answers 413 above this; a batch of thousands of tasks is a few megabytes."""

_JSON_TYPES = ("application/json",)


def _kind(value: object) -> str:
    """A JSON type name for error messages: ``array``, ``string``, ``number``, ..."""
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _too_deep(document: Any, limit: int) -> bool:
    """Whether any value is nested more than ``limit`` levels; iterative, so no recursion limit applies."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(body: bytes, content_type: str | None) -> Any:
    """The JSON document in a request body, or a 400/415 naming why there is none."""
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    if mimetype not in _JSON_TYPES and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            f"expected a JSON body with Content-Type: application/json, got {mimetype or 'no Content-Type'!r}"
        )
    if not body.strip():
        raise BadRequest("expected a JSON body, got an empty body")
    try:
        document = json.loads(body)
    except RecursionError:
        raise BadRequest(f"expected a JSON body nested at most {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise BadRequest(f"expected a JSON body, but it is not valid JSON: {exc}") from None
    if _too_deep(document, MAX_JSON_DEPTH):
        raise BadRequest(f"expected a JSON body nested at most {MAX_JSON_DEPTH} levels deep")
    return document


def _object(document: Any, what: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise BadRequest(f"expected a JSON object with {what}, got a JSON {_kind(document)}")
    return document


def _label_config(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        got = "it is missing" if key not in body else f"got a JSON {_kind(value)}"
        raise BadRequest(f"'{key}' must be the project's label config (XML string); {got}")
    if not value.strip():
        raise BadRequest(f"'{key}' must be the project's label config (XML string); it is empty")
    return value


def _optional_object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"'{key}' must be a JSON object when given, got a JSON {_kind(value)}")
    return value


@dataclass(frozen=True)
class PredictRequest:
    """``POST /predict``: the tasks to pre-annotate and the project's label config.

    Each task is passed on as it came: a task whose own ``data`` is wrong gets an error entry of
    its own in the answer, so the other tasks of the batch keep their predictions.
    """

    tasks: list[dict[str, Any]]
    label_config: str
    project: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    context: InteractiveContext | None = None
    """The annotator's drawn regions (interactive pre-annotation), when Label Studio sent any."""

    @classmethod
    def from_json(cls, document: Any) -> PredictRequest:
        body = _object(document, "'tasks' and 'label_config'")
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            got = "it is missing" if "tasks" not in body else f"got a JSON {_kind(tasks)}"
            raise BadRequest(f"'tasks' must be a list of task objects; {got}")
        for index, task in enumerate(tasks):
            if not isinstance(task, dict):
                raise BadRequest(
                    f"'tasks' must be a list of task objects; tasks[{index}] is a JSON {_kind(task)}"
                )
        project = body.get("project")
        params = _optional_object(body, "params")
        return cls(
            tasks=tasks,
            label_config=_label_config(body, "label_config"),
            project=None if project is None else str(project),
            params=params,
            context=InteractiveContext.from_params(params),
        )


@dataclass(frozen=True)
class SetupRequest:
    """``POST /setup``: Label Studio connecting a project (its label config is ``schema``)."""

    schema: str
    project: str | None = None

    @classmethod
    def from_json(cls, document: Any) -> SetupRequest:
        body = _object(document, "the project's label config in 'schema'")
        project = body.get("project")
        return cls(schema=_label_config(body, "schema"), project=None if project is None else str(project))


# ``POST /webhook``'s events are parsed in ``webhook_events.py`` (typed from recorded Label Studio bodies).


# --- interactive pre-annotation: ``params.context`` ---------------------------------------------

MAX_DRAWN_REGIONS = 100
"""Label Studio sends the drawn regions of one label in a group; an annotator draws a handful."""
MAX_ORIGINAL_SIDE = 100_000
_DRAWN_TYPES = {
    "rectanglelabels": "rectangle",
    "rectangle": "rectangle",
    "keypointlabels": "keypoint",
    "keypoint": "keypoint",
}


def _number(value: Any, where: str) -> float:
    # bool is an int to Python, never a coordinate to Label Studio.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{where} must be a number, got a JSON {_kind(value)}")
    number = float(value)
    if not math.isfinite(number) or abs(number) > 1e6:
        raise BadRequest(f"{where} must be a finite percentage of the image, got {value!r}")
    return number


def _side(item: dict[str, Any], key: str, where: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= MAX_ORIGINAL_SIDE:
        got = "it is missing" if key not in item else f"got {str(value)[:40]!r}"
        raise BadRequest(f"{where}.{key} must be the image's pixel size (1 to {MAX_ORIGINAL_SIDE}); {got}")
    return int(value)


@dataclass(frozen=True)
class DrawnRegion:
    """A rectangle or keypoint the annotator drew, in Label Studio's percent coordinates."""

    id: str
    from_name: str
    to_name: str
    type: str
    """Label Studio's result type as sent (``rectanglelabels``, ``keypointlabels``, ...)."""
    shape: str
    """``rectangle`` or ``keypoint``."""
    x: float
    y: float
    width: float
    height: float
    rotation: float
    original_width: int
    original_height: int
    raw: dict[str, Any] = field(repr=False, compare=False)
    """The result as Label Studio sent it: the answer echoes its keys."""

    @classmethod
    def from_json(cls, item: Any, where: str) -> DrawnRegion:
        item = _object(item, f"a drawn region in {where}")
        kind = item.get("type")
        shape = _DRAWN_TYPES.get(kind) if isinstance(kind, str) else None
        if shape is None:
            raise BadRequest(
                f"{where}.type must be one of {', '.join(sorted(_DRAWN_TYPES))}, got {str(kind)[:40]!r}"
            )
        names = {}
        for key in ("id", "from_name", "to_name"):
            value = item.get(key)
            if not isinstance(value, str) or not value.strip() or len(value) > 500:
                raise BadRequest(f"{where}.{key} must be a non-empty string, got a JSON {_kind(value)}")
            names[key] = value
        value = _object(item.get("value"), f"the region's coordinates in {where}.value")
        x, y = _number(value.get("x"), f"{where}.value.x"), _number(value.get("y"), f"{where}.value.y")
        if shape == "rectangle":
            width = _number(value.get("width"), f"{where}.value.width")
            height = _number(value.get("height"), f"{where}.value.height")
            if width <= 0 or height <= 0:
                raise BadRequest(f"{where}: a drawn rectangle needs a positive width and height")
            inside = x < 100 and y < 100 and x + width > 0 and y + height > 0
        else:
            width = height = 0.0
            inside = 0 <= x <= 100 and 0 <= y <= 100
        if not inside:
            raise BadRequest(f"{where}: the drawn {shape} lies outside the image (x={x}, y={y})")
        rotation = value.get("rotation", 0)
        return cls(
            shape=shape,
            type=kind,
            x=x,
            y=y,
            width=width,
            height=height,
            rotation=_number(rotation if rotation is not None else 0, f"{where}.value.rotation"),
            original_width=_side(item, "original_width", where),
            original_height=_side(item, "original_height", where),
            raw=item,
            **names,
        )


@dataclass(frozen=True)
class InteractiveContext:
    """``params.context`` of an interactive ``/predict``: ``{"result": [drawn regions]}``."""

    regions: tuple[DrawnRegion, ...]

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> InteractiveContext | None:
        """The drawn regions, ``None`` for a plain ``/predict`` (no context, or one with no ``result``)."""
        context = params.get("context")
        if context is None:
            return None
        context = _object(context, "the drawn regions in 'params.context.result'")
        result = context.get("result")
        if result is None:
            return None
        if not isinstance(result, list):
            raise BadRequest(
                f"'params.context.result' must be a list of drawn regions, got a JSON {_kind(result)}"
            )
        if not result:
            return None
        if len(result) > MAX_DRAWN_REGIONS:
            raise BadRequest(
                f"'params.context.result' has {len(result)} regions; at most {MAX_DRAWN_REGIONS}"
            )
        return cls(
            tuple(DrawnRegion.from_json(item, f"params.context.result[{i}]") for i, item in enumerate(result))
        )
