"""A panel's events take turns in arrival order, a search overtaken by a newer one is skipped, and
the App server remembers what each panel showed."""

from __future__ import annotations

import threading
import time

from simages_fiftyone._panel_events import PanelTurns, Search
from simages_fiftyone._panel_memory import PanelMemory, memory_key


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def wait_pending(turns: PanelTurns, count: int) -> None:
    wait_until(lambda: turns.pending("panel") == count)


def run_held_behind_a_first_search(turns: PanelTurns, arrivals) -> list[tuple[str, bool]]:
    """Hold a first search, let ``arrivals`` (name, kind) queue behind it one by one, then release."""
    release = threading.Event()
    ran: list[tuple[str, bool]] = []

    def event(name: str, search: Search | None, hold: bool = False) -> None:
        with turns.turn("panel", search=search) as overtaken:
            ran.append((name, overtaken))
            if hold:
                release.wait(10)

    first = threading.Thread(target=event, args=("first sample", Search.QUERY, True))
    first.start()
    wait_until(lambda: ran == [("first sample", False)])
    threads = []
    for name, search in arrivals:
        thread = threading.Thread(target=event, args=(name, search))
        thread.start()
        threads.append(thread)
        wait_pending(turns, len(threads) + 1)
    assert turns.pending("other panel") == 0  # panels do not wait for each other
    release.set()
    for thread in (first, *threads):
        thread.join(10)
    assert turns.pending("panel") == 0
    return ran


def test_events_run_in_arrival_order_and_overtaken_searches_are_skipped():
    ran = run_held_behind_a_first_search(
        PanelTurns(),
        [
            ("tick", None),
            ("second sample", Search.QUERY),
            ("third sample", Search.QUERY),
            ("tick again", None),
        ],
    )
    assert ran == [
        ("first sample", False),
        ("tick", False),
        ("second sample", True),  # overtaken by the third: skipped
        ("third sample", False),
        ("tick again", False),
    ]


def test_a_page_size_gives_way_to_any_newer_search_and_never_cancels_a_query():
    # Recorded in the App: the grid's text search, then the page-size box reporting its value twice
    # as the panel is drawn again, all queued behind the panel's first event.
    ran = run_held_behind_a_first_search(
        PanelTurns(),
        [
            ("page size 20", Search.PAGE_SIZE),
            ("second sample", Search.QUERY),
            ("text search", Search.QUERY),
            ("page size reported", Search.PAGE_SIZE),
            ("page size reported again", Search.PAGE_SIZE),
        ],
    )
    assert ran == [
        ("first sample", False),
        ("page size 20", True),  # the newer queries are asked with the page size the browser has
        ("second sample", True),
        ("text search", False),  # the page-size reports behind it do not cancel it
        ("page size reported", True),
        ("page size reported again", False),
    ]


def test_a_failing_event_hands_the_turn_on():
    turns = PanelTurns()
    try:
        with turns.turn("panel", search=Search.QUERY):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with turns.turn("panel", search=Search.QUERY) as overtaken:
        assert overtaken is False
    assert turns.pending("panel") == 0


def test_the_app_server_remembers_a_bounded_number_of_loaded_panels():
    memory = PanelMemory(capacity=2)
    for mount in ("a", "b", "c"):
        memory.record(memory_key("panel", {"mount": mount}), {"rows": [{"id": mount}], "text": "the user's"})
    state: dict = {"text": "typed", "mount": "a"}
    memory.restore(memory_key("panel", state), state)
    assert state == {"text": "typed", "mount": "a"}  # the least recently used panel was forgotten
    state["mount"] = "c"
    memory.restore(memory_key("panel", state), state)
    assert state["rows"] == [{"id": "c"}] and state["text"] == "typed"  # the panel's keys, never the user's
    assert memory_key("panel", {}) is None  # an event from before the panel loaded is left as it came
