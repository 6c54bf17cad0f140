"""The ``simages`` command: search from a terminal, and see today's usage.

Exit codes: 0 success, 1 the API or the network failed, 2 the input was invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from . import __version__
from ._client import SimilarImagesClient
from ._config import ENV_API_URL, parse_base_url, resolve_base_url
from ._exceptions import InvalidRequest, SimilarImagesError
from ._models import SearchResult
from ._query import Query
from .identity import ThumbnailFingerprints
from .protocol import DEFAULT_API_URL, MAX_NUM_SIMILAR, result_to_body

EXIT_OK, EXIT_API_ERROR, EXIT_INVALID = 0, 1, 2
MAX_USAGE_DAYS = 366

# The request rules live in the core (``Query``); the CLI only says which option was wrong.
OPTION_FOR_FIELD = {
    "url": "--url",
    "image": "--image",
    "text": "--text",
    "num_similar": "--num-similar",
    "get_labels": "--labels",
    "url/image/text": "--url/--image/--text",
}


def _days(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of days, got {raw!r}") from None
    if not 1 <= value <= MAX_USAGE_DAYS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_USAGE_DAYS}, got {value}")
    return value


def _as_int_if_integer(raw: str) -> int | str:
    """Text to int when it is one; anything else goes to the core as is, which says what is wrong."""
    try:
        return int(raw)
    except ValueError:
        return raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simages", description="Find similar images with the Similar Images API (simages.info)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--api-url", help="API URL (default: $SIMAGES_API_URL or https://simages.info)")
    parser.add_argument(
        "--api-key", help="API key (default: $SIMAGES_API_KEY, $TERNAUS_TOKEN or ~/.ternaus/ternaus.json)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="search by image URL, image file or text")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--url", help="URL of the query image")
    query.add_argument("--image", metavar="PATH", help="image file to search with")
    query.add_argument("--text", help="text query")
    search.add_argument("-n", "--num-similar", default="1", help=f"1..{MAX_NUM_SIMILAR} (default 1)")
    search.add_argument("--labels", action="store_true", help="add COCO-YOLOv7 detections")
    search.add_argument(
        "--json",
        action="store_true",
        help="print the result body as JSON, as the API sent it (no copies collapsed)",
    )
    search.add_argument(
        "--all",
        action="store_true",
        help="list copies of one image (resized, recompressed, cropped, mirrored, ...) each on its own row; "
        "by default they are collapsed into the best-scored one, shown with 'N copies' (read from thumbnails)",
    )
    search.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")

    usage = commands.add_parser("usage", help="requests sent, cached and failed per day")
    usage.add_argument("--days", type=_days, default=7, help="how many days back (default 7)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "usage":
            with _client(args, cache=False) as client:
                _print_usage(client, args.days, out)
            return EXIT_OK
        query = Query(
            url=args.url,
            image=args.image,
            text=args.text,
            num_similar=_as_int_if_integer(args.num_similar),  # type: ignore[arg-type]
            labels=args.labels,
        )
        with _client(args, cache=False if args.no_cache else "auto") as client:
            result = client.search_query(query)
    except _BadOption as exc:
        print(f"simages: invalid {exc.option}: {exc.reason}", file=err)
        return EXIT_INVALID
    except InvalidRequest as exc:
        option = OPTION_FOR_FIELD.get(exc.field or "")
        print(f"simages: invalid {option or 'request'}: {exc.message}", file=err)
        return EXIT_INVALID
    except SimilarImagesError as exc:
        print(f"simages: {type(exc).__name__}: {exc}", file=err)
        return EXIT_API_ERROR
    if args.json:
        json.dump(result_to_body(result), out, indent=2)
        out.write("\n")
        _print_hint(result, query, client.base_url, err)
        return EXIT_OK
    if not args.all and len(result.images) > 1:
        # A thumbnail that cannot be read only leaves its image uncollapsed: never an error.
        with ThumbnailFingerprints() as fingerprints:
            result = result.collapse_copies(fingerprints(result.images))
    out.write(format_table(result))
    _print_hint(result, query, client.base_url, err)
    return EXIT_OK


def _print_hint(result: SearchResult, query: Query, base_url: str, err: TextIO) -> None:
    # simages.info labels every image it knows: the hint is about a local server's index.
    hint = labels_hint(result, query) if base_url.rstrip("/") != DEFAULT_API_URL.rstrip("/") else None
    if hint:
        print(f"simages: note: {hint}", file=err)


NO_LABELS_HINT = (
    "a local server (simages-server) has labels only for the images its index was labelled with: "
    "re-run `simages-server index` with --detector FILE.onnx (a YOLOv7 export) or --coco FILE.json"
)


def labels_hint(result: SearchResult, query: Query) -> str | None:
    """Why an answer that is valid but empty of labels may be so; ``None`` when nothing looks off.

    The answer stays as the API documents it: a labelled request whose images all have no object,
    or a text query that matches nothing, is what an unlabelled local index gives. Said once, on
    stderr, so the table (or JSON) on stdout is unchanged.
    """
    if query.text is not None and not result.images:
        return f"no image matched the text; {NO_LABELS_HINT} (or --clip-model for text search by meaning)"
    if result.labels_requested and result.images and not any(image.detections for image in result.images):
        return f"none of these images has labels; {NO_LABELS_HINT}"
    return None


class _BadOption(Exception):
    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option, self.reason = option, reason


def _client(args: argparse.Namespace, *, cache: bool | str) -> SimilarImagesClient:
    try:
        parse_base_url(resolve_base_url(args.api_url))
    except ValueError as exc:
        raise _BadOption("--api-url" if args.api_url else ENV_API_URL, str(exc)) from None
    try:
        return SimilarImagesClient(api_key=args.api_key, base_url=args.api_url, cache=cache)
    except ValueError as exc:  # a setting from the environment, e.g. SIMAGES_CACHE_TTL
        raise _BadOption("setting", str(exc)) from None


def format_table(result: SearchResult) -> str:
    """A fixed-width table: rank, score, id, copies (when collapsed), detected classes (when asked), URL."""
    if not result.images:
        return "no similar images found\n"
    show_copies = result.copies_collapsed and any(image.copies for image in result.images)
    rows = []
    for rank, image in enumerate(result.images, start=1):
        row = [str(rank), f"{image.score:.4f}", image.id]
        if show_copies:
            count = len(image.copies)
            row.append(f"{count} {'copy' if count == 1 else 'copies'}" if count else "-")
        if result.labels_requested:
            counts = Counter(d.name for d in image.detections or ())
            row.append(", ".join(f"{n}×{c}" if c > 1 else n for n, c in counts.most_common()) or "-")
        row.append(image.url)
        rows.append(row)
    header = [
        "#",
        "score",
        "id",
        *(["copies"] if show_copies else []),
        *(["labels"] if result.labels_requested else []),
        "url",
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    suffix = " (from cache)" if result.from_cache else ""
    collapsed = sum(len(image.copies) for image in result.images)
    if collapsed:
        suffix += (
            f", {collapsed} {'copy' if collapsed == 1 else 'copies'} of them not listed (--all lists them)"
        )
    return "\n".join(lines) + f"\n{len(rows)} image(s){suffix}\n"


def _print_usage(client: SimilarImagesClient, days: int, out: TextIO) -> None:
    out.write(f"{'day':<12}{'sent':>8}{'cached':>8}{'failed':>8}\n")
    for day in client.usage.history(max(1, days)):
        out.write(f"{day.day.isoformat():<12}{day.sent:>8}{day.cached:>8}{day.failed:>8}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
