"""Regions answered interactively teach when their task's annotation arrives: memos, IoU pairing, stores,
and the project uid that keeps two Label Studio instances' learned labels apart. No Label Studio here
(``test_learning_ls.py`` runs the flow through a real one)."""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path

import pytest

from simages_core import Detection, SimilarImage
from simages_label_studio.context import project_key
from simages_label_studio.learned_labels import Contribution, ContributionPart, class_signals
from simages_label_studio.region_memos import (
    RegionMemo,
    annotated_regions,
    latest,
    memo_of,
    memo_parts,
    pair_by_iou,
    region_box,
)
from simages_label_studio.webhook_events import WebhookEvent
from tests.redis_support import redis_server  # noqa: F401

DATA = Path(__file__).parent / "data"
SIZE = (1000, 500)


def memo(region_id: str, box, coco_class: str = "cat", *, from_name="box", shape="rectangle") -> RegionMemo:
    return RegionMemo(region_id, from_name, shape, box, SIZE, coco_class, 0.8)


def similar(score: float, *classes: tuple[str, tuple[float, float, float, float]]) -> SimilarImage:
    dets = tuple(Detection(name, 0.9, box, 0) for name, box in classes)
    return SimilarImage("http://api/images/x", score, "", "x", dets, 100, 100)


# --- pairing by IoU ---------------------------------------------------------------------------------


def test_pairs_are_the_best_overlaps_each_box_once_and_never_under_the_minimum():
    annotated = [(0, 0, 100, 100), (200, 0, 300, 100), (600, 0, 700, 100)]
    remembered = [(205, 0, 305, 100), (0, 0, 100, 90), (10, 0, 110, 100), (650, 0, 750, 100)]
    # (0,0,100,100) overlaps two memos: the 0.9 one wins, the 0.82 one stays unpaired;
    # (600..700) vs (650..750) is 1/3: under 0.5, no pair.
    assert sorted(pair_by_iou(annotated, remembered, 0.5)) == [(0, 1), (1, 0)]
    assert sorted(pair_by_iou(annotated, remembered, 0.3)) == [(0, 1), (1, 0), (2, 3)]
    assert pair_by_iou(annotated, [(400, 400, 500, 500)], 0.01) == []  # no overlap at all is never a pair


def test_an_annotator_box_paired_with_a_memo_counts_its_label_against_the_memos_class():
    memos = [memo("a", (0, 0, 100, 100), "cat"), memo("b", (500, 0, 600, 100), "truck")]
    annotated = [("Pet", (2, 3, 98, 101)), ("Vehicle", (505, 0, 610, 95)), ("Pet", (800, 0, 900, 100))]
    parts = memo_parts("box", "rectangle", annotated, SIZE, memos, 0.5)
    assert parts == [
        ContributionPart("box", frozenset({"Pet"}), frozenset(class_signals("cat"))),
        ContributionPart("box", frozenset({"Vehicle"}), frozenset(class_signals("truck"))),
    ]
    # An unpaired memo or annotator box teaches nothing (no "class without label" count).
    counts = Contribution.build(parts).counts
    assert counts["s\x1fbox\x1fclass:cat"] == 1 and counts["p\x1fbox\x1fPet\x1fclass:cat"] == 1
    # Memos of another control, shape or image size are not candidates.
    others = [
        memo("c", (0, 0, 100, 100), from_name="other"),
        memo("d", (0, 0, 100, 100), shape="keypoint"),
        RegionMemo("e", "box", "rectangle", (0, 0, 100, 100), (999, 500), "cat", 0.8),
    ]
    assert memo_parts("box", "rectangle", annotated, SIZE, others, 0.5) == []


def test_the_latest_memo_of_a_region_replaces_the_earlier_one():
    first, moved = memo("a", (0, 0, 100, 100), "cat"), memo("a", (400, 0, 500, 100), "dog")
    assert latest([first, memo("b", (0, 0, 5, 5)), moved]) == [memo("b", (0, 0, 5, 5)), moved]


