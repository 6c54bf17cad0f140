"""One panel's events in the order they arrived, and searches overtaken by a newer one skipped.

The App sends a panel's events without waiting for the previous answer, and FiftyOne runs them
on a pool of threads: stepping quickly through three samples starts three searches at once, and
whichever finishes last decides what the panel shows, not necessarily the sample on screen. So
each panel's events take turns in arrival order (a ticket queue, since a plain lock wakes its
waiters in any order), and a search that a newer search arrived behind is skipped without
touching the panel: no request, no state, no output, the newer one answers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class PanelTurns:
    """Per panel id: a ticket for each event as it arrives, served one at a time, in order."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._issued: dict[str, int] = {}
        self._serving: dict[str, int] = {}
        self._latest_search: dict[str, int] = {}

    def pending(self, panel_id: str) -> int:
        """Events of the panel running or waiting for their turn."""
        with self._changed:
            return self._issued.get(panel_id, 0) - self._serving.get(panel_id, 0)

    @contextmanager
    def turn(self, panel_id: str, *, search: bool) -> Iterator[bool]:
        """Wait for this event's turn; yields ``True`` when it is a search a newer search overtook."""
        with self._changed:
            ticket = self._issued.get(panel_id, 0)
            self._issued[panel_id] = ticket + 1
            if search:
                self._latest_search[panel_id] = ticket
            while self._serving.get(panel_id, 0) != ticket:
                self._changed.wait()
            overtaken = search and self._latest_search[panel_id] != ticket
        try:
            yield overtaken
        finally:
            with self._changed:
                self._serving[panel_id] = ticket + 1
                self._changed.notify_all()


TURNS = PanelTurns()
