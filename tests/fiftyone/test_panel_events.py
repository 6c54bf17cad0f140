"""A panel's events take turns in arrival order, and a search overtaken by a newer one is skipped."""

from __future__ import annotations

import threading
import time

from simages_fiftyone._panel_events import PanelTurns


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def wait_pending(turns: PanelTurns, count: int) -> None:
    wait_until(lambda: turns.pending("panel") == count)


def test_events_run_in_arrival_order_and_overtaken_searches_are_skipped():
    turns = PanelTurns()
    release = threading.Event()
    ran: list[tuple[str, bool]] = []

    def event(name: str, search: bool, hold: bool = False) -> None:
        with turns.turn("panel", search=search) as overtaken:
            ran.append((name, overtaken))
            if hold:
                release.wait(10)

    first = threading.Thread(target=event, args=("first sample", True, True))
    first.start()
    wait_until(lambda: ran == [("first sample", False)])
    threads = []
    # Arrivals one by one (each waits behind the first): a tick, two sample changes, another tick.
    for name, search in (
        ("tick", False),
        ("second sample", True),
        ("third sample", True),
        ("tick again", False),
    ):
        thread = threading.Thread(target=event, args=(name, search))
        thread.start()
        threads.append(thread)
        wait_pending(turns, len(threads) + 1)
    assert turns.pending("other panel") == 0  # panels do not wait for each other
    release.set()
    for thread in (first, *threads):
        thread.join(10)
    assert ran == [
        ("first sample", False),
        ("tick", False),
        ("second sample", True),  # overtaken by the third: skipped
        ("third sample", False),
        ("tick again", False),
    ]
    assert turns.pending("panel") == 0


def test_a_failing_event_hands_the_turn_on():
    turns = PanelTurns()
    try:
        with turns.turn("panel", search=True):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with turns.turn("panel", search=True) as overtaken:
        assert overtaken is False
    assert turns.pending("panel") == 0
