"""What the Similar Images panel does on each event: search (or read the cache), tick, import.

Every action writes the panel's state (``ctx.panel.state``), which ``_panel_render`` shows. An
action that fails says why in the panel (``error``): no key, quota used up, server down, a
sample that cannot be read, a selection that cannot be searched. Nothing is raised to the App,
and an import that fails takes back what it wrote (``iter_import_found`` is all or nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fiftyone import ViewField as F

from simages_core import ConnectError, InvalidApiKey, QuotaExceeded, SimilarImagesError

from ._importing import drain, iter_import_found
from ._outcomes import ImportSimilarResult
from ._panel_cache import COUNTS, PanelSearcher, answer_for, picked_results
from ._panel_queries import (
    DEFAULT_NUM_SIMILAR,
    PanelQuery,
    modal_query,
    query_from_json,
    query_to_json,
    selected_samples_query,
    text_query,
)
from ._panel_render import cards_for, picked_ids, rows_for
from ._param_errors import ParamError
from ._params import build_import_options

logger = logging.getLogger(__name__)


def describe_error(exc: BaseException) -> str:
    """A message for the panel: what went wrong and what to do; never a traceback, never the key."""
    if isinstance(exc, ParamError):
        return exc.message
    if isinstance(exc, QuotaExceeded):
        return f"Today's free requests are used up and the account has no balance ({exc.message}). Try again tomorrow (UTC) or top up."
    if isinstance(exc, InvalidApiKey):
        return f"The API key was refused ({exc.message}): check the plugin secret SIMAGES_API_KEY."
    if isinstance(exc, ConnectError):
        return f"The Similar Images API cannot be reached: {exc.message}"
    if isinstance(exc, SimilarImagesError):
        return f"The search failed: {exc}"
    return f"Unexpected error ({type(exc).__name__}); the App server's log has the details."


@contextmanager
def reporting(ctx: Any, failed: str | None = None) -> Iterator[None]:
    """Run an action; a failure becomes the panel's ``error`` (a bug is logged with its traceback).

    ``failed`` heads the message of an unexpected failure (e.g. that an import was undone)."""
    try:
        yield
    except (ParamError, SimilarImagesError) as exc:
        ctx.panel.state.set("error", describe_error(exc))
    except Exception as exc:  # the panel must keep working: the App shows no traceback
        logger.exception("similar images panel: unexpected error")
        message = describe_error(exc)
        ctx.panel.state.set("error", f"{failed}: {message}" if failed else message)


def num_similar(ctx: Any) -> object:
    value = ctx.panel.state.get("num_similar")
    return DEFAULT_NUM_SIMILAR if value is None else value


def show_answer(ctx: Any, make_query: Callable[[], PanelQuery | None]) -> None:
    """Search with the query (cached per query), and show its answer in place of the last one."""
    state = ctx.panel.state
    state.set({"error": None, "notice": None})
    searcher = PanelSearcher(ctx)
    try:
        with reporting(ctx):
            # The old answer goes first: after a failure the panel must not show another sample's neighbours.
            state.set({"answer": None, "rows": [], "cards": {}})
            query = make_query()
            if query is None:
                return
            answer = answer_for(ctx, query, searcher)
            state.set(
                {
                    "answer": {**query_to_json(query), "errors": list(answer.errors)},
                    "rows": rows_for(answer),
                    "cards": cards_for(answer),
                }
            )
    finally:
        _count(ctx, searcher)


def _count(ctx: Any, searcher: PanelSearcher) -> None:
    """Add what this event sent to the panel's count; refresh today's free requests if a client was made."""
    free = None
    with reporting(ctx):
        free = searcher.free_left()
    COUNTS.add(str(ctx.panel_id), searcher.requests, free)
    searcher.close()


def refresh_usage(ctx: Any) -> None:
    """Today's free requests, read when the panel opens (and the missing key said at once)."""
    searcher = PanelSearcher(ctx)
    with reporting(ctx):
        searcher.client()
    _count(ctx, searcher)


def search_modal(ctx: Any) -> None:
    """The open sample, or its selected detections."""
    show_answer(ctx, lambda: modal_query(ctx, num_similar(ctx)))


def search_text(ctx: Any) -> None:
    ctx.panel.state.set("grid_source", "text")
    show_answer(ctx, lambda: text_query(ctx.panel.state.get("text"), num_similar(ctx)))


def search_selected(ctx: Any) -> None:
    ctx.panel.state.set("grid_source", "selected")
    show_answer(ctx, lambda: selected_samples_query(ctx, num_similar(ctx)))


def search_again(ctx: Any) -> None:
    """The page size changed: the same kind of query again (in the grid only once one was asked).

    The page-size box also reports its value each time the panel is drawn: a value the answer on
    screen already has is not a change, and searches nothing."""
    shown = ctx.panel.state.get("answer")
    if isinstance(shown, dict) and shown.get("num_similar") == num_similar(ctx):
        return
    if ctx.current_sample:
        search_modal(ctx)
    elif ctx.panel.state.get("grid_source") == "text":
        search_text(ctx)
    elif ctx.panel.state.get("grid_source") == "selected":
        search_selected(ctx)


def import_selected(ctx: Any) -> ImportSimilarResult | None:
    """Import the ticked results of the answer on screen, as the import operator imports, then show them."""
    state = ctx.panel.state
    state.set({"error": None, "notice": None})
    result = None
    searcher = PanelSearcher(ctx)
    try:
        with reporting(ctx, failed="The import failed and nothing of it was kept"):
            result = _import_ticked(ctx, searcher)
    finally:
        _count(ctx, searcher)
    if result is not None and result.imported:
        if ctx.current_sample:
            ctx.ops.close_sample()
        ctx.ops.set_view(view=ctx.dataset.match_tags(result.tag))
    return result


def _import_ticked(ctx: Any, searcher: PanelSearcher) -> ImportSimilarResult:
    state = ctx.panel.state
    shown = state.get("answer")
    picked = picked_ids(state)
    if not shown or not picked:
        raise ParamError("pick", "Tick the results to import first.")
    query = query_from_json(shown)
    # The answer on screen, from the cache (a cache that has lost it searches again, and then only
    # results still in the answer can be imported: all of the ticked ones, or none).
    answer = picked_results(answer_for(ctx, query, searcher), set(picked))
    if len(answer.images) != len(picked):
        raise ParamError("pick", "The results on screen are out of date: search again, then tick again.")
    regions = list(dict.fromkeys(r.query.region for r in answer.images if r.query.region is not None))
    result: ImportSimilarResult = drain(
        iter_import_found(ctx.dataset, answer, query.params, build_import_options(), regions)
    )
    imported = dict(state.get("imported") or {})
    if result.imported:
        new = ctx.dataset.match_tags(result.tag).match(F("simages_id").is_in(picked))
        imported.update(zip(*new.values(["simages_id", "id"]), strict=True))
    copies = {**(state.get("copies") or {}), **result.copies}
    cards = state.get("cards") or {}
    state.set(
        {
            "imported": imported,
            "copies": copies,
            "notice": result.summary() + _failures(result),
            "cards": {k: {**v, "pick": False} for k, v in cards.items()},
        }
    )
    return result


def _failures(result: ImportSimilarResult) -> str:
    if not result.failed:
        return ""
    return "; failed: " + ", ".join(f"{f.simages_id} ({f.reason})" for f in result.failed)
