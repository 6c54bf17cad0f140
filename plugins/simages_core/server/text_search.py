"""Text queries without a language model: query words against COCO class names and captions.

A query like "two dogs and a person on a sofa" becomes the concepts
{dog, person, couch}; an image scores by the share of concepts its detections
contain (weighted by their detection score) plus word overlap with its caption.
It cannot understand relations, attributes or anything outside the 80 COCO
classes and the captions; an ONNX text encoder lifts that limit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..coco import COCO_CLASSES

# A few everyday words for COCO classes; plurals are handled by _singular.
SYNONYMS: dict[str, str] = {
    "people": "person", "man": "person", "men": "person", "woman": "person", "women": "person",
    "child": "person", "children": "person", "kid": "person", "boy": "person", "girl": "person",
    "human": "person", "astronaut": "person", "photographer": "person", "cameraman": "person",
    "bike": "bicycle", "motorbike": "motorcycle", "scooter": "motorcycle", "automobile": "car",
    "plane": "airplane", "aeroplane": "airplane", "ship": "boat", "kitten": "cat", "kitty": "cat",
    "puppy": "dog", "pony": "horse", "mug": "cup", "coffee": "cup", "espresso": "cup", "tea": "cup",
    "sofa": "couch", "television": "tv", "monitor": "tv", "phone": "cell phone", "cellphone": "cell phone",
    "smartphone": "cell phone", "table": "dining table", "plant": "potted plant", "fridge": "refrigerator",
    "notebook": "laptop", "teddy": "teddy bear", "doughnut": "donut", "hotdog": "hot dog",
    "watch": "clock", "ball": "sports ball", "glass": "wine glass", "knive": "knife", "knives": "knife",
}  # fmt: skip
_MULTIWORD = {name for name in COCO_CLASSES if " " in name}
_SINGLE = {name for name in COCO_CLASSES if " " not in name}
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "on",
        "in",
        "at",
        "with",
        "and",
        "or",
        "to",
        "for",
        "by",
        "from",
        "is",
        "are",
        "two",
        "three",
        "some",
    ]
)


@dataclass(frozen=True)
class TextQuery:
    concepts: frozenset[str]
    """COCO class names the query mentions."""
    words: frozenset[str]
    """Content words (singular), for caption matching."""


def _singular(word: str) -> str:
    for suffix, repl in (
        ("ies", "y"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("sses", "ss"),
        ("es", "e"),
        ("s", ""),
    ):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            candidate = word[: -len(suffix)] + repl
            if suffix == "es" and candidate not in _SINGLE and candidate not in SYNONYMS:
                candidate = word[:-2]  # "buses" -> "bus"
                if candidate not in _SINGLE and candidate not in SYNONYMS:
                    candidate = word[:-1]
            return candidate
    return word


def parse_text_query(text: str) -> TextQuery:
    tokens = [_singular(t) for t in re.findall(r"[a-z]+", text.lower()) if t not in _STOPWORDS]
    concepts: set[str] = set()
    consumed: set[int] = set()  # "hot dog" is a hot dog, not also a dog
    for i in range(len(tokens) - 1):
        if f"{tokens[i]} {tokens[i + 1]}" in _MULTIWORD:
            concepts.add(f"{tokens[i]} {tokens[i + 1]}")
            consumed.update((i, i + 1))
    for i, token in enumerate(tokens):
        if i in consumed:
            continue
        if token in _SINGLE:
            concepts.add(token)
        elif token in SYNONYMS:
            concepts.add(SYNONYMS[token])
    return TextQuery(concepts=frozenset(concepts), words=frozenset(tokens))


def text_scores(
    query: TextQuery,
    detections: Sequence[Sequence[tuple[str, float]] | None],
    captions: Sequence[str | None],
) -> list[float]:
    """A score in [0, 1] for each image: 0.7 for the concepts found, 0.3 for caption overlap."""
    scores = []
    for dets, caption in zip(detections, captions, strict=True):
        concept_score = 0.0
        if query.concepts and dets:
            best: dict[str, float] = {}
            for name, score in dets:
                if name in query.concepts:
                    best[name] = max(best.get(name, 0.0), score)
            concept_score = sum(best.values()) / len(query.concepts)
        caption_score = 0.0
        if caption and query.words:
            caption_words = {_singular(t) for t in re.findall(r"[a-z]+", caption.lower())}
            caption_score = len(query.words & caption_words) / len(query.words)
        weight = 0.7 if query.concepts else 0.0
        scores.append(round(weight * concept_score + (1.0 - weight) * caption_score, 6))
    return scores
