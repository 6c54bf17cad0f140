"""The ``simages-server`` command: ``index`` a folder, ``serve`` it, or build the ``demo`` collection."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .embedders import ImageEmbedder
from .keys import ENV_SERVER_KEYS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simages-server", description="A local server speaking the Similar Images API protocol."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="index a folder of images (re-run to add new images)")
    index.add_argument("images_dir", type=Path)
    index.add_argument("--out", type=Path, required=True, help="index folder")
    index.add_argument(
        "--coco", type=Path, help="COCO annotations (ground truth or a detector's predictions)"
    )
    _add_onnx_options(index)

    serve = commands.add_parser("serve", help="answer POST / like simages.info")
    serve.add_argument("--index", type=Path, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--api-keys", type=Path, help=f"file with one key per line (or set {ENV_SERVER_KEYS})")
    serve.add_argument(
        "--daily-limit", type=int, default=100, help="successful requests per key per day (0: none)"
    )
    serve.add_argument("--state", type=Path, help="folder for the daily counters (default: the index folder)")
    serve.add_argument(
        "--public-url", help="base URL clients reach this server at (default: the request's host)"
    )
    serve.add_argument(
        "--allow-url-network", action="append", default=[], metavar="CIDR",
        help="let 'url' queries reach this private network (repeatable), e.g. 10.0.0.0/8",
    )  # fmt: skip
    serve.add_argument("--fetch-timeout", type=float, default=10.0, help="seconds to fetch a 'url' query")
    serve.add_argument("--max-body-mb", type=float, default=10.0)
    serve.add_argument("--threads", type=int, default=16, help="worker threads")
    serve.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="add this delay to every answer (to simulate a remote API)",
    )
    _add_onnx_options(serve)

    demo = commands.add_parser(
        "demo", help="write the demo collection (scikit-image photos + variants) and index it"
    )
    demo.add_argument(
        "--out", type=Path, required=True, help="folder for images/, annotations.json and index/"
    )
    return parser


def _add_onnx_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--onnx-image-model", type=Path, help="CLIP-style image encoder (.onnx); never downloaded"
    )
    parser.add_argument(
        "--onnx-text-model", type=Path, help="matching text encoder (.onnx), for text queries"
    )


def _embedder(args: argparse.Namespace) -> ImageEmbedder:
    from .embedders import DescriptorEmbedder, OnnxEmbedder

    if args.onnx_image_model:
        return OnnxEmbedder(args.onnx_image_model, args.onnx_text_model)
    if args.onnx_text_model:
        raise SystemExit("simages-server: --onnx-text-model needs --onnx-image-model")
    return DescriptorEmbedder()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "index":
            return _index(args)
        if args.command == "demo":
            return _demo(args)
        return _serve(args)
    except (OSError, ValueError) as exc:
        print(f"simages-server: {exc}", file=sys.stderr)
        return 2


def _index(args: argparse.Namespace) -> int:
    from .index import build_index

    report = build_index(args.images_dir, args.out, coco=args.coco, embedder=_embedder(args))
    print(f"indexed {report.added} new image(s); {report.total} in {args.out}; skipped {len(report.skipped)}")
    for line in report.skipped:
        print(f"  skipped {line}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import build_demo_collection
    from .index import build_index

    images_dir = build_demo_collection(args.out)
    report = build_index(images_dir, args.out / "index", coco=args.out / "annotations.json")
    print(f"demo collection: {report.total} images in {images_dir}; index at {args.out / 'index'}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import waitress

    from .app import ServerSettings, SimilarImagesApp
    from .fetch import FetchPolicy, parse_networks
    from .index import ImageIndex
    from .keys import digests, load_keys

    keys = load_keys(args.api_keys)
    if not keys:
        raise ValueError(f"no API keys: give --api-keys FILE or set {ENV_SERVER_KEYS}=key1,key2")
    index = ImageIndex.load(args.index)
    state = args.state or args.index
    state.mkdir(parents=True, exist_ok=True)
    settings = ServerSettings(
        key_digests=digests(keys),
        quota_path=state / "quota.sqlite",
        daily_limit=args.daily_limit,
        fetch=FetchPolicy(timeout=args.fetch_timeout, allow_networks=parse_networks(args.allow_url_network)),
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        latency_ms=args.latency_ms,
        public_url=args.public_url,
    )
    app = SimilarImagesApp(index, settings, _embedder(args))
    logging.getLogger("simages_server").info(
        "serving %d images on http://%s:%d (%d key(s), daily limit %s)",
        len(index), args.host, args.port, len(keys), args.daily_limit or "none",
    )  # fmt: skip
    waitress.serve(
        app, host=args.host, port=args.port, threads=args.threads, ident="simages-server", _quiet=True
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
