"""The local server's ANN index at scale: 1,000,000 × 512 clustered embeddings served over HTTP.

Writes a real index folder (manifest, embeddings.npy, the ANN file and index.json; no image
files: a query by the URL of an indexed image is resolved to its own row, so it exercises
the search path end to end), builds the ANN index with the server's own code (train, add
and tune nprobe over the first rows, then grow it by the rest and tune again, the way
`simages-server index` grows it), and serves it with a real `simages-server serve` on loopback.

Two kinds of unit rows (`--data`, default the harder `shared`):
- `shared`: a cone, like CLIP image embeddings: every row = a common mean direction + a
  handful of dominant directions shared by all clusters, with large variance + its
  cluster's offset + a decaying-spectrum residual (random pairs have cosine ~0.5). The
  shared directions cut every cluster across many IVF lists: a fixed nprobe fails here.
- `separate`: Gaussian clusters each stretched along its own axes (the easy kind for IVF).
Queries are 1,000 indexed images chosen at random, none of them a tuning sample (held out).

Printed per kind: build and growth time (tuning included, and its share), the tuned nprobe
and its sample recall, p50/p99 HTTP latency, recall@10 against exact search (the query
image itself left out), and the server's resident memory against the raw vectors.
Baseline in the same run: the same index served with exact search (index.json without the
ANN record), p50/p99 over `--baseline-queries`. Targets: ANN p50 < 20 ms, recall@10 ≥ 0.95,
RSS ≤ 2x the raw float32 vectors.

Run: nice .venv/bin/python bench/bench_ann.py [--size 1000000] [--data shared|separate|both]
(at 1M on 2 cores: ~6 min for shared, ~4 min for separate)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from simages_core import SimilarImagesClient
from simages_server.ann import AnnIndex, remove_stale
from simages_server.ann_tuning import tuning_sample
from simages_server.index import LEGACY_FORMAT, IndexedImage, image_id_for
from simages_server.testing import ServerProcess

CHUNK = 50_000
EMBEDDER = "descriptor-v1"  # what the server runs for image queries; url queries of own images need no model


SHARED_DIRECTIONS = 8
"""Dominant directions every cluster varies along (CLIP embeddings have a handful)."""


def write_shared(path: Path, n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """``n`` unit rows in a cone (see the module docstring) into a .npy memory map, chunk by chunk.

    Norms before normalising: mean 1, cluster offset 0.5, shared part ~0.6 (std 0.45·i^-0.5 on
    direction i), residual 0.35; random pairs then have cosine ~0.50, nearest neighbours ~0.84.
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    mean, dominant, rest = basis[:, 0], basis[:, 1 : 1 + SHARED_DIRECTIONS], basis[:, 1 + SHARED_DIRECTIONS :]
    dominant_std = (0.45 * np.arange(1, SHARED_DIRECTIONS + 1) ** -0.5).astype(np.float32)
    offsets = rng.standard_normal((clusters, rest.shape[1])).astype(np.float32) @ rest.T
    offsets *= 0.5 / np.linalg.norm(offsets, axis=1, keepdims=True)
    # Clusters sit at different places along the shared directions too, but spread far less than rows do.
    offsets += (rng.standard_normal((clusters, SHARED_DIRECTIONS)).astype(np.float32) * dominant_std * 0.5) @ dominant.T
    spectrum = (np.arange(1, dim + 1) ** -0.6).astype(np.float32)
    stretch = (rng.permuted(np.tile(spectrum, (clusters, 1)), axis=1) * rng.lognormal(0, 0.5, (clusters, dim))).astype(
        np.float32
    )
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        which = rng.integers(0, clusters, count)
        residual = (rng.standard_normal((count, dim), dtype=np.float32) * stretch[which]) @ basis.T
        residual *= 0.35 / np.linalg.norm(residual, axis=1, keepdims=True)
        shared = (rng.standard_normal((count, SHARED_DIRECTIONS), dtype=np.float32) * dominant_std) @ dominant.T
        chunk = mean + offsets[which] + shared + residual
        rows[start : start + count] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    rows.flush()
    return rows


