"""What the Similar Images panel shows, built from its state alone (no search, no database read).

The state holds the rows of the answer on screen (``rows``: rank, score, classes, copy notes,
full-size URL), each result's thumbnail and tick (``cards.r_<API id>.thumb`` / ``.pick``, the
values FiftyOne's image and checkbox views read) and what to say (``error``; ``notice``, the
import's summary); the request counters are the App server's (``_panel_cache.COUNTS``).
``_panel_actions`` writes the state; ``render`` reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fiftyone.operators.types as types

from simages_core import FREE_REQUESTS_PER_DAY

from ._outcomes import FindSimilarResult, RankedImage
from ._panel_queries import DEFAULT_NUM_SIMILAR
from ._ranking import class_summary

CARD_COLUMNS = 3


@dataclass(frozen=True)
class Handlers:
    """The panel's callbacks the views call back (bound methods: FiftyOne turns them into URIs)."""

    on_pick: Callable[..., Any]
    import_selected: Callable[..., Any]
    search_text: Callable[..., Any]
    search_selected: Callable[..., Any]
    on_num_similar: Callable[..., Any]


def card_key(image_id: str) -> str:
    return f"r_{image_id}"


def rows_for(answer: FindSimilarResult) -> list[dict[str, Any]]:
    """The answer as the JSON rows the state keeps for rendering."""
    return [_row(r, answer.labels) for r in answer.images]


def cards_for(answer: FindSimilarResult) -> dict[str, dict[str, Any]]:
    """Each result's thumbnail, unticked."""
    return {card_key(r.image.id): {"thumb": r.image.thumbnail_url, "pick": False} for r in answer.images}


def picked_ids(state: Mapping[str, Any]) -> list[str]:
    """The API ids of the ticked results on screen, best first."""
    cards = state.get("cards") or {}
    return [
        row["id"]
        for row in state.get("rows") or []
        if (cards.get(card_key(row["id"])) or {}).get("pick") is True
    ]


def _row(r: RankedImage, labels: bool) -> dict[str, Any]:
    notes = []
    if r.copies:
        notes.append(f"{len(r.copies)} cop{'y' if len(r.copies) == 1 else 'ies'}")
    if r.copy_of:
        notes.append(f"copy of sample {r.copy_of} in this dataset")
    return {
        "id": r.image.id,
        "rank": r.rank,
        "score": round(r.score, 4),
        "classes": class_summary(r.image) if labels else "",
        "notes": " · ".join(notes),
        "url": r.image.url,
        "query": r.query.region.describe() if r.query.region is not None else None,
    }


def usage_line(sent: int, free: int | None) -> str:
    """``"Requests sent by this panel: 3 · free requests left today: 97 of 100"``."""
    line = f"Requests sent by this panel: {sent}"
    if free is not None:
        line += f" · free requests left today: {free} of {FREE_REQUESTS_PER_DAY}"
    return line


def render(
    state: Mapping[str, Any], *, modal: bool, selected: int, usage: tuple[int, int | None], on: Handlers
) -> types.Property:
    """The panel for the modal (the open sample's neighbours) or the grid (text box, selected samples)."""
    panel = types.Object()
    if modal:
        panel.md(
            "Neighbours of the sample in front of you; select detections on it to search with their boxes.",
            name="intro",
        )
    else:
        _grid_inputs(panel, selected, on)
    panel.int(
        "num_similar",
        label="Results per search",
        default=DEFAULT_NUM_SIMILAR,
        min=1,
        max=50,
        on_change=on.on_num_similar,
    )
    panel.md(usage_line(*usage), name="usage")
    if state.get("error"):
        panel.view("error", types.Error(label=str(state["error"])))
    if state.get("notice"):
        panel.view("notice", types.Success(label=str(state["notice"])))
    answer = state.get("answer")
    if answer:
        panel.md(f"**{answer['title']}**", name="answer_title")
        for i, failed in enumerate(answer.get("errors") or ()):
            panel.view(f"failed_{i}", types.Warning(label=f"Query failed: {failed}"))
    rows = state.get("rows") or []
    if answer and not rows:
        panel.view("none_found", types.Notice(label="No similar images found."))
    if rows:
        _cards(panel, rows, state.get("imported") or {}, state.get("copies") or {}, on)
        picked = len(picked_ids(state))
        panel.btn(
            "import_selected",
            label=f"Import selected ({picked})",
            variant="contained",
            disabled=picked == 0,
            on_click=on.import_selected,
        )
    return types.Property(panel, view=types.GridView(orientation="vertical", gap=2, px=2, py=2))


def _grid_inputs(panel: types.Object, selected: int, on: Handlers) -> None:
    panel.str("text", label="Text prompt", description="e.g. 'a cat on a sofa'")
    buttons = types.Object()
    buttons.btn("search_text", label="Search text", on_click=on.search_text, variant="outlined")
    buttons.btn(
        "search_selected",
        label=f"Search with the {selected} selected sample{'' if selected == 1 else 's'}",
        on_click=on.search_selected,
        disabled=selected == 0,
        variant="outlined",
    )
    panel.define_property("buttons", buttons, view=types.HStackView())


def _cards(
    panel: types.Object,
    rows: list[dict[str, Any]],
    imported: Mapping[str, str],
    copies: Mapping[str, str],
    on: Handlers,
) -> None:
    """One card per result: the thumbnail (opens the full image in a new tab), rank, score, classes,
    copy notes, and a tick box (or, once imported, the sample it became or the sample it copies)."""
    grid = types.Object()
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            continue  # the state comes back from the browser: a malformed row is not shown
        card = types.Object()
        score = row.get("score")
        caption = [
            f"#{row.get('rank')}" + (f" · score {score:.3f}" if isinstance(score, (int, float)) else "")
        ]
        if row.get("notes"):
            caption.append(str(row["notes"]))
        card.str(
            "thumb",
            view=types.ImageView(
                label=" · ".join(caption),
                description=row.get("classes") or None,
                width="100%",
                alt=row["id"],
                href=row.get("url"),
            ),
        )
        if row["id"] in imported:
            card.md(f"Imported as sample {imported[row['id']]}", name="imported")
        elif row["id"] in copies:
            card.md(f"Not imported: a copy of sample {copies[row['id']]}", name="imported")
        else:
            card.bool("pick", label="Import", view=types.CheckboxView(), on_change=on.on_pick)
        grid.define_property(card_key(row["id"]), card, view=types.GridView(orientation="vertical", gap=0))
    panel.define_property(
        "cards", grid, view=types.GridView(orientation="horizontal", columns=CARD_COLUMNS, gap=2)
    )
