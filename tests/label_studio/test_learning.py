"""Learned labels without Label Studio: the recorded webhook bodies, the evidence maths, both stores.

The bodies in ``data/webhook_*.json`` were recorded from Label Studio 1.23.2 (a project connected to a
capturing backend, annotations created, updated and deleted through its API, "Start training"); the
project's invite token was scrubbed.
"""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

import pytest
from werkzeug.exceptions import BadRequest

from simages_core import Detection, SimilarImage
from simages_label_studio.label_config import parse_label_config
from simages_label_studio.learned_labels import (
    NO_OBJECT,
    Contribution,
    ContributionPart,
    Evidence,
    class_signal,
    image_signals,
    learned_label_for,
    learned_vote,
    match_boxes,
)
from simages_label_studio.webhook_events import WebhookEvent
from tests.redis_support import redis_server  # noqa: F401

DATA = Path(__file__).parent / "data"
CHOICES = """<View><Image name="image" value="$image"/>
  <Choices name="scene" toName="image"><Choice value="Animal"/><Choice value="Breakfast"/><Choice value="Space"/></Choices>
</View>"""


def recorded(name: str) -> dict:
    return json.loads((DATA / f"webhook_{name}.json").read_text())


def image(score: float, *classes: str, id: str = "x") -> SimilarImage:
    dets = tuple(Detection(c, 0.9, (0, 0, 10, 10), 0) for c in classes)
    return SimilarImage(f"http://api/images/{id}", score, "", id, dets, 100, 100)


def choice(control: str, labels: set[str], *signals: str) -> ContributionPart:
    return ContributionPart(control, frozenset(labels), frozenset(signals))


# --- the recorded bodies ---------------------------------------------------------------------------


def test_recorded_annotation_events_parse_into_typed_annotations():
    created = WebhookEvent.from_json(recorded("annotation_created"))
    updated = WebhookEvent.from_json(recorded("annotation_updated"))
    assert created.action == "ANNOTATION_CREATED" and updated.action == "ANNOTATION_UPDATED"
    assert (
        created.project is not None and created.project.id == 1 and "<Choices" in created.project.label_config
    )
    (first,) = created.annotations
    (second,) = updated.annotations
    assert first.id == second.id == 1 and first.task_id == 1 and not first.cancelled
    assert first.task["data"] == {"image": "http://127.0.0.1:9/images/abc"}
    assert [r["value"].get("choices") for r in first.result if r["type"] == "choices"] == [["Animal"]]
    assert [r["value"].get("choices") for r in second.result if r["type"] == "choices"] == [["Space"]]


def test_recorded_delete_and_training_events_parse():
    deleted = WebhookEvent.from_json(recorded("annotations_deleted"))
    assert deleted.deleted == (1,) and deleted.project is not None and deleted.project.id == 1
    training = WebhookEvent.from_json(recorded("start_training"))
    assert training.action == "START_TRAINING" and training.project is not None and not training.annotations


def _broken(mutate) -> dict:
    body = copy.deepcopy(recorded("annotation_created"))
    mutate(body)
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_broken(lambda b: b.pop("project")), "must carry the 'project'"),
        (_broken(lambda b: b["project"].update(id="one")), "'project.id' must be the project's id"),
        (_broken(lambda b: b.pop("annotation")), "the annotation in 'annotation'"),
        (_broken(lambda b: b["annotation"].update(id=None)), "'annotation.id' must be an integer id"),
        (_broken(lambda b: b["annotation"].update(result={"a": 1})), "'annotation.result' must be a list"),
        (_broken(lambda b: b["task"].update(data="x")), "'task.data' must be the task's data"),
        (_broken(lambda b: b["annotation"].update(task=99)), "'annotation.task' is 99 but 'task.id' is 1"),
        (
            {"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": "1"},
            "the list 'annotations'",
        ),
        ({"action": 5}, "'action' must be the event name"),
    ],
)
def test_malformed_events_are_refused_with_a_message_naming_the_problem(body, message):
    with pytest.raises(BadRequest) as refused:
        WebhookEvent.from_json(body)
    assert message in str(refused.value.description)


def test_other_events_need_no_project():
    assert WebhookEvent.from_json({"action": "PROJECT_UPDATED"}).project is None


# --- the evidence maths ----------------------------------------------------------------------------


def test_association_is_the_smoothed_share_of_annotations_that_saw_the_signal():
    cat, cup = class_signal("cat"), class_signal("cup")
    parts = [choice("scene", {"Animal"}, cat)] * 3 + [choice("scene", {"Breakfast"}, cup, cat)]
    evidence = Evidence.from_counts(Contribution.build(parts).counts).control("scene")
    assert evidence.signals[cat] == 4 and evidence.labels["Animal"] == 3
    assert evidence.association("Animal", [cat]) == pytest.approx(3 / (4 + 1))
    assert evidence.association("Breakfast", [cup]) == pytest.approx(1 / 2)
    # Pooled: (3 + 0) / (4 + 1 + 1)
    assert evidence.association("Animal", [cat, cup]) == pytest.approx(3 / 6)
    assert evidence.association("Animal", [class_signal("horse")]) == 0.0


