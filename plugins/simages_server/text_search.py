"""Text queries without a language model: query words against COCO class names and captions.

A query like "two dogs and a person on a sofa" becomes the concepts
{dog, person, couch}; an image scores by the share of concepts its detections
contain (weighted by their detection score) plus word overlap with its caption.
It cannot understand relations, attributes or anything outside the 80 COCO
classes and the captions; a CLIP model folder (`--clip-model`, `clip.py`) lifts that limit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simages_core.coco import COCO_CLASSES

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


def _caption_words(caption: str) -> set[str]:
    return {_singular(t) for t in re.findall(r"[a-z]+", caption.lower())}


class TextIndex:
    """Inverted indexes over the images' detections and captions, built once, so a query is a few array ops.

    An image scores 0.7 for the share of query concepts its detections contain
    (each weighted by its best detection score) plus 0.3 for the share of query
    words in its caption; 1.0 only when everything matches.
    """

    CONCEPT_WEIGHT = 0.7

    def __init__(
        self, detections: Sequence[Sequence[tuple[str, float]] | None], captions: Sequence[str | None]
    ):
        if len(detections) != len(captions):
            raise ValueError("detections and captions must describe the same images")
        self.size = len(captions)
        self._class_scores: dict[str, np.ndarray] = {}
        for position, dets in enumerate(detections):
            for name, score in dets or ():
                column = self._class_scores.setdefault(name, np.zeros(self.size, np.float32))
                column[position] = max(column[position], score)
        self._word_positions: dict[str, list[int]] = {}
        for position, caption in enumerate(captions):
            for word in _caption_words(caption or ""):
                self._word_positions.setdefault(word, []).append(position)

    def scores(self, query: TextQuery) -> np.ndarray:
        concept = np.zeros(self.size, np.float32)
        for name in query.concepts:
            if name in self._class_scores:
                concept += self._class_scores[name]
        if query.concepts:
            concept /= len(query.concepts)
        caption = np.zeros(self.size, np.float32)
        for word in query.words:
            caption[self._word_positions.get(word, [])] += 1.0
        if query.words:
            caption /= len(query.words)
        weight = self.CONCEPT_WEIGHT if query.concepts else 0.0
        return np.round(weight * concept + (1.0 - weight) * caption, 6)

    def top(self, text: str, k: int) -> list[tuple[int, float]]:
        """The k best-matching positions with a score above zero, best first."""
        scores = self.scores(parse_text_query(text))
        matched = np.flatnonzero(scores > 0)
        order = matched[np.argsort(-scores[matched], kind="stable")][:k]
        return [(int(i), float(scores[i])) for i in order]
