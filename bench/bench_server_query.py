"""Local server query latency over 10,000 indexed images, end to end over HTTP on loopback.

The index holds the demo collection plus synthetic rows up to 10,000 (real
descriptor dimensions, random unit vectors). Queries by image (decode + embed +
search), by the server's own image URL (search only) and by text are timed
through the core client. The baseline, measured in the same run, is the same
search done as a Python loop of per-image cosine similarities.
Target: p50 under 20 ms per query.

Run: .venv/bin/python bench/bench_server_query.py [--images 10000] [--queries 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from simages_core import SimilarImagesClient
from simages_server.demo import build_demo_index
from simages_server.index import ImageIndex, IndexedImage
from simages_server.testing import ServerProcess


def grow_index(index_dir: Path, total: int) -> ImageIndex:
    index = ImageIndex.load(index_dir)
    extra = total - len(index)
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(extra, index.embeddings.shape[1])).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    template = index.records[0]
    records = index.records + [
        IndexedImage(f"{i:016x}", template.file, template.width, template.height, template.detections, None)
        for i in range(extra)
    ]
    grown = ImageIndex(
        index.root, index.images_dir, records, np.concatenate([index.embeddings, rows]), index.embedder
    )
    grown.save()
    return grown


def p50_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        index = grow_index(build_demo_index(demo), args.images)
        query_vector = index.embeddings[0]

        def python_loop() -> list[int]:
            scores = [float(np.dot(row, query_vector)) for row in index.embeddings]
            return sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:10]

        baseline = p50_ms(python_loop, 5)
        in_process = p50_ms(lambda: index.nearest(query_vector, 10), args.queries)
        with ServerProcess(demo / "index", log_path=Path(tmp) / "server.log") as server:
            own_url = f"{server.url}/images/{index.records[0].id}"
            photo = demo / "images" / "chelsea_resized.jpg"
            with SimilarImagesClient(
                api_key=server.api_key, base_url=server.url, cache=False, usage=None
            ) as client:
                client.search(text="cat")
                by_url = p50_ms(lambda: client.search(url=own_url, num_similar=10), args.queries)
                by_image = p50_ms(
                    lambda: client.search(image=photo, num_similar=10, labels=True), args.queries
                )
                by_text = p50_ms(lambda: client.search(text="a cat and a cup", num_similar=10), args.queries)
    print(
        f"{len(index):,} indexed images, {index.embeddings.shape[1]}-d float32, p50 of {args.queries} queries"
    )
    print(f"baseline: Python loop of per-image cosine      {baseline:8.2f} ms")
    print(
        f"search only (one matrix product, in process)   {in_process:8.2f} ms   {baseline / in_process:6.0f}x faster"
    )
    print(f"HTTP query by own image URL (search)           {by_url:8.2f} ms")
    print(f"HTTP query by image (decode + embed + search)  {by_image:8.2f} ms")
    print(f"HTTP query by text                             {by_text:8.2f} ms")
    worst = max(by_url, by_image, by_text)
    ok = worst < 20
    print(f"worst p50 {worst:.2f} ms (target < 20 ms): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
