"""FiftyOne expand benchmark: ``expand_dataset`` over 250 and 1,000 samples against a sequential loop.

A local server over the demo collection adds a fixed latency (default 100 ms) to every request,
image downloads included. The query samples are 1,000 files made on disk from the demo's 57
images (each a slightly resized, re-encoded copy: different bytes, same content), so most
answers are duplicates and deduplication is part of the work. Measured in the same run:

- wall time of ``expand_dataset(view, 3)`` against the latency-bound ideal for the chosen
  concurrency, ``ceil(searches / workers) x latency`` (target: within 1.3x at the largest view,
  1,000 samples by default);
- the same searches through ``search_many`` alone (nothing imported): what the machine's cores
  allow, so expand's own overhead is visible apart from a CPU bound;
- a sequential loop (search, download what is new, ``add_sample``, one at a time) over
  ``--baseline-samples`` samples, scaled per sample, for the speed-up;
- peak RSS growth of the expand, each size in a fresh process: it must not scale with the view
  (target: growth at 1,000 samples below 1.5x the growth at 250 plus 25 MB).

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
QUERY_SIDE = 160
"""Longest side of the query files: small, so that encoding them (client) and embedding them
(server) on the same shared cores does not bound the run instead of the latency being measured."""


def make_query_files(images_dir: Path, out: Path, n: int) -> list[Path]:
    """``n`` query files: copies of the demo images, each resized by a different small factor."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    files = []
    for i in range(n):
        src = sources[i % len(sources)]
        side = QUERY_SIDE - (i // len(sources))  # a different size for every copy: different bytes
        dest = out / f"q{i:05d}.jpg"
        with Image.open(src) as img:
            rgb = img.convert("RGB")
            rgb.thumbnail((side, side))
            rgb.save(dest, quality=90)
        files.append(dest)
    return files


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
            started = time.perf_counter()
            result = simages_fiftyone.expand_dataset(
                dataset.view(),
                PER_SAMPLE,
                media_dir=str(Path(args.media_root) / name),
                max_workers=args.workers,
                batch_size=args.batch_size,
                client=client,
            )
            elapsed = time.perf_counter() - started
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
                    "rss_growth_mb": (peak[0] - rss_before) / 2**20,
                }
            )
        )
    finally:
        fo.delete_dataset(name)
    return 0


def sequential_loop(url: str, files: list[Path], media: Path) -> tuple[float, float, int]:
    """What a script without the plugin does: one search, then each new image downloaded and added.

    Returns (seconds searching, seconds downloading and adding, images imported): searches scale
    with the view, downloads with the distinct images found (all 57 within the first ~100 samples).
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--baseline-samples", type=int, default=100)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--query-dir", help=argparse.SUPPRESS)
    parser.add_argument("--media-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["SIMAGES_CACHE"] = "0"
    if args.child:
        return child(args)

    from simages_server.demo import build_demo_index
    from simages_server.testing import ServerProcess

    latency = args.latency_ms / 1000
    with tempfile.TemporaryDirectory(prefix="bench-fo-expand-") as tmp:
        root = Path(tmp)
        index_dir = build_demo_index(root / "demo")
        images_dir = root / "demo" / "images"
        files = make_query_files(images_dir, root / "queries", max(args.samples))
        runs = []
        with ServerProcess(
            index_dir,
            api_keys=(API_KEY,),
            latency_ms=args.latency_ms,
            state=root / "state",
            extra_args=("--threads", "64"),  # a real API serves many connections at once
        ) as server:
            loop_search_s, loop_rest_s, loop_imported = sequential_loop(server.url, files[: args.baseline_samples], root / "loop")
            floor = {n: search_only(server.url, files[:n], args.workers) for n in sorted(args.samples)}
            for n in sorted(args.samples):
                out = subprocess.run(
                    [
                        sys.executable, __file__, "--child", str(n), "--url", server.url,
                        "--query-dir", str(root / "queries"), "--media-root", str(root / "media"),
                        "--workers", str(args.workers), "--batch-size", str(args.batch_size),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))

    per_search = loop_search_s / args.baseline_samples
    print(
        f"{PER_SAMPLE} similar per sample, {args.latency_ms:.0f} ms added per request, "
        f"{args.workers} concurrent searches, batches of {args.batch_size}"
    )
    print(
        f"sequential loop over {args.baseline_samples} samples: {loop_search_s:.2f} s searching "
        f"({per_search * 1000:.0f} ms/search), {loop_rest_s:.2f} s downloading and adding {loop_imported} images"
    )
    ok = True
    for run in runs:
        ideal = math.ceil(run["searches"] / args.workers) * latency
        ratio = run["seconds"] / ideal
        # the loop's searches scale with the view; its downloads do not (the same distinct images)
        speedup = (per_search * run["samples"] + loop_rest_s) / run["seconds"]
        searches_alone = floor[run["samples"]]
        # The target is the issue's, at the largest view (1,000 samples); smaller views are printed for
        # the RSS comparison, where the fixed start (the first batch's downloads) weighs more.
        targeted = run is runs[-1]
        ok &= ratio <= 1.3 or not targeted
        print(
            f"expand {run['samples']:5d} samples: {run['seconds']:6.2f} s, ideal {ideal:5.2f} s -> "
            f"{ratio:4.2f}x ideal{' (target <= 1.3)' if targeted else ''}; search_many alone {searches_alone:5.2f} s "
            f"({searches_alone / ideal:4.2f}x ideal, expand {run['seconds'] / searches_alone:4.2f}x it); "
            f"{speedup:5.1f}x the loop scaled to this size; "
            f"{run['imported']} imported, {run['skipped']} duplicates skipped; "
            f"peak RSS growth {run['rss_growth_mb']:.1f} MB"
        )
    small, large = runs[0], runs[-1]
    if small is not large:
        bounded = large["rss_growth_mb"] <= 1.5 * small["rss_growth_mb"] + 25
        ok &= bounded
        print(
            f"RSS growth {small['samples']} -> {large['samples']} samples: {small['rss_growth_mb']:.1f} -> "
            f"{large['rss_growth_mb']:.1f} MB ({'bounded' if bounded else 'GROWS with the view'})"
        )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
