"""The Similar Images panel's state handling, driven as the App drives it, against the local server.

FiftyOne ships no panel test helpers, so ``PanelDriver`` does what the App does: it runs one of
the panel's callbacks through FiftyOne's operator execution (``execute_operator`` with the
panel's ``__method__``, ``panel_id`` and state, and the App's context: the open sample, the
selection), then applies the state patches the panel sends back and keeps its rendered output.
Requests are counted at the server (its log), not in the plugin.
"""

from __future__ import annotations

import copy
from typing import Any

import fiftyone as fo
import pydash
import pytest
from fiftyone.operators import execute_operator
from fo_helpers import coco_boxes, unique_name
from test_region_queries import make_montage

pytestmark = [pytest.mark.integration]

PANEL_URI = "@simages/similar-images/similar_images_panel"


class PanelDriver:
    """One open panel: its state as the App keeps it, and each callback run as the App runs it."""

    def __init__(self, dataset: fo.Dataset) -> None:
        self.dataset = dataset
        self.panel_id = unique_name("panel")  # each panel its own count, as each panel the App opens
        self.state: dict[str, Any] = {}
        self.output: dict[str, Any] | None = None
        self.ops: list[tuple[str, dict[str, Any]]] = []
        """App operations the panel asked for other than its own state and output (set_view...)."""

    def call(
        self,
        method: str,
        *,
        current_sample: str | None = None,
        selected: list[str] | None = None,
        selected_labels: list[dict[str, Any]] | None = None,
        sent_with: dict[str, Any] | None = None,
    ) -> Any:
        """Run a callback with the panel's state, or with ``sent_with``: an event the browser fired
        before the patches of earlier events reached it carries an older state."""
        sent_state = copy.deepcopy(self.state if sent_with is None else sent_with)
        result = execute_operator(
            PANEL_URI,
            dataset=self.dataset,
            current_sample=current_sample,
            selected=selected or [],
            selected_labels=selected_labels or [],
            params={
                "__method__": method,
                "panel_id": self.panel_id,
                "panel_state": sent_state,
                "state": sent_state,
                "event_args": {},
            },
        )
        self.ops = []
        for request in result.executor.to_json()["requests"]:
            name, params = request["operator_uri"], request["params"] or {}
            if name == "patch_panel_state":
                for key, value in params["state"].items():
                    pydash.set_(self.state, key, copy.deepcopy(value))
            elif name == "clear_panel_state":
                self.state = {}
            elif name == "show_panel_output":
                self.output = params["output"]
            else:
                self.ops.append((name, params))
        return result.result

    def tick(self, image_id: str, current_sample: str | None = None) -> None:
        """Tick a result's box, as the checkbox does (the App sets the value, then calls its on_change)."""
        pydash.set_(self.state, f"cards.r_{image_id}.pick", True)
        self.call("on_pick", current_sample=current_sample)

    @property
    def ids(self) -> list[str]:
        return [row["id"] for row in self.state.get("rows") or []]

    def output_properties(self) -> dict[str, Any]:
        assert self.output is not None
        return self.output["type"]["properties"]

    @property
    def usage(self) -> str:
        """The usage line the panel shows (requests it sent, today's free requests left)."""
        return self.output_properties()["usage"]["default"]

    @property
    def error(self) -> str | None:
        error = self.output_properties().get("error")
        return error["view"]["label"] if error else None


def server_searches(api_env) -> int:
    """Searches the local server has answered so far (its log has a line per request)."""
    return sum(1 for line in api_env.log_path.read_text().splitlines() if "POST / " in line)


@pytest.fixture
def two_photos(make_dataset) -> fo.Dataset:
    dataset = make_dataset("chelsea.jpg", "horse.jpg")
    dataset.compute_metadata()
    return dataset


