"""What a project's label config asks of this backend, parsed once with label-studio-sdk's LabelInterface.

The backend serves two control tags on an ``<Image>``: ``RectangleLabels`` (boxes
from a near-duplicate's detections) and ``Choices`` (image-level labels voted by
similar images). Each ``<Label>``/``<Choice>`` is mapped to COCO class names, in
this order of precedence:

1. the ``SIMAGES_LABEL_MAP`` JSON from the environment (``{"Vehicle": ["car", "truck"]}``);
2. a ``predicted_values="car,truck"`` attribute on the tag (Label Studio's YOLO backend convention);
3. the label's own value, when it is a COCO class name (case-insensitive).

COCO classes that no label claims are dropped.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from label_studio_sdk.label_interface import LabelInterface

from simages_core.coco import COCO_CLASSES

logger = logging.getLogger(__name__)

_COCO = frozenset(COCO_CLASSES)
ControlKind = Literal["rectanglelabels", "choices"]
_SERVED_TAGS: dict[str, ControlKind] = {"rectanglelabels": "rectanglelabels", "choices": "choices"}


@dataclass(frozen=True)
class LabelControl:
    """One ``RectangleLabels`` or ``Choices`` tag on an image, with its COCO -> project label mapping."""

    kind: ControlKind
    from_name: str
    to_name: str
    class_to_label: MappingProxyType[str, str]
    """COCO class name -> the project label it predicts."""
    multiple: bool = False
    """For Choices: ``choice="multiple"``."""
    labels: tuple[str, ...] = ()
    """Every ``<Label>``/``<Choice>`` value, in config order: what learned labels may predict."""

    def label_for(self, coco_class: str) -> str | None:
        return self.class_to_label.get(coco_class.lower())


@dataclass(frozen=True)
class ImageTarget:
    """One ``<Image>`` object and the controls that label it."""

    name: str
    value_key: str
    """The task data key holding the image (``$image`` -> ``image``)."""
    rectangles: tuple[LabelControl, ...] = ()
    choices: tuple[LabelControl, ...] = ()

    @property
    def needs_boxes(self) -> bool:
        return bool(self.rectangles)


@dataclass(frozen=True)
class ProjectSchema:
    """Everything the backend can serve in a label config; ``problems`` says what it cannot."""

    targets: tuple[ImageTarget, ...]
    problems: tuple[str, ...] = field(default=())
    syntax_error: str | None = None
    """Why the config is not a label config at all (not well-formed XML, empty), else ``None``."""

    @property
    def servable(self) -> bool:
        return bool(self.targets)

    def digest(self) -> str:
        """A short, stable name for the label set and its mapping (part of ``model_version``)."""
        parts = [
            f"{c.kind}:{c.from_name}>{c.to_name}:{sorted(c.class_to_label.items())}"
            for t in self.targets
            for c in (*t.rectangles, *t.choices)
        ]
        return hashlib.sha1("|".join(sorted(parts)).encode()).hexdigest()[:8]


def _classes_for(label: str, attrs: dict[str, str], env_map: dict[str, list[str]]) -> list[str]:
    if label in env_map:
        return env_map[label]
    predicted = attrs.get("predicted_values")
    if predicted:
        return [name.strip().lower() for name in predicted.split(",") if name.strip()]
    return [label.lower()] if label.lower() in _COCO else []


def _class_mapping(control, env_map: dict[str, list[str]], problems: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for label in control.labels or ():
        tag = (control.labels_attrs or {}).get(label)
        attrs = dict(getattr(tag, "attr", None) or {})
        for coco_class in _classes_for(label, attrs, env_map):
            if coco_class not in _COCO:
                problems.append(f"{control.name}: {label!r} names {coco_class!r}, which is not a COCO class")
                continue
            if coco_class in mapping and mapping[coco_class] != label:
                # Two labels claim one class: the first in the config wins, as an annotator reads it.
                problems.append(
                    f"{control.name}: COCO class {coco_class!r} is claimed by {mapping[coco_class]!r} and {label!r}; "
                    f"using {mapping[coco_class]!r}"
                )
                continue
            mapping[coco_class] = label
    return mapping


def parse_label_config(label_config: str, env_map: dict[str, list[str]] | None = None) -> ProjectSchema:
    """Parse a project's label config; never raises for configs it cannot serve (see ``problems``)."""
    env_map = env_map or {}
    problems: list[str] = []
    try:
        interface = LabelInterface(label_config)
    except Exception as exc:  # the SDK raises several types for malformed XML
        reason = f"label config cannot be parsed: {exc}"
        return ProjectSchema(targets=(), problems=(reason,), syntax_error=reason)

    images = {obj.name: obj for obj in interface.objects if obj.tag.lower() == "image"}
    by_image: dict[str, dict[str, list[LabelControl]]] = {
        name: {"rect": [], "choices": []} for name in images
    }
    for control in interface.controls:
        kind = _SERVED_TAGS.get(control.tag.lower())
        if kind is None:
            problems.append(
                f"{control.tag} {control.name!r} is not served (only RectangleLabels and Choices are)"
            )
            continue
        for to_name in control.to_name or ():
            if to_name not in images:
                problems.append(f"{control.tag} {control.name!r} labels {to_name!r}, which is not an <Image>")
                continue
            mapping = _class_mapping(control, env_map, problems)
            if not mapping:
                # Kept: its labels are predicted once annotators have taught them (learned_labels.py).
                problems.append(
                    f"{control.tag} {control.name!r}: none of its labels maps to a COCO class; it is predicted "
                    "only from what annotators teach the backend"
                )
            multiple = (control.attr or {}).get("choice", "single") == "multiple"
            labels = tuple(str(label) for label in control.labels or ())
            entry = LabelControl(kind, control.name, to_name, MappingProxyType(mapping), multiple, labels)
            by_image[to_name]["rect" if kind == "rectanglelabels" else "choices"].append(entry)

    targets = []
    for name, obj in images.items():
        controls = by_image[name]
        if not (controls["rect"] or controls["choices"]):
            continue
        value = obj.value or ""
        if not value.startswith("$"):
            problems.append(f"<Image name={name!r}> has value={value!r}, not a $variable from the task data")
            continue
        targets.append(ImageTarget(name, value[1:], tuple(controls["rect"]), tuple(controls["choices"])))
    if not images:
        problems.append("the label config has no <Image> tag")
    elif not targets and not problems:
        problems.append("no RectangleLabels or Choices tag labels an <Image> (check their toName)")
    return ProjectSchema(tuple(targets), tuple(problems))
