"""``simages-ls expand`` on a 1,000-task project in a real Label Studio: wall time, peak memory, copy screening.

The local server indexes thousands of distinct generated photos (``bench/photos.py``'s
``write_clustered_photos``: clusters of photos sharing colours, none a copy of another under the
core's fingerprint; one query photo per cluster, indexed too) with 100 ms added to every answer,
its images and thumbnails included (a distant API and its CDN), and 128 threads (a CDN serves many
connections at once). A project's tasks are the query photos' own ``/images/{id}`` URLs, so each
search finds the task itself (skipped by URL) and its cluster's photos: the run imports about three
new tasks per source task, thousands in all. (``write_photos``' noisy photos will not do: most of
them are copies of one another under the multi-crop fingerprint, and a screened run imports a
dozen.) Label Studio 1.23
runs from ``.venv-ls``, its import API included. ``expand`` runs as a subprocess, as a user runs it,
and its resident memory is sampled every 20 ms for its peak; the timed span is the run's own
(``seconds`` in its report: listing, fingerprinting the task images, searches, thumbnails, imports),
the process's wall time (plus interpreter start-up) is printed too. The baseline, in the same run,
is the same command with one worker and no screening (a sequential loop: one search after another)
on a 100-task project, scaled per task. The latency-bound ideal for ``W`` workers is
``ceil(requests / W) * latency``; but no client can import faster than Label Studio itself, so the
bench also times, in the same run, Label Studio importing exactly the tasks the screened run made
(their data and predictions, read back, into a fresh project, in chunks of expand's 200, one after
another): the import floor. Ratios are against max(search ideal, import floor). Targets: both the screened run (the default) and the unscreened
one within 1.5x of the ideal; peak RSS for 1,000 tasks close to that for 250 (the run streams, so
memory does not grow with the project). The screening on/off ratio is printed; a screened first run
downloads every task image once (the next run finds them in its local store).

Run: .venv/bin/python bench/bench_ls_expand.py [--tasks 1000] [--small 250] [--workers 16] [--latency-ms 100]

"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from photos import write_clustered_photos  # bench/photos.py: the script's folder is on sys.path

from simages_label_studio.testing import LabelStudioProcess
from simages_server.index import ImageIndex
from simages_server.indexing import build_index
from simages_server.testing import ServerProcess

REPO = Path(__file__).resolve().parents[1]
LABEL_STUDIO_BIN = REPO / ".venv-ls" / "bin" / "label-studio"
TOKEN = "simages0bench0token00000000000000000000"
CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="label" toName="image"><Label value="person"/><Label value="cat"/><Label value="cup"/>
<Label value="horse"/><Label value="motorcycle"/><Label value="clock"/></RectangleLabels></View>"""
PER_CLUSTER = 4  # photos like each task's (its cluster); expand asks 3 per task
PHOTO_SIZE = (128, 96)


def make_project(ls_url: str, server_url: str, ids: list[str], count: int, title: str) -> int:
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=ls_url, api_key=TOKEN)
    project = ls.projects.create(title=title, label_config=CONFIG)
    tasks = [{"data": {"image": f"{server_url}/images/{ids[k]}"}} for k in range(count)]
    for start in range(0, count, 500):
        ls.projects.import_tasks(id=project.id, request=tasks[start : start + 500])
    return int(project.id)


def import_floor(ls_url: str, project_id: int, chunk_size: int = 200) -> tuple[float, int, int]:
    """(seconds, tasks, predictions) for Label Studio to import the tasks ``expand`` made in ``project_id``."""
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=ls_url, api_key=TOKEN)
    made = [
        {
            "data": task.data,
            "predictions": [
                {"model_version": p.model_version, "score": p.score, "result": p.result}
                for p in (PredictionView(raw) for raw in (task.predictions or []))
            ],
        }
        for task in ls.tasks.list(project=project_id, fields="all")
        if "simages_source_task" in (task.data or {})
    ]
    floor = ls.projects.create(title="import floor", label_config=CONFIG)
    started = time.perf_counter()
    for start in range(0, len(made), chunk_size):
        ls.projects.import_tasks(id=floor.id, request=made[start : start + chunk_size])
    seconds = time.perf_counter() - started
    return seconds, len(made), sum(len(task["predictions"]) for task in made)


class PredictionView:
    """A task's prediction as the SDK lists it (an object, or a dict in some versions)."""

    def __init__(self, raw: object) -> None:
        get = raw.get if isinstance(raw, dict) else lambda key: getattr(raw, key, None)
        self.model_version, self.score, self.result = get("model_version"), get("score"), get("result")


