"""Encoder benchmark: simages_core.encode_image against the official client's path.

The official client (getsimilar 0.0.5) opens the image with PIL, resizes it so
the longest side is 400 px and encodes it with image2base64's ``rgb2base64``
(JPEG, quality 100). Both run here, in the same process, on the same
12-megapixel JPEG made from a real photo. Prints the time ratio and the
payload-size ratio. Targets: at least 5x faster, payload at most 1/3.

Run: .venv/bin/python bench/bench_encode.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from image2base64.converters import rgb2base64
from PIL import Image
from skimage import data as skdata

from simages_core import encode_image

TARGET_SIZE = 400  # getsimilar.get.TARGET_SIZE


def official_resize(img: Image.Image, target_size: int) -> Image.Image:
    """getsimilar.utils.resize, re-typed: longest side to target_size, PIL's default filter."""
    if img.size[0] > img.size[1]:
        new_size = (target_size, int(img.size[1] * target_size / img.size[0]))
    else:
        new_size = (int(img.size[0] * target_size / img.size[1]), target_size)
    return img.resize(new_size)


def official_encode(path: Path) -> str:
    return rgb2base64(official_resize(Image.open(path), TARGET_SIZE))


def make_12mp_jpeg(path: Path) -> None:
    """A 4000x3000 JPEG from a real photo, with sensor-like noise so it compresses like one."""
    photo = Image.fromarray(skdata.astronaut()).resize((4000, 3000), Image.Resampling.BICUBIC)
    rng = np.random.default_rng(0)
    pixels = np.asarray(photo, dtype=np.int16) + rng.normal(0, 4, (3000, 4000, 3)).astype(np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=92)


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo-12mp.jpg"
        make_12mp_jpeg(path)
        official_encode(path), encode_image(path)  # warm up caches and imports
        t_official, b64_official = timed(lambda: official_encode(path), args.repeat)
        t_ours, encoded = timed(lambda: encode_image(path), args.repeat)
    size_official = len(b64_official)  # type: ignore[arg-type]
    size_ours = encoded.nbytes  # type: ignore[union-attr]
    speedup = t_official / t_ours
    size_ratio = size_ours / size_official
    print(f"input: 4000x3000 JPEG ({path.name}), median of {args.repeat}")
    print(f"official (PIL resize + rgb2base64 q100): {t_official * 1000:8.1f} ms  {size_official:>8,} B")
    print(f"simages_core.encode_image:               {t_ours * 1000:8.1f} ms  {size_ours:>8,} B")
    print(f"speed ratio   official/ours = {speedup:.1f}x   (target >= 5x)")
    print(f"payload ratio ours/official = {size_ratio:.2f}    (target <= 0.33)")
    ok = speedup >= 5 and size_ratio <= 1 / 3
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