def test_stepping_back_to_a_sample_answers_from_the_cache(api_env, two_photos):
    first, second = two_photos.values("id")
    panel = PanelDriver(two_photos)
    before = server_searches(api_env)

    panel.call("on_load", current_sample=first)
    first_ids = panel.ids
    assert first_ids and panel.state["answer"]["key"] == f"sample:{first}"
    # a fresh SIMAGES_HOME: 100 free, 1 used
    assert panel.usage == "Requests sent by this panel: 1 · free requests left today: 99 of 100"
    assert server_searches(api_env) == before + 1
    assert panel.error is None

    panel.call("on_change_current_sample", current_sample=second)
    assert panel.state["answer"]["key"] == f"sample:{second}"
    assert panel.ids and panel.ids != first_ids
    assert (
        panel.usage.startswith("Requests sent by this panel: 2 ·") and server_searches(api_env) == before + 2
    )

    panel.call("on_change_current_sample", current_sample=first)
    assert panel.ids == first_ids
    assert panel.usage.startswith("Requests sent by this panel: 2 ·")
    assert server_searches(api_env) == before + 2  # no request


def test_rows_show_score_classes_and_copies_of_the_datasets_samples(api_env, two_photos):
    first = two_photos.first()
    panel = PanelDriver(two_photos)
    panel.call("on_load", current_sample=first.id)
    rows = panel.state["rows"]
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(0 < r["score"] <= 1 for r in rows)
    assert rows[0]["classes"].startswith("cat")  # the demo's chelsea photo holds a cat
    # The demo collection holds the sample's own photo: it is marked as a copy of this sample.
    assert rows[0]["notes"].endswith(f"copy of sample {first.id} in this dataset")
    cards = panel.output_properties()["cards"]["type"]["properties"]
    card = cards[f"r_{rows[0]['id']}"]["type"]["properties"]
    assert card["thumb"]["view"]["href"] == rows[0]["url"]
    assert card["thumb"]["view"]["label"].startswith("#1 · score ")
    assert card["pick"]["view"]["name"] == "CheckboxView"
    button = panel.output_properties()["import_selected"]["view"]
    assert button["label"] == "Import selected (0)" and button["disabled"] is True


def test_a_selected_detection_is_searched_with_its_box(api_env, cleanup_datasets, tmp_path):
    dataset = fo.Dataset(unique_name("simages-panel-regions"))
    cleanup_datasets.append(dataset.name)
    montage = make_montage(api_env, dataset, tmp_path / "montage.jpg")
    panel = PanelDriver(dataset)
    panel.call("on_load", current_sample=montage.sample_id)
    whole = panel.ids

    panel.call(
        "on_change_selected_labels",
        current_sample=montage.sample_id,
        selected_labels=montage.selected(montage.horse),
    )
    assert panel.error is None
    answer = panel.state["answer"]
    assert answer["key"].startswith(f"labels:{montage.horse.id}@")
    assert answer["title"] == f"Similar to the detection 'horse' of sample {montage.sample_id}"
    files = {r.id: r.file for r in api_env.records()}
    assert files[panel.ids[0]].startswith("horse"), [files[i] for i in panel.ids]
    assert panel.ids != whole
    assert {row["query"] for row in panel.state["rows"]} == {
        f"detection 'horse' ({montage.horse.id}, field ground_truth) of sample {montage.sample_id}"
    }

    # Unselecting goes back to the whole sample: its answer is still cached.
    searches = server_searches(api_env)
    panel.call("on_change_selected_labels", current_sample=montage.sample_id, selected_labels=[])
    assert panel.ids == whole and server_searches(api_env) == searches


