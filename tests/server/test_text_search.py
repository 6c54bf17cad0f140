"""Text queries without a model: words to COCO concepts, and scores over labels and captions."""

from __future__ import annotations

import pytest

from simages_server.text_search import TextIndex, parse_text_query


@pytest.mark.parametrize(
    ("text", "concepts"),
    [
        ("a cat", {"cat"}),
        ("two dogs on a sofa", {"dog", "couch"}),
        ("Buses and CARS", {"bus", "car"}),
        ("teddy bears", {"teddy bear"}),
        ("hot dogs and a dog", {"hot dog", "dog"}),
        ("people with phones", {"person", "cell phone"}),
        ("kitten", {"cat"}),
        ("motorbikes in a garage", {"motorcycle"}),
        ("knives", {"knife"}),
        ("a sunset over the sea", set()),
    ],
)
def test_query_words_become_coco_concepts(text, concepts):
    assert parse_text_query(text).concepts == concepts


def test_scores_weigh_concepts_and_captions():
    index = TextIndex(
        detections=[[("cat", 0.9)], [("cat", 0.5), ("dog", 0.8)], None, []],
        captions=["a tabby cat", None, "a cat drawn by a child", "an empty room"],
    )
    scores = index.scores(parse_text_query("cat"))
    assert scores[0] == pytest.approx(0.7 * 0.9 + 0.3)  # label and caption
    assert scores[1] == pytest.approx(0.7 * 0.5)  # label only
    assert scores[2] == pytest.approx(0.3)  # caption only: no labels known
    assert scores[3] == 0
    both = index.scores(parse_text_query("cat and dog"))
    assert both[1] == pytest.approx(0.7 * (0.5 + 0.8) / 2)
    assert index.top("cat", 10) == [
        (0, pytest.approx(0.93)),
        (1, pytest.approx(0.35)),
        (2, pytest.approx(0.3)),
    ]
    assert index.top("zebra", 10) == []


def test_caption_only_queries_match_words():
    index = TextIndex(detections=[None, None], captions=["a rocket on the launch pad", "the moon"])
    assert index.top("rocket launch", 5) == [(0, pytest.approx(1.0))]
