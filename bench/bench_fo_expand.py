"""FiftyOne expand benchmark: ``expand_dataset`` over 250 and 1,000 samples, copy screening on and off.

A local server over a generated collection (``bench/photos.py``: 1,000 clusters of 4 small photos
sharing their colours, none a copy of another) adds a fixed latency (default 100 ms) to every
request, thumbnails and image downloads included. The query samples are one more photo of each
cluster (not copies of the collection either), so each finds mostly its own cluster and the
1,000-sample expansion imports thousands of different images. Measured in the same run:

- wall time of ``expand_dataset(view, 3)`` with copy screening off against the latency-bound
  ideal for the chosen concurrency: searches on ``--workers`` threads and downloads on the
  download pool's threads run concurrently, so the ideal is the larger of
  ``ceil(searches / workers)`` and ``ceil(downloads / download workers)`` times the latency
  (target: within 1.3x at the largest view, 1,000 samples by default);
- the same expansion with copy screening on (the dataset's samples fingerprinted first, every
  candidate's thumbnail fetched and fingerprinted before its download): target within 1.1x of
  the run with screening off, at every size;
- the same searches through ``search_many`` alone (nothing imported): what the machine's cores
  allow, so expand's own overhead is visible apart from a CPU bound;
- a sequential loop (search, download what is new, ``add_sample``, one at a time) over
  ``--baseline-samples`` samples, scaled per sample, for the speed-up;
- each figure is the fastest of ``--rounds`` alternating off/on runs (default 2), each in a fresh
  process and on a fresh dataset (so every screened run fingerprints its samples first);
- peak RSS growth of the expand: it must not scale with the view
  (target, screening on: growth at 1,000 samples below 1.5x the growth at 250 plus 25 MB).

Run: .venv/bin/python bench/bench_fo_expand.py [--samples 250 1000] [--latency-ms 100] [--workers 16]
FiftyOne's database is the one FiftyOne is configured with (``FIFTYONE_DATABASE_DIR`` etc.).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repo, for `fiftyone_plugin` before it is installed

API_KEY = "bench-key"
PER_SAMPLE = 3
PHOTO_SIZE = (128, 96)
"""Collection and query photos are small, so that encoding them (client), embedding them (server)
and indexing the collection on the same shared cores do not bound the run instead of the latency."""
PER_CLUSTER = 4


def child(args: argparse.Namespace) -> int:
    """One measured expand in this fresh process; prints a JSON line."""
    import fiftyone as fo
    import psutil

    import simages_fiftyone
    from simages_core import SimilarImagesClient

    files = sorted(Path(args.query_dir).iterdir())[: args.child]
    name = f"bench-expand-{uuid.uuid4().hex[:8]}"
    dataset = fo.Dataset(name)
    try:
        dataset.add_samples([fo.Sample(filepath=str(f)) for f in files], progress=False)
        with SimilarImagesClient(api_key=API_KEY, base_url=args.url, cache=False, usage=None) as client:
            client.search(text="warm up", num_similar=1)
            me = psutil.Process()
            rss_before = me.memory_info().rss
            peak = [rss_before]
            done = threading.Event()

            def watch_rss() -> None:  # sampled every 10 ms: a peak between progress events counts too
                while not done.wait(0.01):
                    peak[0] = max(peak[0], me.memory_info().rss)

            watcher = threading.Thread(target=watch_rss, daemon=True)
            watcher.start()
            cpu_before = me.cpu_times()
            started = time.perf_counter()
            result = simages_fiftyone.expand_dataset(
                dataset.view(),
                PER_SAMPLE,
                media_dir=str(Path(args.media_root) / name),
                max_workers=args.workers,
                batch_size=args.batch_size,
                client=client,
                screen_copies=args.screen == "on",
            )
            elapsed = time.perf_counter() - started
            cpu_after = me.cpu_times()
            done.set()
            watcher.join()
        assert result.complete and result.requests_this_run == len(files), result
        print(
            json.dumps(
                {
                    "samples": len(files),
                    "seconds": elapsed,
                    "searches": result.requests_this_run,
                    "imported": result.imported,
                    "skipped": result.skipped_duplicates,
                    "copies": result.skipped_copies,
                    "failed": result.failed_downloads,
                    "fingerprinted": result.fingerprints_computed,
                    "screen": args.screen,
                    "rss_growth_mb": (peak[0] - rss_before) / 2**20,
                    "cpu_s": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
                }
            )
        )
    finally:
        fo.delete_dataset(name)
    return 0


def sequential_loop(url: str, files: list[Path], media: Path) -> tuple[float, float, int]:
    """What a script without the plugin does: one search, then each new image downloaded and added.

    Returns (seconds searching, seconds downloading and adding, images imported), both scaled by
    the caller to the view's size (queries of the view find different images).
    """
    import fiftyone as fo
    import requests
    from PIL import Image

    from simages_core import SimilarImagesClient
    from simages_fiftyone._outcomes import QueryLabel, RankedImage
    from simages_fiftyone._samples import SampleSpec, build_sample

    media.mkdir(parents=True, exist_ok=True)
    dataset = fo.Dataset(f"bench-expand-loop-{uuid.uuid4().hex[:8]}")
    spec = SampleSpec(tag="loop")
    seen: set[str] = set()
    imported = 0
    try:
        dataset.add_samples([fo.Sample(filepath=str(f)) for f in files], progress=False)
        with (
            SimilarImagesClient(api_key=API_KEY, base_url=url, cache=False, usage=None) as client,
            requests.Session() as session,
        ):
            client.search(text="warm up", num_similar=1)
            searching = 0.0
            started = time.perf_counter()
            for sample_id, path in zip(*dataset.values(["id", "filepath"]), strict=True):
                t0 = time.perf_counter()
                result = client.search(image=path, num_similar=PER_SAMPLE, labels=True)
                searching += time.perf_counter() - t0
                for rank, image in enumerate(result.images, start=1):
                    if image.id in seen:
                        continue
                    seen.add(image.id)
                    response = session.get(image.url, timeout=30)
                    response.raise_for_status()
                    dest = media / f"{image.id}.jpg"
                    dest.write_bytes(response.content)
                    with Image.open(dest) as img:
                        width, height = img.size
                    ranked = RankedImage(image=image, rank=rank, query=QueryLabel("sample", sample_id))
                    dataset.add_sample(build_sample(ranked, dest, width, height, spec))
                    imported += 1
            return searching, time.perf_counter() - started - searching, imported
    finally:
        dataset.delete()


def search_only(url: str, files: list[Path], workers: int) -> float:
    """The same searches through the core's ``search_many`` alone, same concurrency, nothing imported.

    What the machine allows: on a few shared cores the client's encoding and the server's
    embedding can bound the run before the latency does; expand's own overhead is its time over this.
    """
    from simages_core import Query, SimilarImagesClient

    with SimilarImagesClient(api_key=API_KEY, base_url=url, cache=False, usage=None) as client:
        queries = [Query(image=f, num_similar=PER_SAMPLE, labels=True) for f in files]
        started = time.perf_counter()
        items = client.search_many(queries, max_workers=workers)
        elapsed = time.perf_counter() - started
    assert all(item.ok for item in items)
    return elapsed


def _cpu_seconds(pid: int | None) -> float:
    """User and system CPU seconds a process has used so far."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--baseline-samples", type=int, default=100)
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating off/on runs per size; the fastest counts"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--screen", choices=("on", "off"), default="on", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--query-dir", help=argparse.SUPPRESS)
    parser.add_argument("--media-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["SIMAGES_CACHE"] = "0"
    if args.child:
        return child(args)

    from photos import write_clustered_photos

    from simages_fiftyone import DownloadPolicy
    from simages_server.indexing import build_index
    from simages_server.testing import ServerProcess

    latency = args.latency_ms / 1000
    download_workers = DownloadPolicy().max_workers
    with tempfile.TemporaryDirectory(prefix="bench-fo-expand-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        files = write_clustered_photos(
            root / "collection", root / "queries", max(args.samples), PER_CLUSTER, size=PHOTO_SIZE
        )
        generated = time.perf_counter() - started
        started = time.perf_counter()
        report = build_index(root / "collection", root / "index", progress=False)
        indexed = time.perf_counter() - started
        collection = max(args.samples) * PER_CLUSTER
        print(
            f"collection: {collection} generated photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} "
            f"({generated:.1f} s to make), indexed in {indexed:.1f} s ({collection / indexed:.0f} img/s, "
            f"{report.added} added, {len(getattr(report, 'copies', ()))} reported as copies by the indexer)"
        )
        runs = []
        with ServerProcess(
            root / "index",
            api_keys=(API_KEY,),
            latency_ms=args.latency_ms,
            state=root / "state",
            # a real API and CDN serve many connections at once: searches, downloads and thumbnails
            extra_args=("--threads", "128"),
        ) as server:
            loop_search_s, loop_rest_s, loop_imported = sequential_loop(
                server.url, files[: args.baseline_samples], root / "loop"
            )
            floor = {n: search_only(server.url, files[:n], args.workers) for n in sorted(args.samples)}
            for n in sorted(args.samples):
                # Off and on alternate, and the fastest of each is kept: a burst of load elsewhere on
                # the machine then slows one round of both rather than deciding the comparison.
                for screen in ("off", "on") * args.rounds:
                    server_cpu = _cpu_seconds(server.pid)
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            str(n),
                            "--url",
                            server.url,
                            "--query-dir",
                            str(root / "queries"),
                            "--media-root",
                            str(root / "media"),
                            "--workers",
                            str(args.workers),
                            "--batch-size",
                            str(args.batch_size),
                            "--screen",
                            screen,
                        ],
                        capture_output=True,
                        text=True,
                    )
                    if out.returncode != 0:
                        raise SystemExit(f"the {screen} run of {n} samples failed:\n{out.stderr[-3000:]}")
                    run = json.loads(out.stdout.strip().splitlines()[-1])
                    run["server_cpu_s"] = _cpu_seconds(server.pid) - server_cpu
                    runs.append(run)

    per_search = loop_search_s / args.baseline_samples
    per_download = loop_rest_s / max(loop_imported, 1)
    print(
        f"{PER_SAMPLE} similar per sample, {args.latency_ms:.0f} ms added per request, "
        f"{args.workers} concurrent searches, {download_workers} concurrent downloads, batches of {args.batch_size}, "
        f"fastest of {args.rounds} alternating rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"sequential loop over {args.baseline_samples} samples: {loop_search_s:.2f} s searching "
        f"({per_search * 1000:.0f} ms/search), {loop_rest_s:.2f} s downloading and adding {loop_imported} images"
    )
    ok = True
    largest = max(args.samples)
    by_size: dict[int, dict[str, dict]] = {}
    for run in runs:
        best = by_size.setdefault(run["samples"], {}).get(run["screen"])
        if best is None or run["seconds"] < best["seconds"]:
            by_size[run["samples"]][run["screen"]] = run
    for n, pair in sorted(by_size.items()):
        off, on = pair["off"], pair["on"]
        ideal = (
            max(math.ceil(off["searches"] / args.workers), math.ceil(off["imported"] / download_workers))
            * latency
        )
        ratio = off["seconds"] / ideal
        screened = on["seconds"] / off["seconds"]
        # the loop's searches scale with the view, and so do its downloads (each query finds its own images)
        speedup = (per_search * n + per_download * off["imported"]) / off["seconds"]
        searches_alone = floor[n]
        # The latency target is the issue's, at the largest view; smaller views are printed for the RSS
        # comparison, where the fixed start (the first batch) weighs more. Screening's cost is held at every size.
        targeted = n == largest
        ok &= (ratio <= 1.3 or not targeted) and screened <= 1.1
        print(
            f"expand {n:5d} samples, screening off: {off['seconds']:6.2f} s, ideal {ideal:5.2f} s -> "
            f"{ratio:4.2f}x ideal{' (target <= 1.3)' if targeted else ''}; search_many alone {searches_alone:5.2f} s "
            f"({searches_alone / ideal:4.2f}x ideal); {speedup:5.1f}x the loop scaled to this size; "
            f"{off['imported']} imported, {off['skipped']} duplicates skipped, {off['failed']} failed; "
            f"peak RSS growth {off['rss_growth_mb']:.1f} MB; CPU: expand {off['cpu_s']:.1f} s, server {off['server_cpu_s']:.1f} s"
        )
        print(
            f"expand {n:5d} samples, screening on:  {on['seconds']:6.2f} s -> {screened:4.2f}x screening off "
            f"(target <= 1.1); {on['fingerprinted']} samples fingerprinted, {on['imported']} imported, "
            f"{on['copies']} copies and {on['skipped']} duplicates skipped, {on['failed']} failed; "
            f"peak RSS growth {on['rss_growth_mb']:.1f} MB; CPU: expand {on['cpu_s']:.1f} s, server {on['server_cpu_s']:.1f} s"
        )
    sizes = sorted(by_size)
    small, large = by_size[sizes[0]]["on"], by_size[sizes[-1]]["on"]
    if small is not large:
        bounded = large["rss_growth_mb"] <= 1.5 * small["rss_growth_mb"] + 25
        ok &= bounded
        print(
            f"RSS growth (screening on) {small['samples']} -> {large['samples']} samples: {small['rss_growth_mb']:.1f} -> "
            f"{large['rss_growth_mb']:.1f} MB ({'bounded' if bounded else 'GROWS with the view'})"
        )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
