"""The Similar Images panel (modal and grid) and the buttons that open it.

In the modal the panel follows the sample in front of the user (``on_change_current_sample``)
and its selected detections (``on_change_selected_labels``); in the grid it searches with a text
or the selected samples when asked (a selection made one click at a time must not send a request
per click). The work is in ``_panel_actions`` (search, cache, import) and what is shown in
``_panel_render``; this module wires FiftyOne's events to them.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from . import _panel_actions as actions
from ._panel_cache import COUNTS
from ._panel_events import TURNS, Search
from ._panel_memory import MEMORY, memory_key, new_mount
from ._panel_render import Handlers, render

PANEL_NAME = "similar_images_panel"
PANEL_LABEL = "Similar images"
PANEL_ICON = "image_search"
SEARCHES = {
    "on_change_current_sample": Search.QUERY,
    "on_change_selected_labels": Search.QUERY,
    "search_text": Search.QUERY,
    "search_selected": Search.QUERY,
    "num_similar_changed": Search.PAGE_SIZE,
}
"""Events that replace the answer on screen: one overtaken by a newer one is skipped (``_panel_events``)."""


class SimilarImagesPanel(foo.Panel):
    """Neighbours of the sample in front of you (modal), or of a text or the selected samples (grid);
    tick results and import them with labels."""

    @property
    def config(self) -> foo.PanelConfig:
        return foo.PanelConfig(
            name=PANEL_NAME,
            label=PANEL_LABEL,
            icon=PANEL_ICON,
            surfaces="grid modal",
            help_markdown=(
                "Similar images from the Similar Images API (simages.info) or a local simages-server. "
                "In the sample modal: the neighbours of the open sample, or of its selected detections. "
                "In the grid: a text prompt or the selected samples. Tick results and **Import selected** "
                "adds them as samples with their detections and provenance; click a thumbnail for the full image."
            ),
        )

    def execute(self, ctx: Any) -> Any:
        """FiftyOne's dispatch of an event to its method (then ``render``), one event of a panel at a time."""
        method = ctx.params.get("__method__")
        if not ctx.panel_id or method in (None, "on_startup"):
            return super().execute(ctx)
        panel_id = str(ctx.panel_id)
        with TURNS.turn(panel_id, search=SEARCHES.get(method)) as overtaken:
            if overtaken:
                return None  # a newer search answers; this one leaves the panel as it is
            MEMORY.restore(memory_key(panel_id, ctx.panel_state), ctx.panel_state)
            try:
                return super().execute(ctx)
            finally:  # under the key the event ended with: on_load starts a new one
                MEMORY.record(memory_key(panel_id, ctx.panel_state), ctx.panel_state)

    def on_load(self, ctx: Any) -> None:
        ctx.panel.state.set({"mount": new_mount(), "imported": {}, "copies": {}})
        actions.refresh_usage(ctx)
        if ctx.current_sample:
            actions.search_modal(ctx)

    def on_change_current_sample(self, ctx: Any) -> None:
        actions.search_modal(ctx)

    def on_change_selected_labels(self, ctx: Any) -> None:
        if ctx.current_sample:
            actions.search_modal(ctx)

    def on_change_selected(self, ctx: Any) -> None:
        """The grid's selection changed: rendering again updates "Search with the N selected samples";
        nothing is searched until the button is pressed."""

    def num_similar_changed(self, ctx: Any) -> None:
        actions.search_again(ctx)

    def on_pick(self, ctx: Any) -> None:
        """A tick changed: the state holds it already; rendering again updates the import button's count."""

    def search_text(self, ctx: Any) -> None:
        actions.search_text(ctx)

    def search_selected(self, ctx: Any) -> None:
        actions.search_selected(ctx)

    def import_selected(self, ctx: Any) -> dict[str, Any] | None:
        result = actions.import_selected(ctx)
        return result.to_dict() if result is not None else None

    def render(self, ctx: Any) -> types.Property:
        return render(
            ctx.panel_state,
            modal=bool(ctx.current_sample),
            selected=len(ctx.selected or ()),
            usage=COUNTS.usage(str(ctx.panel_id)),
            on=Handlers(
                on_pick=self.on_pick,
                import_selected=self.import_selected,
                search_text=self.search_text,
                search_selected=self.search_selected,
                on_num_similar=self.num_similar_changed,
            ),
        )


class _OpenPanel(foo.Operator):
    """A button that opens the panel where the user is (the App opens it in the modal when one is open)."""

    place: types.Places
    operator_name: str
    operator_label: str

    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(name=self.operator_name, label=self.operator_label, unlisted=True)

    def resolve_placement(self, ctx: Any) -> types.Placement:
        return types.Placement(
            self.place,
            types.Button(label="Similar images", icon=PANEL_ICON, prompt=False),
        )

    def execute(self, ctx: Any) -> None:
        ctx.ops.open_panel(PANEL_NAME, layout="horizontal", is_active=True)


class OpenPanelInModal(_OpenPanel):
    place = types.Places.SAMPLES_VIEWER_ACTIONS
    operator_name = "open_similar_images_panel_modal"
    operator_label = "Open the Similar images panel (sample viewer)"


class OpenPanelInGrid(_OpenPanel):
    place = types.Places.SAMPLES_GRID_ACTIONS
    operator_name = "open_similar_images_panel"
    operator_label = "Open the Similar images panel"
