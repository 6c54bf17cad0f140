"""A prediction's score says how sure the backend is, so sorting by it puts the tasks needing a human first.

A mixed batch, as search results the API could give: a near-duplicate with confident boxes, neighbours
that agree, neighbours that split, and nothing. Sorted by score, descending, it must come out in that order.
"""

from __future__ import annotations

import pytest

from simages_core import Detection, SearchResult, SimilarImage
from simages_label_studio.label_config import parse_label_config
from simages_label_studio.learned_labels import NOTHING_LEARNED, Contribution, ContributionPart, Evidence
from simages_label_studio.predictions import Thresholds, answer_target, prediction

from .conftest import CONFIG

SIZE = (400, 300)


def similar(
    score: float, *classes: str, size=(400, 300), id: str = "x", det_score: float = 0.95
) -> SimilarImage:
    dets = tuple(Detection(c, det_score, (50, 50, 250, 250), 0) for c in classes)
    return SimilarImage(f"http://api/images/{id}", score, "", id, dets, *size)


def score_of(images: list[SimilarImage], learned: Evidence = NOTHING_LEARNED) -> float:
    (target,) = parse_label_config(CONFIG).targets
    regions, certainties = answer_target(
        target, SearchResult(tuple(images), labels_requested=True), SIZE, learned, Thresholds()
    )
    return prediction(regions, "v", certainties)["score"]


BATCH = {
    # The task's own copy (0.97, same aspect) with confident boxes; its neighbours agree.
    "near-duplicate, confident boxes": [similar(0.97, "cat"), *[similar(0.85, "cat", size=(500, 300))] * 4],
    # No near-duplicate (other aspect ratios): all five neighbours show a cat.
    "agreeing neighbours": [similar(0.86, "cat", size=(500, 300))] * 5,
    # Three cats and two cups among the neighbours: Cat wins with 0.6 of the vote.
    "split vote": [
        *[similar(0.86, "cat", size=(500, 300))] * 3,
        *[similar(0.86, "cup", size=(500, 300))] * 2,
    ],
    # Nothing any label maps to.
    "nothing": [similar(0.8, "car", size=(500, 300))] * 5,
}


def test_sorting_by_score_orders_a_mixed_batch_from_surest_to_needing_a_human():
    scores = {name: score_of(images) for name, images in BATCH.items()}
    assert sorted(scores, key=scores.get, reverse=True) == list(BATCH), scores
    assert scores["nothing"] == 0.0 and 0 < scores["split vote"] < scores["agreeing neighbours"]
    # Boxes from a 0.97 near-duplicate at 0.95 each, and a unanimous Cat among voters at best 0.97.
    assert scores["near-duplicate, confident boxes"] == pytest.approx((0.97 * 0.95 + 0.97) / 2, abs=1e-3)


def test_unsure_boxes_score_below_confident_ones():
    confident = score_of([similar(0.97, "cat", det_score=0.95), *[similar(0.85, "cat", size=(500, 300))] * 4])
    unsure = score_of([similar(0.97, "cat", det_score=0.3), *[similar(0.85, "cat", size=(500, 300))] * 4])
    assert confident > unsure > 0


def test_what_was_learned_counts_by_how_much_evidence_there_is():
    """Labels only learned (no COCO name): a label taught once scores lower than one taught often."""
    parts = [ContributionPart("scene", frozenset({"Coffee"}), frozenset({"class:car"}))]
    once = Evidence.from_counts(Contribution.build(parts).counts, annotations=1)
    often = Evidence.from_counts(Contribution.build(parts * 9).counts, annotations=9)
    voters = [similar(0.8, "car", size=(500, 300))] * 5
    assert 0 < score_of(voters, once) < score_of(voters, often) < score_of(BATCH["agreeing neighbours"])
