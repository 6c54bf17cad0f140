"""What a run of many requests will cost: how many fall within today's free requests, and a cap.

The public API answers 100 requests a day for free and bills the rest, so a run that sends
thousands of queries (expanding a dataset or a project) says beforehand how many of them are
beyond today's free share, counted from the usage ledger, and stops at a cap the user sets.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._usage import UsageLedger

FREE_REQUESTS_PER_DAY = 100
"""The public API's free daily requests (simages.info); successful requests are what count."""


@dataclass(frozen=True)
class RequestBudget:
    """A run's planned requests against what is left of today's free ones."""

    planned: int
    """Requests the run would send if nothing were cached and nothing capped."""
    sent_today: int
    """Successful requests already sent today (the usage ledger's ``sent``)."""
    max_requests: int | None = None
    """The user's cap for this run; ``None`` means no cap."""
    free_per_day: int = FREE_REQUESTS_PER_DAY

    def __post_init__(self) -> None:
        if self.planned < 0 or self.sent_today < 0:
            raise ValueError("planned and sent_today must not be negative")
        if self.max_requests is not None and self.max_requests < 0:
            raise ValueError(f"max_requests must be 0 or more, got {self.max_requests}")

    @property
    def will_send(self) -> int:
        """Requests the run will send at most: the plan, cut at the cap."""
        return self.planned if self.max_requests is None else min(self.planned, self.max_requests)

    @property
    def free_left(self) -> int:
        return max(0, self.free_per_day - self.sent_today)

    @property
    def beyond_free(self) -> int:
        """How many of the requests the run will send fall beyond today's free ones."""
        return max(0, self.will_send - self.free_left)

    def describe(self) -> str:
        """One line for a form or a terminal: ``"250 requests, 180 beyond today's 100 free (20 used)"``."""
        capped = f" (capped at {self.max_requests} of {self.planned})" if self.will_send < self.planned else ""
        return (
            f"{self.will_send} request(s){capped}, {self.beyond_free} beyond today's "
            f"{self.free_per_day} free ({self.sent_today} used today)"
        )


def budget_for(planned: int, usage: UsageLedger, *, max_requests: int | None = None) -> RequestBudget:
    """The budget of a run of ``planned`` requests, from today's count in ``usage``."""
    return RequestBudget(planned=planned, sent_today=usage.day().sent, max_requests=max_requests)
