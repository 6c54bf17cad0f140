"""What the Similar Images panel searches with, read from the App's context.

In the modal the query is the sample in front of the user, or the detections selected on it
(each box cropped and searched, as the find operator does); in the grid it is the text typed
into the panel or the selected samples. Each query has a ``key`` that names it exactly (the
sample, the detection and its box, the text): answers are cached under it, so stepping back to
a sample finds its answer without a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._label_queries import find_detections, label_ids_from_selection
from ._params import SearchParams, build_params

DEFAULT_NUM_SIMILAR = 10
PANEL_LABELS = True
"""The panel always asks for detections: it shows each result's classes, and imports them as labels."""


@dataclass(frozen=True)
class PanelQuery:
    """One search of the panel: what it is (``key``, for the cache), how it reads (``title``) and the
    validated parameters the find and import operators would build for it."""

    key: str
    title: str
    params: SearchParams


def modal_query(ctx: Any, num_similar: object = DEFAULT_NUM_SIMILAR) -> PanelQuery | None:
    """The selected detections of the open sample, else the sample itself; ``None`` outside the modal.

    Raises ``ParamError`` for a selection that cannot be searched (a label that is not a
    detection, a box too small, a sample without a file), with the find form's wording.
    """
    sample_id = ctx.current_sample
    if not sample_id:
        return None
    selected = [s for s in ctx.selected_labels or () if s.get("sample_id") == sample_id]
    if selected:
        label_ids, samples = label_ids_from_selection(selected)
        params = build_params(
            source="selected_labels",
            label_ids=label_ids,
            label_samples=samples,
            num_similar=num_similar,
            labels=PANEL_LABELS,
        )
        # The boxes enter the key: a detection moved or resized since is a different query.
        regions = [d.region for d in find_detections(ctx.dataset, params.label_ids, params.label_samples)]
        key = "labels:" + ";".join(
            f"{r.label_id}@{','.join(f'{v:.6f}' for v in r.bounding_box)}" for r in regions
        )
        names = ", ".join(repr(r.label) if r.label else r.label_id for r in regions)
        what = "detection" if len(regions) == 1 else f"{len(regions)} detections"
        return PanelQuery(key, f"Similar to the {what} {names} of sample {sample_id}", params)
    params = build_params(
        source="current_sample", sample_ids=[sample_id], num_similar=num_similar, labels=PANEL_LABELS
    )
    return PanelQuery(f"sample:{sample_id}", f"Similar to sample {sample_id}", params)


def text_query(text: object, num_similar: object = DEFAULT_NUM_SIMILAR) -> PanelQuery:
    """The grid's text box as a query (``ParamError`` for an empty or too long text)."""
    params = build_params(
        source="text",
        text=text if isinstance(text, str) else "",
        num_similar=num_similar,
        labels=PANEL_LABELS,
    )
    return PanelQuery(f"text:{params.text}", f"Similar to the text {params.text!r}", params)


def selected_samples_query(ctx: Any, num_similar: object = DEFAULT_NUM_SIMILAR) -> PanelQuery:
    """The grid's selected samples as queries, merged as the find operator merges them."""
    ids = list(ctx.selected or [])
    params = build_params(source="selected", sample_ids=ids, num_similar=num_similar, labels=PANEL_LABELS)
    count = len(params.sample_ids)
    title = f"Similar to sample {ids[0]}" if count == 1 else f"Similar to {count} selected samples"
    return PanelQuery("samples:" + ",".join(sorted(params.sample_ids)), title, params)


def query_to_json(query: PanelQuery) -> dict[str, Any]:
    """What the state keeps of the query on screen, to find its answer again (import, page size)."""
    p = query.params
    return {
        "key": query.key,
        "title": query.title,
        "source": p.source,
        "text": p.text,
        "sample_ids": list(p.sample_ids),
        "label_ids": list(p.label_ids),
        "label_samples": list(p.label_samples),
        "num_similar": p.num_similar,
    }


def query_from_json(data: dict[str, Any]) -> PanelQuery:
    """The query back from the state, validated again (``ParamError`` if the state was tampered with)."""
    params = build_params(
        source=str(data.get("source")),
        text=data.get("text"),
        sample_ids=list(data.get("sample_ids") or []),
        label_ids=list(data.get("label_ids") or []),
        label_samples=list(data.get("label_samples") or []),
        num_similar=data.get("num_similar", DEFAULT_NUM_SIMILAR),
        labels=PANEL_LABELS,
    )
    return PanelQuery(str(data.get("key")), str(data.get("title")), params)