def test_import_selected_imports_exactly_the_ticked_results(api_env, two_photos):
    cat_sample = two_photos.first()
    panel = PanelDriver(two_photos)
    panel.state["num_similar"] = 20
    panel.call("on_load", current_sample=cat_sample.id)
    rows = panel.state["rows"]
    copy_row = rows[0]  # the sample's own photo
    assert copy_row["notes"].endswith(f"copy of sample {cat_sample.id} in this dataset")
    files = {r.id: r.file for r in api_env.records()}
    boxed = {name for name, boxes in coco_boxes(api_env).items() if boxes}
    fresh = [r["id"] for r in rows[1:] if "copy of sample" not in r["notes"] and files[r["id"]] in boxed][:2]
    assert len(fresh) == 2
    for image_id in (*fresh, copy_row["id"]):
        panel.tick(image_id, current_sample=cat_sample.id)
    button = panel.output_properties()["import_selected"]["view"]
    assert button["label"] == "Import selected (3)"
    originals = set(two_photos.values("id"))

    outcome = panel.call("import_selected", current_sample=cat_sample.id)

    assert panel.error is None
    two_photos.reload()
    new = two_photos.select([i for i in two_photos.values("id") if i not in originals])
    # The copy of the open sample is screened out as the import operator screens it; the other two go in.
    assert sorted(new.values("simages_id")) == sorted(fresh)
    assert outcome["imported"] == 2 and outcome["skipped_copies"] == 1
    assert outcome["copies"] == {copy_row["id"]: cat_sample.id}
    assert all(s.detections and s.detections.detections for s in new)
    assert set(new.values("simages_query")) == {f"sample:{cat_sample.id}"}
    run = two_photos.load_run_results(outcome_run_key(two_photos, new))
    assert run.imported == 2
    assert panel.state["notice"] == "Imported 2; skipped: 1 copy of samples already in the dataset"
    imported = panel.state["imported"]
    assert imported == dict(zip(*new.values(["simages_id", "id"]), strict=True))
    assert panel.state["copies"] == {copy_row["id"]: cat_sample.id}
    cards = panel.output_properties()["cards"]["type"]["properties"]
    assert cards[f"r_{copy_row['id']}"]["type"]["properties"]["imported"]["default"] == (
        f"Not imported: a copy of sample {cat_sample.id}"
    )
    for image_id, sample_id in dict(zip(*new.values(["simages_id", "id"]), strict=True)).items():
        assert (
            cards[f"r_{image_id}"]["type"]["properties"]["imported"]["default"]
            == f"Imported as sample {sample_id}"
        )
    assert not any(card["pick"] for card in panel.state["cards"].values())
    # Then the App shows them: the modal closes and the grid's view is the run's new samples.
    names = [name for name, _ in panel.ops]
    assert names == ["close_sample", "set_view"]
    view = fo.DatasetView._build(two_photos, panel.ops[1][1]["view"])
    assert set(view.values("id")) == set(new.values("id"))


def outcome_run_key(dataset: fo.Dataset, new: fo.DatasetView) -> str:
    (tag,) = {t for t in new.distinct("tags") if t.startswith("simages-")}
    return next(k for k in dataset.list_runs() if dataset.get_run_info(k).config.tag == tag)


def test_import_refuses_ticks_that_are_not_in_the_answer_on_screen(api_env, two_photos):
    first = two_photos.first().id
    panel = PanelDriver(two_photos)
    panel.call("on_load", current_sample=first)
    injected = [*panel.state["rows"], {"id": "0123456789abcdef", "rank": 99}]
    pydash.set_(panel.state, "rows", injected)
    panel.call("on_pick", current_sample=first)
    cards = panel.output_properties()["cards"]["type"]["properties"]
    assert "r_0123456789abcdef" not in cards  # the App server draws the rows it sent, not the browser's
    # After an App server restart (which forgets every panel) the browser's state is all there is.
    panel.panel_id = unique_name("panel")
    panel.tick("0123456789abcdef", current_sample=first)
    panel.tick(panel.ids[0], current_sample=first)
    count = len(two_photos)
    panel.call("import_selected", current_sample=first)
    assert panel.error == "The results on screen are out of date: search again, then tick again."
    assert len(two_photos) == count and panel.ops == []


def test_nothing_ticked_says_so(api_env, two_photos):
    panel = PanelDriver(two_photos)
    panel.call("on_load", current_sample=two_photos.first().id)
    panel.call("import_selected", current_sample=two_photos.first().id)
    assert panel.error == "Tick the results to import first."


