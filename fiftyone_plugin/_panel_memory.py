"""What the panel last showed, kept by the App server, so that an event sent with old state cannot undo it.

The App sends each panel event with the panel's state as the browser held it when the event
fired, and FiftyOne renders the panel again from that state after the event. An event fired
before the previous answer reached the browser (the page-size box reports its value again each
time the panel is drawn) therefore carries a state without that answer, and its render would
blank the panel although the answer is there. Recorded live in the App: the grid's text search
answered, then two such reports from the page-size box, sent before its answer arrived, drew an
empty panel.

Only the panel's own actions write the keys below (the answer and what was done with it), and a
panel's events run one at a time (``_panel_events``), so the copy kept here after each event is
never older than what any browser state holds. Before an event runs, those keys are taken from
here; what the user sets in the browser (the text, the page size, the ticks) stays the event's.

A panel is remembered under its id and the ``mount`` that ``on_load`` writes into its state: the
sample modal's panel has the same id in every browser tab, and two tabs must not draw each
other's answers. An event whose state has no ``mount`` (it fired before the panel loaded) is
left as it came.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from typing import Any

PANEL_KEYS = ("answer", "rows", "cards", "imported", "copies", "error", "notice", "grid_source")
"""State written only by the panel's actions (``_panel_actions``), never by a control in the browser."""
PANELS_REMEMBERED = 256
"""Open panels whose state is kept (the least recently used is forgotten first; it then renders
from its browser state, as before)."""


def new_mount() -> str:
    """A fresh ``mount`` for the state of a panel that has just loaded."""
    return uuid.uuid4().hex


def memory_key(panel_id: object, state: Mapping[str, Any]) -> str | None:
    mount = state.get("mount")
    return f"{panel_id}/{mount}" if isinstance(mount, str) and mount else None


class PanelMemory:
    """Per loaded panel (``memory_key``), the panel-written part of its state as the last event left it."""

    def __init__(self, capacity: int = PANELS_REMEMBERED) -> None:
        self._lock = threading.Lock()
        self._capacity = capacity
        self._panels: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def restore(self, key: str | None, state: MutableMapping[str, Any]) -> None:
        """Bring an event's state up to date in place: the panel's keys as last recorded, the user's
        ticks from the event (or, for results its state does not know yet, as last recorded)."""
        if key is None:
            return
        with self._lock:
            kept = copy.deepcopy(self._panels.get(key))
            if kept is not None:
                self._panels.move_to_end(key)
        if kept is None:
            return
        sent_cards = state.get("cards")
        for name, value in kept.items():
            state[name] = value
        if isinstance(kept.get("cards"), dict) and isinstance(sent_cards, Mapping):
            for name, card in kept["cards"].items():
                sent = sent_cards.get(name)
                if (
                    isinstance(card, dict)
                    and isinstance(sent, Mapping)
                    and isinstance(sent.get("pick"), bool)
                ):
                    card["pick"] = sent["pick"]

    def record(self, key: str | None, state: Mapping[str, Any]) -> None:
        """Keep the panel's keys of the state an event ended with."""
        if key is None:
            return
        kept = {name: copy.deepcopy(state[name]) for name in PANEL_KEYS if name in state}
        with self._lock:
            self._panels[key] = kept
            self._panels.move_to_end(key)
            while len(self._panels) > self._capacity:
                self._panels.popitem(last=False)


MEMORY = PanelMemory()
