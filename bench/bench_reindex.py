"""Re-indexing a folder after 1% of its files changed, against a full build of it, in the same run.

A folder of ``--images`` generated photos (distinct, ``--width`` px JPEGs) is indexed from scratch
(the baseline); then ``--change`` of its files change: a third deleted, a third replaced by other
pictures, a third new, and one more file only touched (same bytes, new mtime). ``simages-server
index`` runs again over the same index folder: it must remove, re-embed and add exactly those,
and take at most ``--target`` (5%) of the full build. Exits non-zero on a miss or wrong counts.

Run: .venv/bin/python bench/bench_reindex.py [--images 10000] [--change 0.01] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from simages_server.indexing import build_index


def photo(seed: int, width: int) -> Image.Image:
    """A distinct picture: a smooth random colour field (upsampled noise) with fine grain on top."""
    rng = np.random.default_rng(seed)
    height = width * 3 // 4
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.int16)
    grain = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(image + grain, 0, 255).astype(np.uint8))


def write_folder(folder: Path, count: int, width: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo(i, width).save(folder / f"photo_{i:05d}.jpg", quality=88)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--change", type=float, default=0.01, help="share of the files that change")
    parser.add_argument("--width", type=int, default=320, help="photo width in pixels (height is 3/4 of it)")
    parser.add_argument("--target", type=float, default=0.05, help="re-index time / full build time, at most")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        images, out = Path(tmp) / "images", Path(tmp) / "index"
        started = time.perf_counter()
        write_folder(images, args.images, args.width)
        print(f"wrote {args.images:,} photos of {args.width} px in {time.perf_counter() - started:.0f} s")

        started = time.perf_counter()
        full = build_index(images, out, progress=False)
        full_s = time.perf_counter() - started
        print(
            f"full build: {full.added:,} images in {full_s:.1f} s ({full_s / max(1, full.added) * 1000:.2f} ms/img)"
        )

        changed = max(3, round(args.images * args.change))
        third = changed // 3
        rng = np.random.default_rng(1)
        picked = rng.choice(args.images, 2 * third + 1, replace=False)
        deleted, replaced, touched = picked[:third], picked[third : 2 * third], picked[2 * third]
        for i in deleted:
            (images / f"photo_{i:05d}.jpg").unlink()
        for i in replaced:
            photo(1_000_000 + int(i), args.width).save(images / f"photo_{i:05d}.jpg", quality=88)
        for j in range(changed - 2 * third):
            photo(2_000_000 + j, args.width).save(images / f"new_{j:05d}.jpg", quality=88)
        later = time.time() + 10
        os.utime(images / f"photo_{touched:05d}.jpg", (later, later))

        started = time.perf_counter()
        again = build_index(images, out, progress=False)
        again_s = time.perf_counter() - started
        ratio = again_s / full_s
        print(
            f"re-index after {changed} changed files ({third} deleted, {third} replaced, "
            f"{changed - 2 * third} new, 1 touched): {again_s:.2f} s"
        )
        print(
            f"  report: added {again.added}, changed {again.changed}, removed {again.removed}, "
            f"unchanged {again.unchanged}, total {again.total:,}, generation {again.generation}"
        )
        print(f"ratio re-index / full build: {ratio:.4f} (target <= {args.target})")
        expected = (changed - 2 * third, third, third, args.images - 2 * third)
        counts = (again.added, again.changed, again.removed, again.unchanged)
        failed = 0
        if counts != expected:
            print(f"MISS: counts (added, changed, removed, unchanged) {counts}, expected {expected}")
            failed = 1
        if ratio > args.target:
            print(f"MISS: re-index took {ratio:.3f} of the full build, target {args.target}")
            failed = 1
        print("OK" if not failed else "FAILED")
        return failed


if __name__ == "__main__":
    sys.exit(main())