def run_expand(project_id: int, env: dict[str, str], *extra: str) -> tuple[float, int, dict]:
    """(wall seconds, peak RSS in bytes, the JSON report) of one ``simages-ls expand`` process."""
    args = [sys.executable, "-m", "simages_label_studio", "expand", "--project", str(project_id)]
    args += ["--per-task", "3", "--json", "--no-progress", *extra]
    started = time.perf_counter()
    peak = 0
    # Files, not pipes: the JSON report of thousands of tasks outgrows a pipe's buffer while we only poll.
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        with subprocess.Popen(args, env=env, stdout=out_file, stderr=err_file, text=True) as proc:
            watched = psutil.Process(proc.pid)
            try:
                while proc.poll() is None:
                    try:
                        peak = max(peak, watched.memory_info().rss)
                    except psutil.NoSuchProcess:
                        break
                    time.sleep(0.02)
                proc.wait(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.kill()
        wall = time.perf_counter() - started
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if proc.returncode != 0:
        raise SystemExit(f"expand failed ({proc.returncode}): {err[-2000:]}")
    return wall, peak, json.loads(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--small", type=int, default=250)
    parser.add_argument("--baseline-tasks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    if not LABEL_STUDIO_BIN.exists():
        raise SystemExit(f"Label Studio is not installed at {LABEL_STUDIO_BIN}: run scripts/install.sh")

    with tempfile.TemporaryDirectory(prefix="bench-ls-expand-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        write_clustered_photos(
            tmp / "photos" / "collection",
            tmp / "photos" / "queries",
            args.tasks,
            PER_CLUSTER,
            size=PHOTO_SIZE,
        )
        generated = time.perf_counter() - started
        started = time.perf_counter()
        build_index(tmp / "photos", tmp / "index", progress=False)
        indexed = time.perf_counter() - started
        records = ImageIndex.load(tmp / "index").records
        ids = [r.id for r in sorted(records, key=lambda r: r.file) if r.file.startswith("queries/")]
        print(
            f"collection: {len(records)} generated photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} ({generated:.1f} s "
            f"to make), indexed in {indexed:.1f} s ({len(records) / indexed:.0f} img/s)"
        )
        server = ServerProcess(
            tmp / "index",
            api_keys=("bench",),
            latency_ms=args.latency_ms,
            state=tmp,
            log_path=tmp / "s.log",
            extra_args=("--threads", "128"),
        )
        label_studio = LabelStudioProcess(LABEL_STUDIO_BIN, tmp / "ls", token=TOKEN)
        with server, label_studio:
            env = {
                **os.environ,
                "SIMAGES_API_URL": server.url,
                "SIMAGES_API_KEY": "bench",
                "SIMAGES_CACHE": "0",
                "SIMAGES_HOME": str(tmp / "home"),
                "SIMAGES_MAX_WORKERS": str(args.workers),
                "LABEL_STUDIO_URL": label_studio.url,
                "LABEL_STUDIO_API_KEY": TOKEN,
                "LOG_LEVEL": "WARNING",
            }
            base_id = make_project(label_studio.url, server.url, ids, args.baseline_tasks, "baseline")
            small_id = make_project(label_studio.url, server.url, ids, args.small, "small")
            off_id = make_project(label_studio.url, server.url, ids, args.tasks, "big, unscreened")
            on_id = make_project(label_studio.url, server.url, ids, args.tasks, "big, screened")

            seq_wall, _, seq = run_expand(base_id, {**env, "SIMAGES_MAX_WORKERS": "1"}, "--no-screen-copies")
            small_wall, small_rss, small = run_expand(small_id, env)
            off_wall, off_rss, off = run_expand(off_id, env, "--no-screen-copies")
            wall, rss, report = run_expand(on_id, env)
            floor, floor_tasks, floor_predictions = import_floor(label_studio.url, on_id)

    # The run's own time (listing, searches, imports), from its report; the process's wall time adds a
    # constant ~2 s of interpreter and label-studio-sdk start-up, printed apart.
    run, run_off = report["seconds"], off["seconds"]
    per_task_seq = seq["seconds"] / max(1, seq["requests"])
    sequential = per_task_seq * report["requests"]
    search_ideal = math.ceil(report["requests"] / args.workers) * latency
    # The unscreened run imports more tasks than the screened one: its floor is scaled per task.
    floor_per_task = floor / max(1, floor_tasks)
    ideals = {
        "unscreened": max(search_ideal, floor_per_task * off["added"]),
        "screened": max(search_ideal, floor_per_task * report["added"]),
    }
    print(f"tasks={args.tasks} workers={args.workers} latency={args.latency_ms:.0f}ms per_task=3")
    print(
        f"sequential loop (1 worker, unscreened, {seq['requests']} tasks, scaled): {sequential:7.2f}s "
        f"({per_task_seq * 1000:.0f} ms per task)"
    )
    print(
        f"search ideal ({args.workers} workers): {search_ideal:.2f}s; import floor: Label Studio imports the "
        f"{floor_tasks} tasks ({floor_predictions} predictions) the screened run made in {floor:.2f}s "
        f"({floor_per_task * 1000:.1f} ms per task), sequential chunks of 200"
    )
    for name, r, w in (("unscreened", off, off_wall), ("screened", report, wall)):
        ideal = ideals[name]
        print(
            f"expand {name}: {r['requests']} requests, {r['added']} tasks imported in {r['chunks']} chunk(s), "
            f"{r['skipped_copies']} copies skipped, {r['task_images_fingerprinted']} task images fingerprinted: "
            f"{r['seconds']:7.2f}s  ideal max(search, import floor) {ideal:.2f}s  ratio {r['seconds'] / ideal:.2f}x "
            f"(target <= 1.5x), ratio to the search ideal alone {r['seconds'] / search_ideal:.2f}x  "
            f"speed-up {sequential / r['seconds']:.1f}x  (process {w:.2f}s, start-up included)"
        )
    print(f"screening on/off: {run / run_off:.2f}x ({run - run_off:+.2f}s)")
    print(
        f"  screened project of {args.small}: run {small['seconds']:.2f}s, process {small_wall:.2f}s, "
        f"{small['requests']} requests, {small['added']} added; sequential loop process {seq_wall:.2f}s"
    )
    growth = rss / small_rss
    print(
        f"peak RSS of expand (screened): {small_rss / 2**20:.1f} MiB for {args.small} tasks, {rss / 2**20:.1f} MiB "
        f"for {args.tasks} tasks (x{growth:.2f} for x{args.tasks / args.small:.0f} tasks; target <= 1.25x); "
        f"unscreened {off_rss / 2**20:.1f} MiB"
    )
    ok = run / ideals["screened"] <= 1.5 and run_off / ideals["unscreened"] <= 1.5 and growth <= 1.25
    print("OK" if ok else "MISSED TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
