"""``region_votes.vote_region``: which label a drawn region gets from its similar images (pure, no I/O)."""

from __future__ import annotations

import pytest

from simages_core import Detection, SimilarImage
from simages_label_studio.region_votes import vote_region

LABELS = {"cup": "Mug", "spoon": "Spoon", "cat": "Cat"}


def image(score: float, *objects: tuple[str, float], size: int = 100, det_score: float = 0.9) -> SimilarImage:
    """A similar image whose detections cover the given fractions of it (squares from the corner)."""
    detections = tuple(
        Detection(name, det_score, (0.0, 0.0, size * fraction**0.5, size * fraction**0.5), 0)
        for name, fraction in objects
    )
    return SimilarImage(f"u{score}", score, "", f"id{score}", detections, size, size)


def vote(images, label_for=LABELS.get, threshold=0.5, top_k=5, **kw):
    return vote_region(images, label_for, threshold=threshold, top_k=top_k, **kw)


def test_the_dominant_object_of_each_similar_image_counts_most():
    # Each coffee photo shows a big cup and a small spoon: the region is a Mug.
    result = vote([image(0.9, ("cup", 0.6), ("spoon", 0.1)), image(0.8, ("cup", 0.5), ("spoon", 0.1))])
    assert result.label == "Mug"
    assert result.share == pytest.approx((0.9 * 0.6 + 0.8 * 0.5) / (0.9 * 0.7 + 0.8 * 0.6), abs=1e-4)
    assert [label for label, _ in result.shares] == ["Mug", "Spoon"]


def test_a_closer_image_outweighs_a_farther_one():
    result = vote([image(0.95, ("cat", 0.5)), image(0.3, ("cup", 0.5))])
    assert result.label == "Cat" and result.share == pytest.approx(0.95 / 1.25, abs=1e-4)


def test_classes_no_label_claims_dilute_the_vote_below_the_threshold():
    # The neighbours mostly show dining tables, which this project does not label.
    result = vote([image(0.9, ("dining table", 0.8), ("cup", 0.1)), image(0.9, ("dining table", 0.7))])
    assert result.label is None
    assert result.runner_up == "Mug" and result.share == pytest.approx(0.1 / 1.6, abs=1e-4)


def test_nothing_to_vote_with():
    assert vote([]).label is None
    unlabelled = SimilarImage("u", 0.9, "", "id", None, 100, 100)
    empty = SimilarImage("v", 0.9, "", "id2", (), 100, 100)
    result = vote([unlabelled, empty])
    assert (result.label, result.share, result.runner_up, result.voters) == (None, 0.0, None, 0)


def test_only_the_top_k_labelled_images_and_confident_detections_vote():
    images = [image(0.9, ("cat", 0.5)), image(0.8, ("cup", 0.5)), image(0.7, ("cup", 0.5))]
    assert vote(images, top_k=1).label == "Cat"
    assert vote(images, top_k=3).label == "Mug"
    weak = [image(0.9, ("cat", 0.5), det_score=0.1), image(0.5, ("cup", 0.5))]
    assert vote(weak, min_detection_score=0.25).label == "Mug"


def test_a_mapping_may_give_a_label_with_a_weight():
    # A learned association counts partly; the rest of its weight stays in the total.
    learned = {"cup": ("Breakfast", 0.5)}
    result = vote([image(0.9, ("cup", 0.5))], label_for=learned.get, threshold=0.4)
    assert (result.label, result.share) == ("Breakfast", 0.5)


def test_without_the_image_size_coverage_is_relative_to_the_largest_detection():
    detections = (Detection("cup", 0.9, (0, 0, 10, 10), 0), Detection("spoon", 0.9, (0, 0, 5, 5), 0))
    result = vote([SimilarImage("u", 1.0, "", "id", detections)])
    assert result.label == "Mug" and result.share == pytest.approx(1 / 1.25, abs=1e-4)
