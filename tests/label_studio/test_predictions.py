"""Search results -> Label Studio results, against API responses recorded from the server (data/)."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import pytest

from simages_core import Detection, SearchResult, SimilarImage
from simages_core.protocol import parse_response
from simages_label_studio.label_config import LabelControl
from simages_label_studio.predictions import (
    Thresholds,
    aspect_matches,
    choices_region,
    near_duplicate,
    own_rectangle_regions,
    prediction,
    rectangle_regions,
    vote_choices,
)

RECORDED = json.loads((Path(__file__).parent / "data" / "recorded_responses.json").read_text())


def recorded(name: str) -> SearchResult:
    return parse_response(200, json.dumps(RECORDED[name]).encode(), labels_requested=True)


def control(kind="rectanglelabels", mapping=None, multiple=False) -> LabelControl:
    mapping = mapping or {"cup": "Cup", "spoon": "Spoon", "cat": "Cat", "dog": "Dog"}
    return LabelControl(
        kind, "label" if kind == "rectanglelabels" else "scene", "image", MappingProxyType(mapping), multiple
    )


def image(score, dets=(), width=100, height=100, id="x") -> SimilarImage:
    detections = tuple(Detection(name, s, box, 0) for name, s, box in dets)
    return SimilarImage(f"http://api/images/{id}", score, f"http://api/t/{id}", id, detections, width, height)


def test_boxes_of_a_near_duplicate_in_percent_of_the_task_image():
    result = recorded("coffee_resized.jpg")  # the API's copy is 360x240
    match = near_duplicate(result, (600, 400), Thresholds())  # the task holds the 600x400 original
    assert match is not None and match.id == "5fd2ee923318d4cb"
    regions = rectangle_regions(control(), match, (600, 400), 0.25)
    by_label = {r["value"]["rectanglelabels"][0]: r for r in regions}
    cup = by_label["Cup"]
    assert (cup["original_width"], cup["original_height"]) == (600, 400)
    # cup [103.2, 10.8, 247.2, 180.0] on 360x240 -> percent, whatever the task's resolution.
    assert cup["value"]["x"] == pytest.approx(100 * 103.2 / 360, abs=1e-3)
    assert cup["value"]["y"] == pytest.approx(100 * 10.8 / 240, abs=1e-3)
    assert cup["value"]["width"] == pytest.approx(100 * 144 / 360, abs=1e-3)
    assert cup["value"]["height"] == pytest.approx(100 * 169.2 / 240, abs=1e-3)
    assert cup["type"] == "rectanglelabels" and cup["from_name"] == "label" and cup["to_name"] == "image"
    assert cup["score"] == 1.0 and {r["id"] for r in regions} == {"label-0", "label-1"}


def test_no_boxes_when_the_aspect_ratio_differs():
    assert near_duplicate(recorded("coffee_resized.jpg"), (400, 400), Thresholds()) is None


def test_no_boxes_below_the_near_duplicate_score():
    brick = recorded("brick.jpg")
    others = SearchResult(brick.images[1:], labels_requested=True)  # 0.74 and 0.71: similar, not duplicates
    assert near_duplicate(others, (512, 512), Thresholds()) is None
    assert near_duplicate(others, (512, 512), Thresholds(near_duplicate_score=0.7)) is not None


def test_a_near_duplicate_without_objects_gives_no_boxes():
    brick = recorded("brick.jpg")
    match = near_duplicate(brick, (512, 512), Thresholds())
    assert match is not None and match.detections == ()
    assert rectangle_regions(control(), match, (512, 512), 0.25) == []


def test_aspect_tolerance_is_relative():
    assert aspect_matches((451, 300), (271, 180), 0.01)  # 1.503 vs 1.506
    assert not aspect_matches((451, 300), (397, 264), 0.0)
    assert not aspect_matches((4, 3), (16, 9), 0.1)


def test_low_scores_unmapped_classes_and_degenerate_boxes_are_dropped():
    match = image(
        1.0,
        [
            ("cat", 0.9, (10, 10, 50, 50)),
            ("cat", 0.1, (10, 10, 50, 50)),  # below min score
            ("horse", 0.9, (10, 10, 50, 50)),  # no label for it
            ("dog", 0.9, (120, 10, 150, 50)),  # entirely outside the 100x100 image
            ("dog", 0.9, (90, 90, 140, 140)),  # clamped to the image
        ],
    )
    regions = rectangle_regions(control(), match, (200, 200), 0.25)
    assert [r["value"]["rectanglelabels"] for r in regions] == [["Cat"], ["Dog"]]
    assert regions[1]["value"] | {} == {
        "x": 90.0, "y": 90.0, "width": 10.0, "height": 10.0, "rotation": 0, "rectanglelabels": ["Dog"],
    }  # fmt: skip
    assert regions[1]["original_width"] == 200


def test_own_regions_use_the_image_size():
    match = recorded("chelsea.jpg").images[1]  # the 271x180 resized copy
    (region,) = own_rectangle_regions(control(), match, 0.25)
    assert (region["original_width"], region["original_height"]) == (271, 180)
    assert region["value"]["width"] == pytest.approx(100 * 246 / 271, abs=1e-3)
    assert own_rectangle_regions(control(), image(1.0, width=None), 0.25) == []


def test_choices_are_voted_by_similarity():
    images = (
        image(0.9, [("cat", 0.8, (0, 0, 1, 1))]),
        image(0.6, [("dog", 0.8, (0, 0, 1, 1)), ("dog", 0.9, (0, 0, 1, 1))]),  # one vote per image
        image(0.5),  # labelled, with no object: counts in the total
        SimilarImage("u", 0.99, "t", "unlabelled"),  # detections None: no vote at all
    )
    # cat 0.9 / 2.0 = 0.45; dog 0.6 / 2.0 = 0.30
    multi = control("choices", multiple=True)
    assert vote_choices(multi, images, Thresholds(choice_threshold=0.25)) == [("Cat", 0.45), ("Dog", 0.3)]
    assert vote_choices(multi, images, Thresholds(choice_threshold=0.4)) == [("Cat", 0.45)]
    assert vote_choices(control("choices"), images, Thresholds(choice_threshold=0.25)) == [("Cat", 0.45)]
    assert vote_choices(multi, images, Thresholds(choice_threshold=0.25, top_k=1)) == [("Cat", 1.0)]
    assert vote_choices(multi, (), Thresholds()) == []


def test_choices_from_recorded_similar_cats():
    chosen = vote_choices(control("choices", multiple=True), recorded("chelsea.jpg").images, Thresholds())
    assert chosen == [("Cat", 1.0)]
    region = choices_region(control("choices"), chosen)
    assert region == {
        "id": "scene-0", "from_name": "scene", "to_name": "image", "type": "choices",
        "value": {"choices": ["Cat"]}, "score": 1.0,
    }  # fmt: skip
    assert choices_region(control("choices"), []) is None


def test_prediction_score_is_the_mean_of_region_scores():
    p = prediction([{"score": 0.5}, {"score": 1.0}, {"no": "score"}], "v1")
    assert p == {
        "result": [{"score": 0.5}, {"score": 1.0}, {"no": "score"}],
        "score": 0.75,
        "model_version": "v1",
    }
    assert prediction([], "v1")["score"] == 0.0


def test_text_results_without_labels_have_no_detections():
    result = parse_response(
        200, json.dumps(RECORDED["text: a cat (no labels)"]).encode(), labels_requested=False
    )
    assert all(im.detections is None for im in result.images)
    assert vote_choices(control("choices"), result.images, Thresholds()) == []