def write_separate(path: Path, n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """``n`` unit rows into a .npy memory map, chunk by chunk (the bench never holds two copies)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    # Each cluster has its own principal axes: the decaying spectrum is laid on the basis in a
    # different order per cluster, and stretched at random.
    spectrum = (np.arange(1, dim + 1) ** -0.6).astype(np.float32)
    stretch = rng.permuted(np.tile(spectrum, (clusters, 1)), axis=1) * rng.lognormal(0, 0.5, (clusters, dim))
    stretch = stretch.astype(np.float32)
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        which = rng.integers(0, clusters, count)
        noise = (rng.standard_normal((count, dim), dtype=np.float32) * stretch[which]) @ basis
        noise *= (0.9 / np.linalg.norm(noise, axis=1, keepdims=True)) * rng.uniform(0.6, 1.4, (count, 1)).astype(
            np.float32
        )
        chunk = centres[which] + noise
        rows[start : start + count] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    rows.flush()
    return rows


def write_index(root: Path, rows: np.ndarray, ann: dict | None) -> None:
    meta = {
        "format": LEGACY_FORMAT,  # the flat layout (one folder, no generations), which the server still reads
        "embedder": EMBEDDER,
        "dim": int(rows.shape[1]),
        "count": len(rows),
        "images_dir": str(root / "images"),
        "models": {"embedder": {"kind": "descriptor", "name": EMBEDDER}, "detector": None},
    }
    if ann is not None:
        meta["ann"] = ann
    (root / "index.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def exact_neighbours(rows: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k positions for each query row, best first, scanning the rows in chunks."""
    q = rows[queries]
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(rows), 4 * CHUNK):
        scores = q @ rows[start : start + 4 * CHUNK].T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        merged_ids = np.concatenate([best_ids, top + start], axis=1)
        keep = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, keep, 1)
        best_ids = np.take_along_axis(merged_ids, keep, 1)
    return best_ids


def timed_queries(server: ServerProcess, ids: list[str], k: int) -> tuple[list[float], list[list[str]]]:
    times, answers = [], []
    with SimilarImagesClient(api_key=server.api_keys[0], base_url=server.url, cache=False, usage=None) as client:
        client.search(url=f"{server.url}/images/{ids[0]}", num_similar=k)  # warm-up: connection, first pages
        for image_id in ids:
            started = time.perf_counter()
            result = client.search(url=f"{server.url}/images/{image_id}", num_similar=k)
            times.append(time.perf_counter() - started)
            answers.append([image.id for image in result.images])
    return times, answers


def pct(times: list[float], q: float) -> float:
    return float(np.percentile(times, q) * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--data", choices=("shared", "separate", "both"), default="shared", help="kind of rows")
    parser.add_argument("--queries", type=int, default=1_000, help="ANN queries (latency and recall)")
    parser.add_argument("--baseline-queries", type=int, default=200, help="exact-search queries (latency)")
    parser.add_argument("--grow", type=float, default=0.05, help="share of rows added to the built index")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed)")
    args = parser.parse_args()
    failed = 0
    for kind in ("shared", "separate") if args.data == "both" else (args.data,):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:  # one kind on disk at a time
            failed += run(args, kind, Path(tmp))
    return 1 if failed else 0


