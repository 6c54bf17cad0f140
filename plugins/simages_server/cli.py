"""The ``simages-server`` command: ``index`` a folder, ``serve`` it, or build the ``demo`` collection."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simages_core.identity import COPY_DISTANCE

from .ann import ANN_MODES, ANN_THRESHOLD
from .embedders import ImageEmbedder
from .generations import IndexLocked
from .http_server import ConnectionLimits, PortInUse
from .keys import ENV_SERVER_KEYS
from .models import ModelError

if TYPE_CHECKING:
    from .detector import YoloDetector


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simages-server", description="A local server speaking the Similar Images API protocol."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser(
        "index", help="index a folder of images (re-run to follow it: new, changed and deleted files)"
    )
    index.add_argument("images_dir", type=Path)
    index.add_argument("--out", type=Path, required=True, help="index folder")
    index.add_argument(
        "--coco", type=Path, help="COCO annotations (ground truth or a detector's predictions)"
    )
    _add_model_options(index)
    index.add_argument(
        "--iou", type=float, help="detector NMS IoU threshold (default 0.65, or as recorded in the index)"
    )
    index.add_argument(
        "--conf", type=float, help="detector confidence threshold (default 0.25, or as recorded in the index)"
    )
    index.add_argument("--workers", type=int, help="decoding threads (default: up to 4)")
    index.add_argument(
        "--ann", choices=ANN_MODES, default="auto",
        help="approximate-nearest-neighbour index: auto = from --ann-threshold images on (an existing one "
        "grows), on = always, off = exact search only (default: auto)",
    )  # fmt: skip
    index.add_argument(
        "--ann-threshold", type=int, default=ANN_THRESHOLD, metavar="N",
        help=f"images from which --ann auto builds the ANN index (default: {ANN_THRESHOLD})",
    )  # fmt: skip
    index.add_argument(
        "--skip-copies", action="store_true",
        help="do not add new images that are copies (resized, recompressed, cropped, mirrored...) of indexed "
        "ones or of each other; without it they are added and listed",
    )  # fmt: skip
    index.add_argument(
        "--copy-threshold", type=int, default=COPY_DISTANCE, metavar="BITS",
        help=f"fingerprint distance (of 64 bits) up to which two images are copies (default: {COPY_DISTANCE})",
    )  # fmt: skip

    serve = commands.add_parser("serve", help="answer POST / like simages.info")
    serve.add_argument("--index", type=Path, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--api-keys", type=Path, help=f"file with one key per line (or set {ENV_SERVER_KEYS})")
    serve.add_argument(
        "--daily-limit", type=int, default=0, metavar="N",
        help="successful requests per key per UTC day (default 0: no limit)",
    )  # fmt: skip
    serve.add_argument(
        "--state", metavar="FOLDER|URL",
        help="where the daily counters live: a folder (default: the index folder), or a Redis URL "
        "(redis://host:6379/0, rediss://, unix://) that several server replicas share",
    )  # fmt: skip
    serve.add_argument(
        "--public-url", help="base URL clients reach this server at (default: the request's host)"
    )
    serve.add_argument(
        "--allow-url-network", action="append", default=[], metavar="CIDR",
        help="let 'url' queries reach this private network (repeatable), e.g. 10.0.0.0/8",
    )  # fmt: skip
    serve.add_argument("--fetch-timeout", type=float, default=10.0, help="seconds to fetch a 'url' query")
    serve.add_argument("--max-body-mb", type=float, default=10.0)
    serve.add_argument("--threads", type=int, default=16, help="worker threads (default 16)")
    limits = ConnectionLimits()
    serve.add_argument(
        "--connection-limit", type=int, default=limits.connection_limit, metavar="N",
        help=f"open connections at most; more wait to be accepted (default {limits.connection_limit})",
    )  # fmt: skip
    serve.add_argument(
        "--request-timeout", type=float, default=limits.request_timeout, metavar="SECONDS",
        help="close a connection that has not sent a whole request (headers and body) this long after "
        f"opening or starting it (0: no bound; default {limits.request_timeout:g})",
    )  # fmt: skip
    serve.add_argument(
        "--idle-timeout", type=float, default=limits.idle_timeout, metavar="SECONDS",
        help=f"close a kept-alive connection idle this long between requests (default {limits.idle_timeout:g})",
    )  # fmt: skip
    serve.add_argument(
        "--backlog", type=int, default=limits.backlog, metavar="N",
        help=f"connections the OS queues for accepting (default {limits.backlog})",
    )  # fmt: skip
    serve.add_argument(
        "--reload-interval", type=float, default=2.0, metavar="SECONDS",
        help="how often to look for a new index generation and switch to it (0: never; default 2)",
    )  # fmt: skip
    serve.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="add this delay to every answer (to simulate a remote API)",
    )
    _add_model_options(serve)

    demo = commands.add_parser(
        "demo", help="write the demo collection (scikit-image photos + variants) and index it"
    )
    demo.add_argument(
        "--out", type=Path, required=True, help="folder for images/, annotations.json and index/"
    )
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clip-model", type=Path, metavar="DIR",
        help="CLIP model folder in the immich/open_clip ONNX layout (default: as recorded in the index)",
    )  # fmt: skip
    parser.add_argument(
        "--detector", type=Path, metavar="FILE.onnx",
        help="YOLOv7 COCO detector exported to ONNX (default: as recorded in the index)",
    )  # fmt: skip


def _recorded_models(index_dir: Path) -> dict[str, Any]:
    from .index import read_meta

    models = read_meta(index_dir).get("models")
    return models if isinstance(models, dict) else {}


@contextmanager
def _recorded_hint(index_dir: Path, flag: str, *, from_record: bool) -> Iterator[None]:
    """A model the index names but that cannot be loaded: say where the path came from and what to do."""
    try:
        yield
    except ModelError as exc:
        if not from_record:
            raise
        raise ModelError(
            f"{exc} (the path is recorded in the index at {index_dir}; if the model moved, pass {flag})"
        ) from None


def _models(
    args: argparse.Namespace, index_dir: Path, *, serving: bool
) -> tuple[ImageEmbedder, YoloDetector | None]:
    """The models flags name, else the ones the index records; serving never mixes models silently."""
    from .clip import ClipEmbedder
    from .detector import DEFAULT_CONF, DEFAULT_IOU, YoloDetector
    from .embedders import DescriptorEmbedder

    recorded = _recorded_models(index_dir)
    embedder_rec = recorded.get("embedder") or {}
    detector_rec = recorded.get("detector") or {}
    clip_dir = args.clip_model or (
        Path(embedder_rec["folder"]) if embedder_rec.get("kind") == "clip" else None
    )
    with _recorded_hint(index_dir, "--clip-model DIR", from_record=args.clip_model is None):
        embedder: ImageEmbedder = ClipEmbedder(clip_dir) if clip_dir else DescriptorEmbedder()
    detector_path = args.detector or (Path(detector_rec["file"]) if detector_rec.get("file") else None)
    if detector_path is None:
        return embedder, None
    iou = getattr(args, "iou", None)
    conf = getattr(args, "conf", None)
    with _recorded_hint(index_dir, "--detector FILE.onnx", from_record=args.detector is None):
        detector = YoloDetector(
            detector_path,
            iou=iou if iou is not None else float(detector_rec.get("iou", DEFAULT_IOU)),
            conf=conf if conf is not None else float(detector_rec.get("conf", DEFAULT_CONF)),
        )
    if serving and detector.name != detector_rec.get("name"):
        labelled_by = (
            f"{detector_rec['name']} ({detector_rec.get('file')})"
            if detector_rec.get("name")
            else "no detector"
        )
        raise ValueError(
            f"the index at {index_dir} was labelled by {labelled_by}, not {detector.name} ({detector_path}): "
            f"label a new index with `simages-server index ... --detector {detector_path}`"
        )
    return embedder, detector


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "index":
            return _index(args)
        if args.command == "demo":
            return _demo(args)
        return _serve(args)
    except PortInUse as exc:
        print(f"simages-server: {exc.strerror}", file=sys.stderr)
        return 1
    except (OSError, ValueError, IndexLocked) as exc:
        print(f"simages-server: {exc}", file=sys.stderr)
        return 2


def _index(args: argparse.Namespace) -> int:
    from .indexing import build_index

    embedder, detector = _models(args, args.out, serving=False)
    report = build_index(
        args.images_dir, args.out, coco=args.coco, embedder=embedder, detector=detector, workers=args.workers,
        ann=args.ann, ann_threshold=args.ann_threshold, skip_copies=args.skip_copies,
        copy_threshold=args.copy_threshold,
    )  # fmt: skip
    kinds = report.skipped_by_kind
    by_kind = ", ".join(f"{len(files)} {kind}" for kind, files in kinds.items() if files)
    print(
        f"indexed {report.added} new image(s); {report.total} in {args.out}; "
        f"labelled {report.labelled}; skipped {report.skipped_count}" + (f" ({by_kind})" if by_kind else "")
    )
    print(f"changed {report.changed}, removed {report.removed}, unchanged {report.unchanged}")
    if report.upgraded:
        print("upgraded the index to the current on-disk format")
    print(
        f"generation {report.generation}"
        if report.committed
        else f"nothing changed: generation {report.generation} stays current"
    )
    if report.ann is not None:
        print(report.ann.describe())
        summary = report.ann.tuning()
        if summary is not None:
            print(summary)
    _print_skipped(kinds)
    if report.copies:
        verb = "not added" if report.copies_skipped else "added; --skip-copies leaves them out"
        print(f"{len(report.copies)} new image(s) are copies of indexed ones ({verb}):")
        for copy in report.copies:
            print(f"  {copy.file} is a copy of {copy.copy_of} ({copy.distance} bits apart)")
    return 0


# Per kind of skipped file, at most this many are listed (a folder of sidecar files would bury the rest).
_LISTED_PER_KIND = 50


def _print_skipped(kinds: dict[str, list[str]]) -> None:
    """Skipped files, listed by kind: what they are tells the user whether anything is wrong."""
    from .image_folder import IMAGE_SUFFIXES

    for kind, files in kinds.items():
        if not files:
            continue
        why = (
            f"not an image by its extension (images: {' '.join(sorted(IMAGE_SUFFIXES))})"
            if kind == "not an image"
            else "image files that could not be read"
        )
        print(f"skipped {len(files)} file(s), {why}:")
        for line in files[:_LISTED_PER_KIND]:
            print(f"  {line}")
        if len(files) > _LISTED_PER_KIND:
            print(f"  ... and {len(files) - _LISTED_PER_KIND} more")


def _demo(args: argparse.Namespace) -> int:
    from .demo import build_demo_index
    from .index import ImageIndex

    index_dir = build_demo_index(args.out, progress=True)
    count = len(ImageIndex.load(index_dir).records)
    print(f"demo collection: {count} images in {args.out / 'images'}; index at {index_dir}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .app import ServerSettings, SimilarImagesApp
    from .fetch import FetchPolicy, parse_networks
    from .http_server import check_port_free, create_server
    from .index import ImageIndex
    from .keys import digests, is_redis_url, load_keys
    from .math_threads import limit_math_threads
    from .own_urls import OwnOrigins

    limits = ConnectionLimits(
        connection_limit=args.connection_limit, request_timeout=args.request_timeout,
        idle_timeout=args.idle_timeout, backlog=args.backlog,
    )  # fmt: skip
    if args.daily_limit < 0:
        raise ValueError(f"--daily-limit must be ≥ 0 (0: no limit), not {args.daily_limit}")
    keys = load_keys(args.api_keys)
    if not keys:
        raise ValueError(f"no API keys: give --api-keys FILE or set {ENV_SERVER_KEYS}=key1,key2")
    check_port_free(args.host, args.port)  # before loading the index: a busy port is one line, at once
    _clean_if_idle(args.index)
    index = ImageIndex.load(args.index)
    quota_state: Path | str
    if args.state and is_redis_url(args.state):
        quota_state = args.state  # shared by every replica; checked (and refused if unreachable) below
    else:
        state = Path(args.state) if args.state else args.index
        state.mkdir(parents=True, exist_ok=True)
        quota_state = state / "quota.sqlite"
    settings = ServerSettings(
        key_digests=digests(keys),
        quota_path=quota_state,
        daily_limit=args.daily_limit,
        fetch=FetchPolicy(timeout=args.fetch_timeout, allow_networks=parse_networks(args.allow_url_network)),
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        latency_ms=args.latency_ms,
        public_url=args.public_url,
        own_origins=OwnOrigins.for_server(args.host, args.port, args.public_url),
    )
    embedder, detector = _models(args, args.index, serving=True)
    limit_math_threads()  # after the models loaded their libraries: see math_threads.py
    app = SimilarImagesApp(index, settings, embedder, detector.info() if detector else None)
    # Listening before saying "serving": a port taken meanwhile is still one line, never a traceback.
    server = create_server(app, host=args.host, port=args.port, threads=args.threads, limits=limits)
    if args.reload_interval > 0:
        app.watch_index(args.reload_interval)
    logging.getLogger("simages_server").info(
        "serving %d images on http://%s:%d (%d key(s), daily limit %s, quota in %s; at most %d connections, "
        "a request within %s, idle %g s)",
        len(index), args.host, args.port, len(keys), args.daily_limit or "none", app.quota.description,
        limits.connection_limit, f"{limits.request_timeout:g} s" if limits.request_timeout else "any time",
        limits.idle_timeout,
    )  # fmt: skip
    server.run()
    return 0


def _clean_if_idle(index_dir: Path) -> None:
    """Remove what a killed `index` run left, unless one is running now (its files are not stale)."""
    from .generations import POINTER, clean, write_lock
    from .index import referenced_thumbnails

    if not (index_dir / POINTER).is_file():
        return  # no index: loading it says so (and nothing is created here)
    try:
        with write_lock(index_dir):
            removed = clean(index_dir, referenced_thumbnails)
    except IndexLocked:
        return
    except OSError as exc:  # a read-only index folder (a mounted volume): serve it as it is
        logging.getLogger("simages_server").info("left %s as it is: %s", index_dir, exc)
        return
    if removed:
        logging.getLogger("simages_server").info(
            "removed what an interrupted run left: %s", ", ".join(removed[:10])
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
