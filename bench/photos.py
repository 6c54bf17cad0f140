"""Generated photos for the benchmarks: realistic decode costs, and thousands of images no two of which are copies.

``write_photos``: noisy 800x600 JPEGs with coloured rectangles (something to decode and detect).
``write_clustered_photos``: small images of random low-frequency content (smooth colour fields
and soft blobs) in clusters of shared colours, each distinct under the core's copy fingerprint
from every other, checked with ``CopyIndex`` as they are made (plain shapes on flat backgrounds
would share a perceptual hash far too often).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def write_photos(folder: Path, count: int, seed: int = 0) -> None:
    """Noisy 800x600 JPEGs with coloured rectangles: a realistic decode cost, and something to detect."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        base = rng.integers(0, 255, size=(150, 200, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((800, 600), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = int(rng.integers(0, 600)), int(rng.integers(0, 400))
            colour = [(250, 5, 5), (5, 5, 250), tuple(int(v) for v in rng.integers(0, 255, 3))][
                int(rng.integers(3))
            ]
            draw.rectangle(
                (x, y, x + int(rng.integers(40, 200)), y + int(rng.integers(40, 200))), fill=colour
            )
        image.save(folder / f"photo_{i:05d}.jpg", quality=90)


def sibling_photo(rng: np.random.Generator, palette: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A photo of a cluster: the cluster's few colours in a layout of its own, so siblings are near one
    another for an embedder (same colours) but not copies (different layout, different hash)."""
    width, height = size
    cells = palette[rng.integers(0, len(palette), size=(int(rng.integers(2, 5)), int(rng.integers(3, 7))))]
    image = Image.fromarray(cells.astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(width // 12, width // 4))
        colour = tuple(int(v) for v in palette[int(rng.integers(len(palette)))])
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(radius=max(1.0, width / 80)))


def write_clustered_photos(
    collection: Path,
    queries: Path,
    clusters: int,
    per_cluster: int = 4,
    *,
    seed: int = 0,
    size: tuple[int, int] = (128, 96),
) -> list[Path]:
    """A collection of ``clusters x per_cluster`` photos and one query photo per cluster, none a copy
    of any other (checked with ``CopyIndex``). A query's nearest neighbours are mostly its own
    cluster's photos, so an expansion over the queries finds thousands of different images rather
    than the same few "hub" images. Returns the query paths, in cluster order."""
    from simages_core.identity import COPY_DISTANCE, CopyIndex, fingerprint

    collection.mkdir(parents=True, exist_ok=True)
    queries.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    index = CopyIndex(COPY_DISTANCE)
    query_paths: list[Path] = []
    for cluster in range(clusters):
        palette = rng.integers(0, 256, size=(3, 3))
        made = 0
        while made <= per_cluster:
            path = (
                queries / f"q_{cluster:05d}.jpg" if made == 0 else collection / f"c_{cluster:05d}_{made}.jpg"
            )
            sibling_photo(rng, palette, size).save(path, quality=90)
            # As saved (the JPEG the server indexes and a dataset holds) and as the server's WEBP q80
            # thumbnail (what screening reads): smooth images drift a few bits between the two.
            with Image.open(path) as saved:
                thumbnail = io.BytesIO()
                saved.save(thumbnail, format="WEBP", quality=80)
            prints = (fingerprint(path), fingerprint(thumbnail.getvalue()))
            if any(index.find(fp) is not None for fp in prints):
                continue  # too alike to one already made: draw another layout (the file is replaced)
            if made == 0:
                query_paths.append(path)
            for fp in prints:
                index.add(path.name, fp)
            made += 1
    return query_paths
