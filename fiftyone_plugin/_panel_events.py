"""One panel's events in the order they arrived, and searches overtaken by a newer one skipped.

The App sends a panel's events without waiting for the previous answer, and FiftyOne runs them
on a pool of threads: stepping quickly through three samples starts three searches at once, and
whichever finishes last decides what the panel shows, not necessarily the sample on screen. So
each panel's events take turns in arrival order (a ticket queue, since a plain lock wakes its
waiters in any order), and a search that a newer search arrived behind is skipped without
touching the panel: no request, no state, no output, the newer one answers.

Two kinds of search: a new query (another sample, a text, a selection) and a new page size for
the query on screen. A page size gives way to any newer search (the newer query is asked with
that page size anyway); a query gives way only to a newer query: the page-size box reports its
value again whenever the panel is drawn, and that report must not cancel the search just asked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum


class Search(Enum):
    QUERY = "query"
    PAGE_SIZE = "page size"


class PanelTurns:
    """Per panel id: a ticket for each event as it arrives, served one at a time, in order."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._issued: dict[str, int] = {}
        self._serving: dict[str, int] = {}
        self._latest_query: dict[str, int] = {}
        self._latest_search: dict[str, int] = {}

    def pending(self, panel_id: str) -> int:
        """Events of the panel running or waiting for their turn."""
        with self._changed:
            return self._issued.get(panel_id, 0) - self._serving.get(panel_id, 0)

    @contextmanager
    def turn(self, panel_id: str, *, search: Search | None) -> Iterator[bool]:
        """Wait for this event's turn; yields ``True`` when it is a search a newer search overtook."""
        with self._changed:
            ticket = self._issued.get(panel_id, 0)
            self._issued[panel_id] = ticket + 1
            if search is not None:
                self._latest_search[panel_id] = ticket
            if search is Search.QUERY:
                self._latest_query[panel_id] = ticket
            while self._serving.get(panel_id, 0) != ticket:
                self._changed.wait()
            latest = self._latest_query if search is Search.QUERY else self._latest_search
            overtaken = search is not None and latest[panel_id] != ticket
        try:
            yield overtaken
        finally:
            with self._changed:
                self._serving[panel_id] = ticket + 1
                self._changed.notify_all()


TURNS = PanelTurns()
