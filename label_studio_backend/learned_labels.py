"""What annotators taught the backend about a project's labels: evidence counts and the votes they make.

A *signal* is something the API says about an image: a COCO class it detects (``class:cat``), that
class's COCO supercategory (``group:animal``: what carries "Animal" from cats to horses), that it
detects nothing (``class:(none)``), or the image itself (``image:<api id>``). Each submitted
annotation adds, per control, one count to every label it chose, every signal it saw, and every
(label, signal) pair; for boxes, per annotator box matched to a near-duplicate's detection by IoU.

The association of a label with a signal is the share of the annotations that saw the signal and
chose the label, smoothed towards "no opinion" while evidence is thin:
``P(label | signal) = n(label, signal) / (n(signal) + SMOOTHING)``. A neighbour votes with its
known signals pooled (their counts summed), weighted by its similarity, as the explicit votes of
``predictions.vote_choices`` do; a neighbour whose signals were never seen abstains but its weight
still counts. Every number can be printed (``simages-ls labels``) and checked by hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from simages_core import Detection, SimilarImage

from .coco_groups import COCO_GROUP

SMOOTHING = 1.0
"""Pseudo-count of "no opinion" per signal: one annotation alone makes an association of 0.5."""
NO_OBJECT = "(none)"
"""The class signal of an image on which the API detects no object above the minimum score."""
SEP = "\x1f"
"""Separates the parts of a counter's field name (control, label, signal); no label config holds it."""


def class_signal(name: str) -> str:
    return f"class:{name.lower()}"


def image_signal(api_id: str) -> str:
    return f"image:{api_id}"


def class_signals(name: str) -> set[str]:
    """A class and its COCO supercategory (none for ``person``, its own group)."""
    group = COCO_GROUP.get(name.lower())
    signals = {class_signal(name)}
    if group is not None and group != name.lower():
        signals.add(f"group:{group}")
    return signals


def image_signals(image: SimilarImage, min_detection_score: float, explicit: Iterable[str] = ()) -> set[str]:
    """What an image tells the learner: its classes (or that it has none) and its API id.

    Classes an explicit mapping already decides (``explicit``) are left out: they never need learning.
    """
    skip = set(explicit)
    classes = {d.name.lower() for d in image.detections or () if d.score >= min_detection_score}
    signals = {signal for c in classes if c not in skip for signal in class_signals(c)}
    if not classes:
        signals.add(class_signal(NO_OBJECT))
    signals.add(image_signal(image.id))
    return signals


@dataclass(frozen=True)
class Contribution:
    """The counts one annotation adds, by field name (``kind SEP control SEP ...``); replaced when it is updated."""

    counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def build(cls, parts: Iterable[ContributionPart]) -> Contribution:
        total: Counter[str] = Counter()
        for part in parts:
            total.update(part.fields())
        return cls(MappingProxyType(dict(total)))

    @property
    def empty(self) -> bool:
        return not self.counts