def test_the_grid_searches_a_text_or_the_selected_samples(api_env, two_photos):
    panel = PanelDriver(two_photos)
    panel.call("on_load")
    props = panel.output_properties()
    assert "text" in props and props["buttons"]["type"]["properties"]["search_selected"]["view"]["disabled"]
    assert "answer_title" not in props  # nothing searched until asked

    panel.state["text"] = "a cat"
    panel.call("search_text")
    files = {r.id: r.file for r in api_env.records()}
    assert panel.state["answer"]["title"] == "Similar to the text 'a cat'"
    assert files[panel.ids[0]].startswith("chelsea")

    ids = two_photos.values("id")
    before = server_searches(api_env)
    panel.call("on_change_selected", selected=ids)
    assert server_searches(api_env) == before  # selecting sends nothing
    button = panel.output_properties()["buttons"]["type"]["properties"]["search_selected"]["view"]
    assert button["label"] == "Search with the 2 selected samples" and not button.get("disabled")
    panel.call("search_selected", selected=ids)
    assert panel.state["answer"]["title"] == "Similar to 2 selected samples"
    assert panel.state["answer"]["key"] == "samples:" + ",".join(sorted(ids))

    panel.state["num_similar"] = 3  # the page size changed: the same query again
    panel.call("num_similar_changed", selected=ids)
    assert panel.state["answer"]["num_similar"] == 3 and panel.state["answer"]["source"] == "selected"


def test_an_empty_text_is_refused_in_the_panel(api_env, two_photos):
    panel = PanelDriver(two_photos)
    panel.state["text"] = "   "
    panel.call("search_text")
    assert panel.error is not None and "text prompt" in panel.error
    assert not panel.state["rows"]


def test_an_event_sent_with_an_old_state_keeps_the_answer_on_screen(api_env, two_photos):
    # Recorded in the App: the grid's text search, then the page-size box reporting its value as the
    # panel is drawn, with the state it had before the text was even typed; its render drew an
    # empty panel over the answer.
    panel = PanelDriver(two_photos)
    panel.call("on_load")
    before_typing = copy.deepcopy(panel.state)
    panel.state["text"] = "a cat"
    panel.call("search_text")
    shown = panel.ids
    searches = server_searches(api_env)

    panel.call("num_similar_changed", sent_with={**before_typing, "num_similar": 10})
    assert server_searches(api_env) == searches  # the page size on screen: not a change
    assert panel.ids == shown
    cards = panel.output_properties()["cards"]["type"]["properties"]
    assert list(cards) == [f"r_{i}" for i in shown]  # drawn from the answer, not the old state
    assert panel.output_properties()["answer_title"]["default"] == "**Similar to the text 'a cat'**"

    # Ticks are the browser's: an event's own ticks count; one that knows no results yet keeps the last.
    panel.tick(shown[0])
    panel.call("on_change_selected", sent_with={**before_typing, "num_similar": 10})
    button = panel.output_properties()["import_selected"]["view"]
    assert button["label"] == "Import selected (1)" and not button.get("disabled")
    unticked = copy.deepcopy(panel.state)
    unticked["cards"][f"r_{shown[0]}"]["pick"] = False
    panel.call("on_pick", sent_with=unticked)
    assert panel.output_properties()["import_selected"]["view"]["disabled"]

    # A real page-size change searches the query on screen again.
    panel.state["num_similar"] = 3
    panel.call("num_similar_changed")
    assert len(panel.ids) <= 3 and panel.state["answer"]["num_similar"] == 3


def test_two_tabs_with_the_modal_panel_draw_their_own_answers(api_env, two_photos):
    # The sample modal's panel has the same id in every browser tab.
    first, second = two_photos.values("id")
    tab, other_tab = PanelDriver(two_photos), PanelDriver(two_photos)
    other_tab.panel_id = tab.panel_id
    tab.call("on_load", current_sample=first)
    other_tab.call("on_load", current_sample=second)
    tab.call("on_pick", current_sample=first)
    assert tab.output_properties()["answer_title"]["default"] == f"**Similar to sample {first}**"
    other_tab.call("on_pick", current_sample=second)
    assert other_tab.output_properties()["answer_title"]["default"] == f"**Similar to sample {second}**"
