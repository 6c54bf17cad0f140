"""The operators' output views: the find gallery (App grid, markdown, JSON) and the import and expand summaries.

What a finished run shows; the forms that ask for a run are in ``_forms``.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators.types as types

from ._outcomes import FindSimilarResult, QueryRegion, RankedImage
from ._ranking import class_summary


def copy_count(r: RankedImage) -> str:
    """``"1 copy"``, ``"3 copies"``: how many results were collapsed into this one."""
    return f"{len(r.copies)} cop{'y' if len(r.copies) == 1 else 'ies'}"


def copy_notes(r: RankedImage) -> str:
    """``"3 copies · copy of sample <id>"``: what the gallery says beside a result about its copies."""
    notes = []
    if r.copies:
        notes.append(copy_count(r))
    if r.copy_of:
        notes.append(f"copy of sample {r.copy_of}")
    return " · ".join(notes)


def result_blocks(
    result: FindSimilarResult, max_items: int = 50
) -> list[tuple[QueryRegion | None, list[RankedImage]]]:
    """The results to show, in blocks: one per selected detection searched with (in the order the
    detections were given, each result under the one that found it best), else one block of all."""
    shown = result.images[:max_items]
    if not any(r.query.region is not None for r in shown):
        return [(None, list(shown))] if shown else []
    order = {query: i for i, query in enumerate(result.queries)}
    blocks: dict[str, tuple[QueryRegion | None, list[RankedImage]]] = {}
    for r in shown:
        blocks.setdefault(str(r.query), (r.query.region, []))[1].append(r)
    return [blocks[key] for key in sorted(blocks, key=lambda k: order.get(k, len(order)))]


def block_title(region: QueryRegion | None) -> str:
    return "Results" if region is None else f"Results for {region.describe()}"


def gallery_markdown(result: FindSimilarResult, max_items: int = 50) -> str:
    """The results as markdown (thumbnail, caption) for ``execute_operator`` callers and notebooks;
    with selected detections as queries, a heading names the detection above its block."""
    lines = []
    for region, ranked in result_blocks(result, max_items):
        if region is not None:
            lines.append(f"**{block_title(region)}**\n")
        for r in ranked:
            classes = class_summary(r.image) if result.labels else ""
            notes = copy_notes(r)
            caption = (
                f"**#{r.rank}** score {r.score:.3f}"
                + (f" · {notes}" if notes else "")
                + (f" · {classes}" if classes else "")
            )
            lines.append(f"[![{r.image.id}]({r.image.thumbnail_url})]({r.image.url})  \n{caption}\n")
    if result.errors:
        lines.append("**Queries that failed:** " + "; ".join(result.errors))
    return "\n".join(lines) or "No similar images found."


GALLERY_COLUMNS = 4


def _cell(grid: types.Object, r: RankedImage, labels: bool) -> str:
    """One thumbnail of the grid, captioned; returns its key."""
    classes = class_summary(r.image) if labels else ""
    key = f"image_{r.rank}"
    # The rank and score head the cell; how many copies were folded into it and which sample it
    # copies follow, then the classes.
    grid.str(
        key,
        view=types.ImageView(
            label=f"#{r.rank} score {r.score:.3f}" + (f" · {copy_count(r)}" if r.copies else ""),
            description=" · ".join(
                t for t in (f"copy of sample {r.copy_of}" if r.copy_of else "", classes) if t
            )
            or None,
            width="100%",
            alt=r.image.id,
            href=r.image.url,
        ),
    )
    return key


def find_output(
    result: FindSimilarResult, import_params: dict[str, Any], import_uri: str, max_items: int = 50
) -> tuple[types.Object, dict[str, Any]]:
    """The find operator's output for the App: a grid of thumbnails, each captioned with its
    rank, score and classes, and the "Import these with labels" button; returns (schema, data).

    FiftyOne's own ``GridView`` of ``ImageView`` cells is used rather than a markdown list: the
    thumbnails sit side by side, four to a row, with the caption above each one (the App's
    image view shows its label and description as a header). Selected detections as queries
    get one grid each (``thumbnails_1``, ``thumbnails_2``...), titled with the detection.
    """
    outputs = types.Object()
    outputs.int("count", label="Similar images found")
    values: dict[str, Any] = {"count": len(result), "errors": list(result.errors)}
    blocks = result_blocks(result, max_items)
    for i, (region, ranked) in enumerate(blocks, start=1):
        grid = types.Object()
        data = {_cell(grid, r, result.labels): r.image.thumbnail_url for r in ranked}
        key = "thumbnails" if region is None else f"thumbnails_{i}"
        outputs.define_property(
            key,
            grid,
            view=types.GridView(
                orientation="horizontal", columns=GALLERY_COLUMNS, gap=2, label=block_title(region)
            ),
        )
        values[key] = data
    if not blocks:
        outputs.view("none_found", types.Notice(label="No similar images found."))
    if result.errors:
        outputs.list("errors", types.String(), label="Queries that failed")
    if blocks:
        outputs.view(
            "import_button",
            types.Button(
                label="Import these with labels", operator=import_uri, params=import_params, prompt=True
            ),
        )
    return outputs, values


def find_results(result: FindSimilarResult) -> list[dict[str, Any]]:
    """The find operator's results as JSON for the App and ``execute_operator`` callers."""
    return [
        {
            "rank": r.rank,
            "score": r.score,
            "id": r.image.id,
            "url": r.image.url,
            "thumbnail_url": r.image.thumbnail_url,
            "query": str(r.query),
            "classes": [d.name for d in r.image.detections or ()],
            "copies": list(r.copies),
            "copy_of": r.copy_of,
            "query_region": r.query.region.to_dict() if r.query.region is not None else None,
        }
        for r in result.images
    ]


def import_outputs() -> types.Object:
    outputs = types.Object()
    outputs.str("summary", label="Result")
    outputs.int("imported", label="Imported")
    outputs.int("skipped_copies", label="Skipped (copies of samples already in the dataset)")
    outputs.int("skipped_duplicates", label="Skipped (already imported)")
    outputs.int("failed_downloads", label="Failed downloads")
    outputs.list("failures", types.String(), label="Why downloads failed")
    outputs.str("dataset_name", label="Dataset")
    outputs.str("tag", label="Run tag")
    outputs.str("media_dir", label="Media folder")
    return outputs


def expand_outputs() -> types.Object:
    outputs = types.Object()
    outputs.str("summary", label="Result")
    outputs.int("imported", label="Imported (whole run)")
    outputs.int("skipped_copies", label="Skipped (copies of samples already in the dataset)")
    outputs.int("skipped_duplicates", label="Skipped (already imported)")
    outputs.int("requests_this_run", label="Requests sent")
    outputs.int("failed_downloads", label="Failed downloads")
    outputs.int("failed_queries", label="Failed queries")
    outputs.list("errors", types.String(), label="What failed")
    outputs.str("dataset_name", label="Dataset")
    outputs.str("tag", label="Run tag")
    outputs.str("media_dir", label="Media folder")
    return outputs
