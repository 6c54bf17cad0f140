"""The controls a drawn region may belong to, and how a COCO class becomes one of their labels.

``RectangleLabels`` come from the project schema; ``KeyPointLabels`` (which the schema does not
serve) are read from the config here. A control is listed even when none of its labels is a COCO
name: what annotators taught (``learned_labels``) can label its regions. The mapping of a region
vote is "explicit mapping first, else learned": an explicit mapping always wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from label_studio_sdk.label_interface import LabelInterface

from .label_config import ProjectSchema, _class_mapping
from .learned_labels import ControlEvidence, learned_label_for
from .region_votes import LabelFor


@dataclass(frozen=True)
class RegionControl:
    """A labels control a drawn region may belong to: its image's data key, labels and explicit mapping."""

    from_name: str
    shape: str
    value_key: str
    label_for: LabelFor
    """COCO class -> project label, explicitly (a COCO name, ``predicted_values``, ``SIMAGES_LABEL_MAP``)."""
    labels: tuple[str, ...] = ()
    """Every ``<Label>`` value: what learned associations may answer."""

    def with_learned(self, evidence: ControlEvidence, threshold: float) -> LabelFor:
        """Explicit mapping first, else the label annotators taught for the class (with its association)."""
        taught = learned_label_for(evidence, self.labels, threshold)
        explicit = self.label_for

        def label_for(coco_class: str) -> str | tuple[str, float] | None:
            return explicit(coco_class) or taught(coco_class)

        return label_for


def region_controls(
    schema: ProjectSchema, label_config: str, label_map: dict[str, list[str]]
) -> dict[str, RegionControl]:
    """Controls by ``from_name``: the schema's RectangleLabels, and any KeyPointLabels on an ``<Image>``."""
    controls = {
        control.from_name: RegionControl(
            control.from_name, "rectangle", target.value_key, control.label_for, control.labels
        )
        for target in schema.targets
        for control in target.rectangles
    }
    try:
        interface = LabelInterface(label_config)
    except Exception:  # the schema already reported why the config cannot be parsed
        return controls
    images = {o.name: (o.value or "") for o in interface.objects if o.tag.lower() == "image"}
    for control in interface.controls:
        if control.tag.lower() != "keypointlabels":
            continue
        to_name = next((n for n in control.to_name or () if images.get(n, "").startswith("$")), None)
        if to_name is None:
            continue
        mapping = _class_mapping(control, label_map, [])
        labels = tuple(str(label) for label in control.labels or ())
        controls[control.name] = RegionControl(
            control.name, "keypoint", images[to_name][1:], _lookup(mapping), labels
        )
    return controls


def _lookup(mapping: dict[str, str]) -> LabelFor:
    def label_for(coco_class: str) -> str | None:
        return mapping.get(coco_class.lower())

    return label_for