@dataclass(frozen=True)
class ContributionPart:
    """One observation for one control: labels chosen, signals seen (a choice, or one annotator box)."""

    control: str
    labels: frozenset[str]
    signals: frozenset[str]

    def fields(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for label in self.labels:
            out[f"l{SEP}{self.control}{SEP}{label}"] += 1
            for signal in self.signals:
                out[f"p{SEP}{self.control}{SEP}{label}{SEP}{signal}"] += 1
        for signal in self.signals:
            out[f"s{SEP}{self.control}{SEP}{signal}"] += 1
        return out


@dataclass(frozen=True)
class ControlEvidence:
    """Evidence counts of one control: per label, per signal, per (label, signal)."""

    labels: Mapping[str, int]
    signals: Mapping[str, int]
    pairs: Mapping[tuple[str, str], int]

    def association(self, label: str, signals: Iterable[str]) -> float:
        """``P(label | signals)`` with the signals' counts pooled; 0 when none was ever seen."""
        known = [s for s in signals if self.signals.get(s)]
        if not known:
            return 0.0
        seen = sum(self.signals[s] for s in known)
        return sum(self.pairs.get((label, s), 0) for s in known) / (seen + SMOOTHING)

    def knows(self, signals: Iterable[str]) -> bool:
        return any(self.signals.get(s) for s in signals)

    def classes_of(self, label: str) -> list[tuple[str, int, float]]:
        """(signal, n(label, signal), association) of a label, strongest first: what ``labels`` prints."""
        rows = [
            (signal, count, count / (self.signals.get(signal, count) + SMOOTHING))
            for (lab, signal), count in self.pairs.items()
            if lab == label and count > 0
        ]
        return sorted(rows, key=lambda r: (-r[2], -r[1], r[0]))


EMPTY_CONTROL = ControlEvidence(MappingProxyType({}), MappingProxyType({}), MappingProxyType({}))


@dataclass(frozen=True)
class Evidence:
    """Everything learned for one project, as read from the store at one moment."""

    controls: Mapping[str, ControlEvidence]
    annotations: int = 0
    """Annotations whose contribution is counted (an updated one once, a deleted one not)."""
    generation: int = 0
    """Moves on START_TRAINING and every ``SIMAGES_LEARN_EVERY`` annotations: part of ``model_version``."""

    def control(self, name: str) -> ControlEvidence:
        return self.controls.get(name, EMPTY_CONTROL)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], annotations: int = 0, generation: int = 0) -> Evidence:
        labels: dict[str, dict[str, int]] = {}
        signals: dict[str, dict[str, int]] = {}
        pairs: dict[str, dict[tuple[str, str], int]] = {}
        for key, value in counts.items():
            if value <= 0:
                continue
            kind, control, *rest = key.split(SEP)
            if kind == "l" and len(rest) == 1:
                labels.setdefault(control, {})[rest[0]] = value
            elif kind == "s" and len(rest) == 1:
                signals.setdefault(control, {})[rest[0]] = value
            elif kind == "p" and len(rest) == 2:
                pairs.setdefault(control, {})[(rest[0], rest[1])] = value
        names = labels.keys() | signals.keys() | pairs.keys()
        controls = {
            name: ControlEvidence(
                MappingProxyType(labels.get(name, {})),
                MappingProxyType(signals.get(name, {})),
                MappingProxyType(pairs.get(name, {})),
            )
            for name in names
        }
        return cls(MappingProxyType(controls), annotations, generation)


NOTHING_LEARNED = Evidence(MappingProxyType({}))


def learned_vote(
    evidence: ControlEvidence,
    labels: Iterable[str],
    voters: Iterable[SimilarImage],
    *,
    min_detection_score: float,
    explicit: Iterable[str] = (),
) -> dict[str, float]:
    """Each label's similarity-weighted association over the voters (0..1); ``{}`` when nobody knew anything."""
    skip = tuple(explicit)
    weighted: list[tuple[float, set[str]]] = [
        (max(image.score, 0.0), image_signals(image, min_detection_score, skip)) for image in voters
    ]
    total = sum(w for w, _ in weighted)
    if total <= 0 or not any(evidence.knows(s) for _, s in weighted):
        return {}
    return {label: sum(w * evidence.association(label, s) for w, s in weighted) / total for label in labels}


def learned_label_for(
    evidence: ControlEvidence, labels: Iterable[str], threshold: float
) -> Callable[[str], tuple[str, float] | None]:
    """A COCO class -> (project label, association) mapping learned from annotator boxes, for box votes.

    Plug it in after the explicit mapping: ``control.label_for(name) or learned(name)``.
    """
    candidates = tuple(labels)

    def label_for(coco_class: str) -> tuple[str, float] | None:
        signals = class_signals(coco_class)
        scored = [(evidence.association(label, signals), label) for label in candidates]
        best = max(scored, default=(0.0, ""))
        return (best[1], round(best[0], 4)) if best[0] >= threshold and best[0] > 0 else None

    return label_for


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two pixel boxes ``(x_min, y_min, x_max, y_max)``."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(
    annotated: list[tuple[str, tuple[float, float, float, float]]],
    detections: list[tuple[Detection, tuple[float, float, float, float]]],
    min_iou: float,
) -> tuple[list[tuple[str, str]], list[str]]:
    """Greedy best-IoU pairs of (annotator label, detection class); and the classes no annotator box took.

    An unmatched detection is evidence too: its class went with no label of this control.
    """
    pairs = sorted(
        (
            (iou(box, det_box), i, j)
            for i, (_, box) in enumerate(annotated)
            for j, (_, det_box) in enumerate(detections)
        ),
        reverse=True,
    )
    used_a: set[int] = set()
    used_d: set[int] = set()
    matched: list[tuple[str, str]] = []
    for overlap, i, j in pairs:
        if overlap < min_iou:
            break
        if i in used_a or j in used_d:
            continue
        used_a.add(i)
        used_d.add(j)
        matched.append((annotated[i][0], detections[j][0].name.lower()))
    unmatched = [det.name.lower() for j, (det, _) in enumerate(detections) if j not in used_d]
    return matched, unmatched
