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

pytestmark = [pytest.mark.integration]

PANEL_URI = "@simages/similar-images/similar_images_panel"


class PanelDriver:
    """One open panel: its state as the App keeps it, and each callback run as the App runs it."""

    def __init__(self, dataset: fo.Dataset, panel_id: str = "panel-under-test") -> None:
        self.dataset = dataset
        self.panel_id = panel_id
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
    ) -> Any:
        sent_state = copy.deepcopy(self.state)
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