def test_learned_vote_weights_neighbours_by_similarity_and_unknown_ones_abstain():
    cat = class_signal("cat")
    evidence = Evidence.from_counts(Contribution.build([choice("scene", {"Animal"}, cat)] * 4).counts)
    voters = [image(0.9, "cat", id="a"), image(0.3, "car", id="b")]
    shares = learned_vote(evidence.control("scene"), ["Animal", "Space"], voters, min_detection_score=0.25)
    # Only "a" knows something: 0.9 * 4/5 over the weight of both.
    assert shares == {"Animal": pytest.approx(0.9 * 0.8 / 1.2), "Space": 0.0}
    assert (
        learned_vote(evidence.control("scene"), ["Animal"], [image(1.0, "car")], min_detection_score=0.25)
        == {}
    )


def test_an_image_with_no_object_says_so_and_explicit_classes_are_not_learned():
    assert image_signals(image(1.0, id="m"), 0.25) == {class_signal(NO_OBJECT), "image:m"}
    # A class brings its COCO supercategory: what carries "Animal" from cats to horses.
    assert image_signals(image(1.0, "cat", "cup", id="c"), 0.25, explicit=["cup"]) == {
        class_signal("cat"),
        "group:animal",
        "image:c",
    }


def test_boxes_match_by_iou_and_unclaimed_detections_count_for_their_class():
    det = [(Detection("cat", 0.9, (0, 0, 1, 1), 0), (0.0, 0.0, 100.0, 100.0)),
           (Detection("dog", 0.9, (0, 0, 1, 1), 0), (200.0, 0.0, 300.0, 100.0))]  # fmt: skip
    matched, unmatched = match_boxes(
        [("Pet", (5.0, 5.0, 100.0, 95.0)), ("Pet", (400, 400, 450, 450))], det, 0.5
    )
    assert matched == [("Pet", "cat")] and unmatched == ["dog"]
    parts = [ContributionPart("label", frozenset({"Pet"}), frozenset({class_signal("cat")}))] * 2
    evidence = Evidence.from_counts(Contribution.build(parts).counts).control("label")
    label_for = learned_label_for(evidence, ["Pet", "Other"], 0.5)
    assert label_for("cat") == ("Pet", pytest.approx(2 / 3, abs=1e-4)) and label_for("car") is None
    # Taught with the class alone here: a dog shares no signal with it.
    assert label_for("dog") is None


def test_a_config_whose_labels_are_not_coco_names_is_kept_to_be_learned():
    schema = parse_label_config(CHOICES)
    (target,) = schema.targets
    (control,) = target.choices
    assert (
        schema.servable and not control.class_to_label and control.labels == ("Animal", "Breakfast", "Space")
    )
    assert any("predicted only from what annotators teach" in p for p in schema.problems)


# --- both stores -------------------------------------------------------------------------------------


def test_an_updated_annotation_replaces_what_it_taught_and_a_deleted_one_takes_it_back(store):
    cat = class_signal("cat")
    store.apply("7", 1, Contribution.build([choice("scene", {"Animal"}, cat)]))
    store.apply("7", 1, Contribution.build([choice("scene", {"Space"}, cat)]))  # the same annotation, updated
    evidence = store.evidence("7")
    assert evidence.annotations == 1
    assert dict(evidence.control("scene").pairs) == {("Space", cat): 1}
    assert dict(evidence.control("scene").signals) == {cat: 1}
    store.apply("7", 1, Contribution())  # deleted (or skipped)
    assert store.evidence("7").annotations == 0 and not store.evidence("7").controls
    assert store.evidence("8").annotations == 0  # projects are apart


def test_the_generation_moves_every_n_new_annotations_and_on_training(store):
    cat = class_signal("cat")
    moves = [
        store.apply("1", n, Contribution.build([choice("scene", {"Animal"}, cat)])).moved for n in range(7)
    ]
    assert moves == [False, False, True, False, False, True, False]
    store.apply("1", 0, Contribution.build([choice("scene", {"Space"}, cat)]))  # an update is not new
    assert store.evidence("1").generation == 2
    assert store.next_generation("1") == 3 and store.evidence("1").generation == 3


def test_concurrent_webhooks_count_every_annotation_exactly_once(store):
    cat = class_signal("cat")

    def send(start: int) -> None:
        for n in range(start, start + 25):
            store.apply("3", n, Contribution.build([choice("scene", {"Animal"}, cat)]))
            store.apply("3", n, Contribution.build([choice("scene", {"Animal"}, cat)]))  # replayed

    threads = [threading.Thread(target=send, args=(k * 25,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    evidence = store.evidence("3")
    assert evidence.annotations == 100
    assert evidence.control("scene").pairs[("Animal", cat)] == 100 and evidence.generation == 100 // 3


def test_a_label_taught_on_cats_reaches_a_never_annotated_horse_through_its_coco_group():
    signals = image_signals(image(1.0, "cat", id="c"), 0.25)
    evidence = Evidence.from_counts(Contribution.build([choice("scene", {"Animal"}, *signals)] * 3).counts)
    horses = [image(0.9, "horse", id=f"h{n}") for n in range(5)]
    shares = learned_vote(evidence.control("scene"), ["Animal", "Space"], horses, min_detection_score=0.25)
    assert shares["Animal"] == pytest.approx(3 / 4) and shares["Space"] == 0.0
