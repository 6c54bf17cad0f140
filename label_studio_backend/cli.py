"""``simages-ls``: serve the ML backend, or expand a project with similar images.

    simages-ls serve [--host 127.0.0.1] [--port 9090] [--threads 8]
    simages-ls labels --project 1 [--json]
    simages-ls expand --project 1 [--tasks 1,2,3] [--per-task 5] [--min-score 0.5]
                      [--max-requests N] [--chunk-size 200] [--copy-threshold BITS | --no-screen-copies]
                      [--dry-run] [--no-progress] [--json]

Exit codes of expand: 0 every source task searched (also when stopped at --max-requests: run again
to continue); 1 the API refused (key, daily limit) or could not be reached (the run stops after a few
searches in a row fail to connect), or Label Studio refused (an import that failed included); 2 bad
arguments or settings (also a SIMAGES_CACHE_URL whose Redis does not answer); 3 the run went through
but some source tasks failed (listed; run again to retry them); 130 interrupted (run again to continue).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import logging
import signal
import sys
from typing import Any

from pydantic import ValidationError

from simages_core import SharedStoreUnavailable, SimilarImagesError
from simages_core.identity import COPY_DISTANCE

from .settings import BackendSettings


def _task_ids(raw: str) -> list[int]:
    try:
        return [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tasks takes comma-separated task ids, got {raw!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simages-ls",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the ML backend for Label Studio (Settings -> Model)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; the container image passes "
        "0.0.0.0). Another address without BASIC_AUTH_USER is warned about at start",
    )
    serve.add_argument(
        "--port", type=int, default=9090, help="port (default 9090, the ML-backend convention)"
    )
    serve.add_argument("--threads", type=int, default=8, help="concurrent requests served (default 8)")
    labels = sub.add_parser(
        "labels",
        help="print what annotators taught the backend about a project's labels (read from its store)",
    )
    labels.add_argument(
        "--project",
        type=_project_arg,
        required=True,
        help="Label Studio project id, or its uid ID.CREATED (as /predict names it) when two Label Studio "
        "instances share the backend",
    )
    labels.add_argument("--json", action="store_true", help="print the evidence counts as JSON")
    expand = sub.add_parser(
        "expand",
        help="import images similar to a project's tasks as new pre-labelled tasks",
        epilog=__doc__.split("\n\n")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    expand.add_argument("--project", type=int, required=True, help="Label Studio project id")
    expand.add_argument(
        "--tasks", type=_task_ids, help="source task ids (default: every task not made by expand)"
    )
    expand.add_argument("--per-task", type=int, default=5, help="similar images per source task (default 5)")
    expand.add_argument("--min-score", type=float, default=0.0, help="minimum similarity (default 0)")
    expand.add_argument(
        "--max-requests", type=int, help="send at most this many searches; run again later to continue"
    )
    expand.add_argument(
        "--chunk-size", type=int, default=200, help="new tasks per Label Studio import (default 200)"
    )
    screening = expand.add_mutually_exclusive_group()
    screening.add_argument(
        "--copy-threshold",
        type=int,
        default=COPY_DISTANCE,
        metavar="BITS",
        help="skip a similar image whose fingerprint is within this many bits (of 64) of a task image's "
        "or of one this run imported: a resized, recompressed, cropped or mirrored copy "
        f"(default {COPY_DISTANCE}; 0 only exact copies)",
    )
    screening.add_argument(
        "--no-screen-copies",
        action="store_true",
        help="do not fingerprint anything: skip only images already in the project by API id or URL",
    )
    expand.add_argument(
        "--dry-run",
        action="store_true",
        help="print how many requests the run would send (and how many beyond today's free ones); send none",
    )
    expand.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    expand.add_argument("--json", action="store_true", help="print the report as JSON")
    expand.add_argument(
        "--verbose",
        action="store_true",
        help="also log every HTTP request and label-studio-sdk's own warnings (hidden by default)",
    )
    return parser


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def open_binding_warning(host: str, settings: BackendSettings) -> str | None:
    """The warning for listening beyond this machine with no password, or ``None``."""
    if _is_loopback(host) or settings.basic_auth is not None:
        return None
    return (
        f"listening on {host}, reachable from other machines, without BASIC_AUTH_USER: anyone who can "
        "reach this port can send predictions and spend the API key's requests; set BASIC_AUTH_USER and "
        "BASIC_AUTH_PASS (and the same in Label Studio's model settings), or use --host 127.0.0.1"
    )


def _serve(args: argparse.Namespace, settings: BackendSettings) -> int:
    import waitress

    from ._wsgi import create_app
    from .context import redactor_for
    from .learned_store import LearnedStoreError

    try:
        app = create_app(settings)
        app.config["SIMAGES_CONTEXT"].learned_store()  # opened now: a Redis that does not answer stops here
    except (SharedStoreUnavailable, LearnedStoreError, ValueError) as exc:  # Redis away, URL malformed, disk
        print(redactor_for(settings)(f"simages-ls: {exc}"), file=sys.stderr)
        return 2
    context = app.config["SIMAGES_CONTEXT"]
    warning = open_binding_warning(args.host, settings)
    if warning:
        logging.getLogger("simages_label_studio").warning(warning)
    logging.getLogger("simages_label_studio").info(
        "serving on http://%s:%d, API %s", args.host, args.port, context.api_url
    )
    # SIGTERM (docker stop, tests) ends the loop like Ctrl-C, so the ``finally`` below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        waitress.serve(app, host=args.host, port=args.port, threads=args.threads, ident="simages-ls")
    finally:
        context.close()  # the worker pool, the pooled sessions, the cache and the usage ledger
    return 0


class _ProgressBar:
    """A tqdm bar on stderr, made at the first call (when the run knows how many tasks it will search)."""

    def __init__(self, enabled: bool, desc: str = "expand") -> None:
        self._enabled = enabled
        self._desc = desc
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="task", desc=self._desc, file=sys.stderr, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _print_report(report: Any) -> None:
    left = f", {report.remaining} left: run again to continue" if report.remaining else ""
    print(
        f"project {report.project_id}: searched {report.searched} of {report.to_search} source tasks, "
        f"added {report.added} tasks{left}"
    )
    print(
        f"  {report.requests} requests, {report.chunks} imports; {report.skipped_existing} similar images "
        f"already in the project; {report.resumed} source tasks expanded and {report.searched_before} "
        f"searched by an earlier run (not searched again); {len(report.failed_tasks)} source tasks failed"
    )
    if report.copy_threshold is not None:
        unreadable = len(report.task_images_unreadable)
        print(
            f"copies skipped: {report.skipped_copies} (within {report.copy_threshold} bits of a task's image "
            f"or of one imported now); task images: {report.task_images_fingerprinted} fingerprinted, "
            f"{report.task_images_from_store} from the local store, {unreadable} unreadable"
            + (
                f"; {report.unscreened_images} imported unscreened (thumbnail unreadable)"
                if report.unscreened_images
                else ""
            )
        )
    for task_id, new_ids in report.landed.items():
        print(f"  task {task_id}: added tasks {', '.join(map(str, new_ids))}")
    for task_id, reason in report.failed_tasks.items():
        print(f"  task {task_id}: failed: {reason}")
    for task_id, reason in report.task_images_unreadable.items():
        print(f"  task {task_id}: image not screened against: {reason}")
    if report.stopped:
        print(f"stopped: {report.stopped}")


def _expand(args: argparse.Namespace, settings: BackendSettings) -> int:
    from .context import AccountError, redactor_for
    from .expand import ExpandError, ImportUnconfirmed, expand_project, plan_expand

    redact = redactor_for(settings)
    show = not (args.no_progress or args.json or args.dry_run)
    bar = _ProgressBar(show)
    fingerprint_bar = _ProgressBar(show, desc="fingerprint task images")
    try:
        if args.dry_run:
            plan = plan_expand(
                args.project,
                task_ids=args.tasks,
                max_requests=args.max_requests,
                per_task=args.per_task,
                min_score=args.min_score,
                screen_copies=not args.no_screen_copies,
                copy_threshold=args.copy_threshold,
                settings=settings,
            )
            print(json.dumps(dataclasses.asdict(plan), indent=2) if args.json else plan.describe())
            return 0
        report = expand_project(
            args.project,
            task_ids=args.tasks,
            per_task=args.per_task,
            min_score=args.min_score,
            max_requests=args.max_requests,
            chunk_size=args.chunk_size,
            screen_copies=not args.no_screen_copies,
            copy_threshold=args.copy_threshold,
            settings=settings,
            progress=bar,
            fingerprint_progress=fingerprint_bar,
        )
    except KeyboardInterrupt:
        fingerprint_bar.close()
        bar.close()
        print(
            "simages-ls: interrupted; imported chunks stay in the project, run the same command again to "
            "continue",
            file=sys.stderr,
        )
        return 130
    except ImportUnconfirmed as exc:
        print(redact(f"simages-ls: {exc}"), file=sys.stderr)
        return 1
    except ExpandError as exc:
        print(redact(f"simages-ls: {exc}"), file=sys.stderr)
        return 2
    except SharedStoreUnavailable as exc:  # our own cache's Redis, not the API: not a refusal
        print(redact(f"simages-ls: {exc}"), file=sys.stderr)
        return 2
    except (AccountError, SimilarImagesError) as exc:
        print(redact(f"simages-ls: the Similar Images API refused: {exc}"), file=sys.stderr)
        return 1
    except Exception as exc:  # label-studio-sdk raises its own ApiError for HTTP errors
        status = getattr(exc, "status_code", None)
        if status is None:
            raise
        print(
            redact(f"simages-ls: Label Studio answered {status}: {getattr(exc, 'body', '')}"), file=sys.stderr
        )
        return 1
    finally:
        fingerprint_bar.close()
        bar.close()
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2))
    else:
        _print_report(report)
    if report.failed_chunk is not None or report.api_unreachable or report.api_refused:
        print(redact(f"simages-ls: stopped: {report.stopped}"), file=sys.stderr)
        return 1
    if report.failed_tasks:
        print(
            f"simages-ls: {len(report.failed_tasks)} source tasks failed (listed above): run the same "
            "command again to retry them",
            file=sys.stderr,
        )
        return 3
    return 0


def _settings_errors(exc: ValidationError) -> str:
    """One line per bad variable, without its value: a URL or key may hold a secret."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"  {name}: {error['msg']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = BackendSettings()
    except ValidationError as exc:
        print(f"simages-ls: invalid settings:\n{_settings_errors(exc)}", file=sys.stderr)
        return 2
    from .context import redactor_for

    handler = logging.StreamHandler()
    # On the handler, so records of every logger (the core client's too) pass through it.
    handler.addFilter(redactor_for(settings))
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[handler],
    )
    if args.command == "serve":
        return _serve(args, settings)
    if args.command == "labels":
        from .learned_report import print_learned

        return print_learned(args.project, settings, as_json=args.json)
    if not args.verbose:
        _quiet_libraries()
    return _expand(args, settings)


def _project_arg(value: str) -> str:
    head, _, tail = value.strip().partition(".")
    if not head.isdigit() or int(head) < 1 or (tail and not tail.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a project id like 7 or 7.1712345678, got {value!r}")
    return value.strip()


QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "label_studio_sdk")
"""Libraries whose records ``expand`` hides unless ``--verbose``: a line per HTTP request (the 404 that
ends paging too, which reads like an error) and the SDK's warning about ``localhost`` in Docker."""


def _quiet_libraries() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    raise SystemExit(main())
