"""The cost of a run: requests beyond today's free share, and the cap."""

from __future__ import annotations

import pytest

import simages_core as sc
from simages_core._usage import UsageEvent


@pytest.mark.parametrize(
    ("planned", "sent_today", "cap", "will_send", "beyond"),
    [
        (250, 0, None, 250, 150),
        (250, 20, None, 250, 170),
        (50, 20, None, 50, 0),
        (80, 20, None, 80, 0),  # exactly the free share left
        (81, 20, None, 81, 1),
        (250, 20, 50, 50, 0),
        (250, 130, None, 250, 250),  # free share already used up
        (0, 0, None, 0, 0),
        (10, 0, 0, 0, 0),
    ],
)
def test_requests_beyond_the_free_share(planned, sent_today, cap, will_send, beyond):
    budget = sc.RequestBudget(planned=planned, sent_today=sent_today, max_requests=cap)
    assert (budget.will_send, budget.beyond_free) == (will_send, beyond)
    assert f"{beyond} beyond today's 100 free" in budget.describe()


def test_budget_reads_today_from_the_ledger(tmp_path):
    ledger = sc.UsageLedger(tmp_path / "usage")
    for _ in range(30):
        ledger.record(UsageEvent.SENT)
    ledger.record(UsageEvent.CACHED)  # cached and failed requests are not billed
    ledger.record(UsageEvent.FAILED)
    budget = sc.budget_for(120, ledger, max_requests=100)
    assert (budget.sent_today, budget.will_send, budget.beyond_free) == (30, 100, 30)
    ledger.close()


@pytest.mark.parametrize("kwargs", [{"planned": -1, "sent_today": 0}, {"planned": 1, "sent_today": 0, "max_requests": -2}])
def test_nonsense_is_refused(kwargs):
    with pytest.raises(ValueError):
        sc.RequestBudget(**kwargs)