def test_annotated_regions_place_boxes_and_keypoints_as_interactive_crops_them():
    result = [
        {"from_name": "box", "type": "rectanglelabels", "original_width": 1000, "original_height": 500,
         "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["Pet"]}},
        {"from_name": "box", "type": "rectanglelabels", "original_width": 1000, "original_height": 500,
         "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["Unknown"]}},
        {"from_name": "box", "type": "rectanglelabels", "value": {"x": 1}},  # no size: cannot be placed
        {"from_name": "pt", "type": "keypointlabels", "original_width": 1000, "original_height": 500,
         "value": {"x": 50, "y": 50, "keypointlabels": ["Pet"]}},
    ]  # fmt: skip
    boxes, size = annotated_regions(result, "box", "rectangle", ("Pet", "Vehicle"), 0.4)
    assert size == SIZE and boxes == [("Pet", pytest.approx((100, 100, 400, 300)))]
    points, _ = annotated_regions(result, "pt", "keypoint", ("Pet",), 0.4)
    # A keypoint is the 0.4-of-the-short-side window around it: 200 px square centred on (500, 250).
    assert points == [("Pet", pytest.approx((400, 150, 600, 350)))]
    assert region_box("keypoint", {"x": 50, "y": 50}, SIZE, 0.4) == points[0][1]


def test_a_memo_holds_the_crops_best_class_unless_it_is_weak_or_explicitly_mapped():
    cats = [
        similar(0.9, ("cat", (0, 0, 80, 80))),
        similar(0.8, ("cat", (0, 0, 90, 90)), ("cup", (0, 0, 10, 10))),
    ]

    def made(images, explicit=lambda _: None):
        return memo_of(
            "r", "box", "rectangle", (0, 0, 1, 1), SIZE, images, explicit, top_k=5, min_detection_score=0.25
        )

    remembered = made(cats)
    assert remembered is not None and remembered.coco_class == "cat" and remembered.share > 0.9
    assert made(cats, explicit={"cat": "Cat"}.get) is None  # an explicit mapping already decides cats
    spread = [similar(0.9, *[(c, (0, 0, 50, 50)) for c in ("cat", "dog", "cup", "car")])]
    assert made(spread) is None  # no class reaches 30% of the weight: nothing to teach
    assert RegionMemo.from_json(json.loads(json.dumps(remembered.to_json()))) == remembered


# --- the stores -------------------------------------------------------------------------------------


def test_memos_are_kept_per_project_and_task_newest_last_and_bounded(store):
    from simages_label_studio.region_memo_store import MEMOS_PER_TASK

    project = f"5.{time.time_ns()}"
    memos = store.memos()
    memos.remember(project, 1, [memo("a", (0, 0, 10, 10))])
    memos.remember(project, 1, [memo("b", (0, 0, 20, 20))])
    assert [m.region_id for m in memos.recall(project, 1)] == ["a", "b"]
    assert memos.recall(project, 2) == [] and memos.recall(f"6.{time.time_ns()}", 1) == []
    memos.remember(project, 3, [memo(str(n), (0, 0, 10, 10)) for n in range(MEMOS_PER_TASK + 5)])
    kept = memos.recall(project, 3)
    assert len(kept) == MEMOS_PER_TASK and kept[0].region_id == "5"  # the oldest went


def test_the_store_lists_the_uids_of_a_project_id(store):
    stamp = time.time_ns() % 10**9
    for key in (f"4{stamp}.1700000000", f"4{stamp}.1800000000", f"41{stamp}.1700000000"):
        store.apply(
            key, 1, Contribution.build([ContributionPart("c", frozenset({"A"}), frozenset({"class:cat"}))])
        )
    assert store.projects(int(f"4{stamp}")) == [f"4{stamp}.1700000000", f"4{stamp}.1800000000"]


# --- one backend, two Label Studio instances ---------------------------------------------------------


def test_predict_and_webhook_name_a_project_by_the_same_uid_label_studio_makes():
    created = json.loads((DATA / "webhook_annotation_created.json").read_text())
    event = WebhookEvent.from_json(created)
    # Label Studio's MLApi._create_project_uid: f"{project.id}.{int(project.created_at.timestamp())}"
    seconds = calendar.timegm(time.strptime(created["project"]["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert event.project is not None and event.project.key == f"1.{seconds}"
    assert project_key(f"1.{seconds}") == event.project.key  # what /predict and /setup send
    other = {**created, "project": {**created["project"], "created_at": "2026-01-02T03:04:05.9+00:00"}}
    assert WebhookEvent.from_json(other).project.key == "1.1767323045" != event.project.key
    assert project_key(7) == project_key("7") == "7"  # a bare id: its own key, which no webhook writes
    assert project_key("7.x") == "7" and project_key("0.123") is None and project_key(True) is None
    assert (
        WebhookEvent.from_json({**created, "project": {**created["project"], "created_at": None}}).project.key
        == "1"
    )