def run(args: argparse.Namespace, kind: str, tmp: Path) -> int:
    k = 10
    write = write_shared if kind == "shared" else write_separate
    ann_dir, exact_dir = tmp / "ann", tmp / "exact"
    ann_dir.mkdir()
    exact_dir.mkdir()
    started = time.perf_counter()
    rows = write(ann_dir / "embeddings.npy", args.size, args.dim, args.clusters, seed=0)
    records = [IndexedImage(image_id_for(f"img{i:07d}.jpg"), f"img{i:07d}.jpg", 640, 480) for i in range(args.size)]
    with (ann_dir / "manifest.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r.to_json()) + "\n" for r in records)
    ids = [r.id for r in records]
    del records
    print(f"\n== {kind}: wrote {args.size:,} × {args.dim} rows ({args.clusters:,} clusters) in {time.perf_counter() - started:.0f} s")

    # Build over the first rows, then grow the saved index by the rest, as `simages-server index` does.
    first = args.size - int(args.size * args.grow)
    started = time.perf_counter()
    built = AnnIndex.build(rows[:first])
    info = built.write(ann_dir)
    build_s = time.perf_counter() - started
    built_nprobe, built_recall = built.nprobe, built.recall
    del built
    started = time.perf_counter()
    grown = AnnIndex.load(ann_dir, info, rows=first)
    grown.add(rows[first:])
    tune_started = time.perf_counter()
    grown.tune(rows)  # as `simages-server index` does after a growth
    tune_s = time.perf_counter() - tune_started
    info = grown.write(ann_dir)
    grow_s = time.perf_counter() - started
    remove_stale(ann_dir, info.file)
    del grown
    write_index(ann_dir, rows, info.to_json())
    file_mb = (ann_dir / info.file).stat().st_size / 2**20
    for name in ("embeddings.npy", "manifest.jsonl"):
        os.link(ann_dir / name, exact_dir / name)
    write_index(exact_dir, rows, None)

    # Held out: no query is a row either tuning run measured.
    tuned = np.union1d(tuning_sample(first), tuning_sample(args.size))
    rng = np.random.default_rng(1)
    queries = rng.choice(np.setdiff1d(np.arange(args.size), tuned), args.queries, replace=False)
    started = time.perf_counter()
    truth = exact_neighbours(rows, queries, k + 1)
    truth_s = time.perf_counter() - started
    raw_mb = rows.nbytes / 2**20
    del rows

    with ServerProcess(ann_dir, log_path=tmp / "ann.log", startup_timeout=600) as server:
        times, answers = timed_queries(server, [ids[q] for q in queries], k + 1)
        assert server.pid is not None
        rss_mb = psutil.Process(server.pid).memory_info().rss / 2**20
    hits = 0
    for q, answer, exact in zip(queries, answers, truth, strict=True):
        want = [ids[i] for i in exact if i != q][:k]
        got = [image_id for image_id in answer if image_id != ids[q]][:k]
        hits += len(set(want) & set(got))
    recall = hits / (k * len(queries))

    base_ids = [ids[q] for q in queries[: args.baseline_queries]]
    with ServerProcess(exact_dir, log_path=tmp / "exact.log", startup_timeout=600) as server:
        base_times, base_answers = timed_queries(server, base_ids, k + 1)
        assert server.pid is not None
        base_rss_mb = psutil.Process(server.pid).memory_info().rss / 2**20
    # The exact server must agree with the bench's own exact search: the baseline is the truth.
    agree = statistics.mean(
        len(set(answer) & {ids[i] for i in exact}) / (k + 1) for answer, exact in zip(base_answers, truth, strict=False)
    )

    p50, p99 = pct(times, 50), pct(times, 99)
    b50, b99 = pct(base_times, 50), pct(base_times, 99)
    print(f"[{kind}] {args.size:,} images × {args.dim}-d float32 (raw {raw_mb:,.0f} MiB); faiss IVF-Flat nlist {info.nlist}")
    print(f"ANN build over {first:,} rows (train + add + tune + write)  {build_s:8.1f} s   nprobe {built_nprobe}, sample recall@10 {built_recall:.3f}")
    print(f"ANN growth: load + add {args.size - first:,} rows + tune + write {grow_s:8.1f} s   (tuning {tune_s:.1f} s)")
    print(f"tuned nprobe {info.nprobe} of {info.nlist} lists: recall@10 {info.recall:.3f} on {info.tuned_queries} sampled rows")
    print(f"ANN file                                        {file_mb:8.0f} MiB")
    print(f"exact top-{k + 1} of {args.queries:,} queries in process     {truth_s:8.1f} s (ground truth)")
    print(f"{'':40} {'p50 ms':>9} {'p99 ms':>9} {'RSS MiB':>9}")
    print(f"baseline: exact search over HTTP ({len(base_ids)} q)  {b50:9.2f} {b99:9.2f} {base_rss_mb:9.0f}")
    print(f"ANN search over HTTP ({len(times)} q)               {p50:9.2f} {p99:9.2f} {rss_mb:9.0f}   {b50 / p50:5.1f}x faster p50")
    print(f"exact server agrees with the in-process truth: {agree:.4f}")
    checks = [
        (f"ANN p50 {p50:.2f} ms < 20 ms", p50 < 20),
        (f"recall@10 {recall:.4f} ≥ 0.95 on held-out queries (query image left out)", recall >= 0.95),
        (f"server RSS {rss_mb:,.0f} MiB ≤ 2x raw ({2 * raw_mb:,.0f} MiB): {rss_mb / raw_mb:.2f}x", rss_mb <= 2 * raw_mb),
    ]
    for text, ok in checks:
        print(f"[{kind}] {text}: {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
