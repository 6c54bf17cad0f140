"""FiftyOne import benchmark: ``import_similar`` against a naive sequential download-then-``add_sample`` loop.

A local server over the demo collection adds a fixed latency (default 100 ms) to every
request, image downloads included, as a distant API and CDN would. Both runs ask the same
search (an image, labels on, cache off) and write the same samples (same fields, same boxes) into
their own throwaway dataset and folder; only the download and insert strategy differs.
Target: the plugin at least 8x faster than the loop.

Run: .venv/bin/python bench/bench_fo_import.py [--images 50] [--latency-ms 100] [--workers 32]
FiftyOne's database is the one FiftyOne is configured with (``FIFTYONE_DATABASE_DIR`` etc.).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import fiftyone as fo
import requests
from PIL import Image

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # the repo, for `fiftyone_plugin` before it is installed
import simages_fiftyone
from simages_core import SimilarImagesClient
from simages_fiftyone import DownloadPolicy
from simages_fiftyone._outcomes import QueryLabel, RankedImage
from simages_fiftyone._samples import SampleSpec, build_sample
from simages_server.demo import build_demo_index
from simages_server.testing import ServerProcess

API_KEY = "bench-key"
QUERY_IMAGE = "astronaut.jpg"


def naive_import(client: SimilarImagesClient, dataset: fo.Dataset, query: Path, media: Path, n: int) -> int:
    """What a script without the plugin does: search, then one download and one insert at a time."""
    result = client.search(image=query, num_similar=n, labels=True)
    spec = SampleSpec(tag="naive")
    with requests.Session() as session:
        for rank, image in enumerate(result.images, start=1):
            response = session.get(image.url, timeout=30)
            response.raise_for_status()
            path = media / f"{image.id}.jpg"
            path.write_bytes(response.content)
            with Image.open(path) as img:
                width, height = img.size
            ranked = RankedImage(image=image, rank=rank, query=QueryLabel("upload", query.name))
            dataset.add_sample(build_sample(ranked, path, width, height, spec))
    return len(result.images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=DownloadPolicy().max_workers)
    args = parser.parse_args()
    os.environ["SIMAGES_CACHE"] = "0"
    with tempfile.TemporaryDirectory(prefix="bench-fo-") as tmp:
        root = Path(tmp)
        index_dir = build_demo_index(root / "demo")
        images_dir = root / "demo" / "images"
        names = [f"bench-fo-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("naive", "plugin")]
        naive_ds, plugin_ds = fo.Dataset(names[0]), fo.Dataset(names[1])
        try:
            with (
                ServerProcess(
                    index_dir,
                    api_keys=(API_KEY,),
                    latency_ms=args.latency_ms,
                    state=root / "state",
                    # a CDN serves many connections at once; the default 16 threads would queue them
                    extra_args=("--threads", "64"),
                ) as server,
                SimilarImagesClient(api_key=API_KEY, base_url=server.url, cache=False, usage=None) as client,
            ):
                client.search(text="warm up", num_similar=1)
                (root / "naive").mkdir()
                started = time.perf_counter()
                n_naive = naive_import(
                    client, naive_ds, images_dir / QUERY_IMAGE, root / "naive", args.images
                )
                naive = time.perf_counter() - started

                started = time.perf_counter()
                result = simages_fiftyone.import_similar(
                    plugin_ds,
                    image=images_dir / QUERY_IMAGE,
                    num_similar=args.images,
                    labels=True,
                    media_dir=str(root / "plugin"),
                    client=client,
                    policy=DownloadPolicy(max_workers=args.workers),
                    # The demo's answers to a demo photo are copies of one another: screening would
                    # import a few of the 50, and the loop has none. The strategies compare on the
                    # same 50 images; screening's cost is measured by bench_fo_expand.py.
                    screen_copies=False,
                )
                plugin = time.perf_counter() - started
            assert n_naive == result.imported == len(plugin_ds) == len(naive_ds), (n_naive, result)
            boxes = sum(len(s.detections.detections) for s in plugin_ds if s.detections)
        finally:
            for name in names:
                if fo.dataset_exists(name):
                    fo.delete_dataset(name)
    print(f"{result.imported} images with labels ({boxes} boxes), {args.latency_ms:.0f} ms added per request")
    print(f"naive sequential loop:      {naive:6.2f} s")
    print(f"import_similar ({args.workers} workers): {plugin:6.2f} s")
    print(f"speed-up:                   {naive / plugin:5.1f}x   (target >= 8)")
    ok = naive / plugin >= 8
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
