"""Fingerprint quality: does ``simages_core.identity`` call copies copies and distinct photos distinct?

A labelled pair set from the real photos that ship inside scikit-image's wheel (read from its
data folder, nothing downloaded). Copies: each photo against its variants (resized, recompressed
JPEG/WebP, cropped up to 10% a side, colour-shifted, mirrored, watermarked, EXIF-rotated), each
variant both as a file and as the API's thumbnail (256 px WebP q80, what ``fingerprint_results``
reads), and the photo's own thumbnail. Distinct: every pair of distinct photos (including the
stereo pair ``motorcycle_left``/``motorcycle_right``, one subject seen twice, and opposite halves
of one photo), and every variant against every other photo. Prints recall, false merges, a
threshold sweep, per-variant recall and ms per fingerprint.

Run: .venv/bin/python bench/bench_identity.py
Exits 1 if recall < 0.98 or false merges > 1% at ``COPY_DISTANCE``.
"""

from __future__ import annotations

import io
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from simages_core.identity import (
    COPY_DISTANCE,
    CROPS,
    HASH_BITS,
    CopyIndex,
    Fingerprint,
    fingerprint,
    fingerprint_image,
)

T = TypeVar("T")
MIN_RECALL = 0.98
MAX_FALSE_MERGES = 0.01
THUMBNAIL_SIDE = 256  # the local server's thumbnails (simages_server.index.THUMBNAIL_SIDE), WebP q80

# Natural photos in scikit-image's data folder (no drawings, charts or synthetic images).
PHOTO_FILES = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
REGIONS_MIN_SIDE = 400
"""Photos at least this large also give regions of themselves (``REGIONS``): same scene, not copies."""
REGIONS: dict[str, tuple[float, float, float, float]] = {
    # Opposite halves overlapping by a tenth of the photo, and the four quadrants.
    "left": (0.0, 0.0, 0.55, 1.0),
    "right": (0.45, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.55),
    "bottom": (0.0, 0.45, 1.0, 1.0),
    "top-left": (0.0, 0.0, 0.5, 0.5),
    "top-right": (0.5, 0.0, 1.0, 0.5),
    "bottom-left": (0.0, 0.5, 0.5, 1.0),
    "bottom-right": (0.5, 0.5, 1.0, 1.0),
}
WHOLE = (0.0, 0.0, 1.0, 1.0)
MAX_SHARED = 0.25
"""Two regions of one photo sharing more than this fraction of the smaller are neither copies
nor distinct photos (a quadrant inside a half): such pairs are left out."""


@dataclass(frozen=True)
class Sample:
    """One encoded image of the pair set: ``source`` is the photo it was made from."""

    name: str
    source: str
    data: bytes
    kind: str = "original"
    """The variant kind ("original" for a photo itself), for per-variant recall."""


# --- photos ------------------------------------------------------------------------------------


def load_photos() -> dict[str, Image.Image]:
    """Every photo in ``PHOTO_FILES`` that this scikit-image ships, as RGB, by stem."""
    from skimage import data

    folder = Path(data.data_dir)
    photos = {}
    for file_name in PHOTO_FILES:
        path = folder / file_name
        if path.exists():
            with Image.open(path) as image:
                photos[path.stem] = _to_rgb(image)
    return photos


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((array * 255.0 / max(1.0, array.max())).astype(np.uint8))
    return image.convert("RGB")


def regions(name: str, photo: Image.Image) -> list[tuple[str, Image.Image]]:
    """The ``REGIONS`` of a large photo, named ``photo/region``."""
    w, h = photo.size
    if min(w, h) < REGIONS_MIN_SIDE:
        return []
    return [
        (f"{name}/{region}", photo.crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h))))
        for region, (x0, y0, x1, y1) in REGIONS.items()
    ]


# --- variants ----------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = 90, exif: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    options: dict[str, object] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if exif is not None:
        options["exif"] = exif
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def thumbnail(data: bytes) -> bytes:
    """What the local server serves as ``thumbnail_url``: longest side 256, WebP q80."""
    with Image.open(io.BytesIO(data)) as opened:
        from PIL import ImageOps

        image = (ImageOps.exif_transpose(opened) or opened).convert("RGB")
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS, reducing_gap=1.0)
    return encode(image, "WEBP", 80)


def _resize(scale: float) -> Callable[[Image.Image], bytes]:
    def apply(im: Image.Image) -> bytes:
        size = (max(8, round(im.width * scale)), max(8, round(im.height * scale)))
        return encode(im.resize(size, Image.Resampling.LANCZOS))

    return apply


def _crop(left: float, top: float, right: float, bottom: float) -> Callable[[Image.Image], bytes]:
    def apply(im: Image.Image) -> bytes:
        w, h = im.size
        return encode(
            im.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))
        )

    return apply


def _crop_encoded(im: Image.Image, side: float, quality: int) -> bytes:
    w, h = im.size
    return encode(
        im.crop((round(w * side), round(h * side), round(w * (1 - side)), round(h * (1 - side)))),
        "JPEG",
        quality,
    )


def _enhance(*steps: tuple[type, float]) -> Callable[[Image.Image], bytes]:
    def apply(im: Image.Image) -> bytes:
        for enhancer, factor in steps:
            im = enhancer(im).enhance(factor)
        return encode(im)

    return apply


def _hue(degrees: int) -> Callable[[Image.Image], bytes]:
    def apply(im: Image.Image) -> bytes:
        h, s, v = im.convert("HSV").split()
        h = h.point(lambda x: (x + round(degrees * 256 / 360)) % 256)
        return encode(Image.merge("HSV", (h, s, v)).convert("RGB"))

    return apply


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _text_mark(alpha: int, corner: bool) -> Callable[[Image.Image], bytes]:
    """A text watermark: a corner credit, or a large diagonal-ish stamp across the middle."""

    def apply(im: Image.Image) -> bytes:
        w, h = im.size
        layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        if corner:
            font = _font(max(10, h // 14))
            draw.text(
                (round(w * 0.04), round(h * 0.86)), "© stock photos", font=font, fill=(255, 255, 255, alpha)
            )
        else:
            font = _font(max(12, h // 7))
            draw.text((w // 2, h // 2), "SAMPLE", font=font, fill=(255, 255, 255, alpha), anchor="mm")
        return encode(Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB"))

    return apply


def _logo_mark(alpha: int) -> Callable[[Image.Image], bytes]:
    """A semi-transparent logo (a ring with a bar) in the lower right, a fifth of the width."""

    def apply(im: Image.Image) -> bytes:
        w, h = im.size
        side = max(16, w // 5)
        x0, y0 = w - side - w // 30, h - side - h // 30
        layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        draw.ellipse((x0, y0, x0 + side, y0 + side), outline=(255, 255, 255, alpha), width=max(2, side // 8))
        draw.rectangle(
            (x0 + side // 3, y0 + side // 5, x0 + 2 * side // 3, y0 + 4 * side // 5),
            fill=(40, 90, 200, alpha),
        )
        return encode(Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB"))

    return apply


def _exif_rotated(orientation: int) -> Callable[[Image.Image], bytes]:
    """Pixels stored rotated, with the EXIF Orientation that says how to show them upright."""
    # Orientation 6: shown after rotating 90° clockwise, so the stored pixels are turned 90° anticlockwise.
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]

    def apply(im: Image.Image) -> bytes:
        exif = Image.Exif()
        exif[0x0112] = orientation
        return encode(im.transpose(stored), exif=exif.tobytes())

    return apply


VARIANTS: dict[str, Callable[[Image.Image], bytes]] = {
    "resized 0.5": _resize(0.5),
    "resized 0.25": _resize(0.25),
    "resized 1.6": _resize(1.6),
    "jpeg q30": lambda im: encode(im, "JPEG", 30),
    "jpeg q20": lambda im: encode(im, "JPEG", 20),
    "jpeg q10": lambda im: encode(im, "JPEG", 10),
    "webp q50": lambda im: encode(im, "WEBP", 50),
    "webp q20": lambda im: encode(im, "WEBP", 20),
    "crop 3% a side": _crop(0.03, 0.03, 0.03, 0.03),
    "crop 6% a side": _crop(0.06, 0.06, 0.06, 0.06),
    "crop 10% a side": _crop(0.10, 0.10, 0.10, 0.10),
    "crop 10% left+top": _crop(0.10, 0.10, 0.0, 0.0),
    "crop 10% right": _crop(0.0, 0.0, 0.10, 0.0),
    "crop 7/2/4/9% l/t/r/b": _crop(0.07, 0.02, 0.04, 0.09),
    "crop 4/10/1/6% l/t/r/b": _crop(0.04, 0.10, 0.01, 0.06),
    "saturation 0.5": _enhance((ImageEnhance.Color, 0.5)),
    "saturation 1.5": _enhance((ImageEnhance.Color, 1.5)),
    "brightness 0.75": _enhance((ImageEnhance.Brightness, 0.75)),
    "brightness 1.25": _enhance((ImageEnhance.Brightness, 1.25)),
    "contrast 0.7": _enhance((ImageEnhance.Contrast, 0.7)),
    "contrast 1.4": _enhance((ImageEnhance.Contrast, 1.4)),
    "warmer (demo)": _enhance((ImageEnhance.Brightness, 1.12), (ImageEnhance.Color, 1.3)),
    "hue +20°": _hue(20),
    "hue +60°": _hue(60),
    "greyscale": lambda im: encode(im.convert("L")),
    "mirrored": lambda im: encode(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    "text corner": _text_mark(255, corner=True),
    "text stamp 40%": _text_mark(100, corner=False),
    "text stamp opaque": _text_mark(255, corner=False),
    "logo 50%": _logo_mark(128),
    "exif orientation 6": _exif_rotated(6),
    "exif orientation 8": _exif_rotated(8),
    "mirrored + crop 5% + q30": lambda im: _crop_encoded(
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.05, 30
    ),
}


@dataclass(frozen=True)
class PairSet:
    samples: list[Sample]
    copies: list[tuple[int, int, str]]
    """(sample, sample, variant kind): must be copies."""
    distinct: list[tuple[int, int, str]]
    """(sample, sample, what): must not be; what is "photos" (two originals) or "variant×photo"."""


def build_pairs(photos: dict[str, Image.Image]) -> PairSet:
    samples: list[Sample] = []
    originals: dict[str, int] = {}
    for name, photo in photos.items():
        originals[name] = len(samples)
        samples.append(Sample(name, name, encode(photo, "PNG")))
        for region_name, region in regions(name, photo):
            originals[region_name] = len(samples)
            samples.append(Sample(region_name, region_name, encode(region, "PNG")))
    copies: list[tuple[int, int, str]] = []
    variants_of: dict[str, list[int]] = defaultdict(list)
    for name, photo in photos.items():
        original = samples[originals[name]]
        made = [("thumbnail", thumbnail(original.data))]
        for kind, apply in VARIANTS.items():
            data = apply(photo)
            made += [(kind, data), (f"{kind} (thumbnail)", thumbnail(data))]
        for kind, data in made:
            copies.append((originals[name], len(samples), kind))
            variants_of[name].append(len(samples))
            samples.append(Sample(f"{name} {kind}", name, data, kind))
    distinct: list[tuple[int, int, str]] = []
    names = list(originals)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if _related(a, b):
                continue
            distinct.append((originals[a], originals[b], "photos"))
    for name, variants in variants_of.items():
        for other in names:
            if other != name and not _related(name, other):
                distinct.extend((index, originals[other], "variant×photo") for index in variants)
    return PairSet(samples, copies, distinct)


def _related(a: str, b: str) -> bool:
    """Two regions of one photo (the whole photo is one) that share too much to be called distinct."""
    (pa, _, ra), (pb, _, rb) = a.partition("/"), b.partition("/")
    if pa != pb:
        return False
    box_a, box_b = REGIONS.get(ra, WHOLE), REGIONS.get(rb, WHOLE)
    shared_w = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0])
    shared_h = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
    shared = max(0.0, shared_w) * max(0.0, shared_h)
    smaller = min((box[2] - box[0]) * (box[3] - box[1]) for box in (box_a, box_b))
    return shared / smaller > MAX_SHARED


def _stereo(a: str, b: str) -> bool:
    """Both from the stereo pair (one scene from two cameras a few centimetres apart)."""
    return {a.split("/")[0], b.split("/")[0]} == {"motorcycle_left", "motorcycle_right"}


# --- measuring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    copies: np.ndarray
    distinct: np.ndarray
    distinct_photos: np.ndarray
    kinds: list[str]

    def recall(self, threshold: int) -> float:
        return float(np.mean(self.copies <= threshold))

    def false_merges(self, threshold: int, photos_only: bool = False) -> float:
        values = self.distinct_photos if photos_only else self.distinct
        return float(np.mean(values <= threshold))


def score(pairs: PairSet, distance: Callable[[int, int], float]) -> Scores:
    return Scores(
        copies=np.array([distance(a, b) for a, b, _ in pairs.copies]),
        distinct=np.array([distance(a, b) for a, b, _ in pairs.distinct]),
        distinct_photos=np.array([distance(a, b) for a, b, what in pairs.distinct if what == "photos"]),
        kinds=[kind for _, _, kind in pairs.copies],
    )


def per_variant(scores: Scores, threshold: int) -> dict[str, float]:
    hits: dict[str, list[bool]] = defaultdict(list)
    for kind, value in zip(scores.kinds, scores.copies, strict=True):
        hits[kind.removesuffix(" (thumbnail)")].append(bool(value <= threshold))
    return {kind: sum(found) / len(found) for kind, found in hits.items()}


def ms_per_fingerprint(datas: Sequence[T], fn: Callable[[T], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for data in datas:
            fn(data)
        best = min(best, (time.perf_counter() - start) / len(datas))
    return best * 1000


INDEX_SIZE = 100_000


def ms_per_lookup(lookups: int = 50) -> float:
    """``CopyIndex.find`` among ``INDEX_SIZE`` random fingerprints (a large dataset's worth)."""
    rng = np.random.default_rng(0)
    bits = HASH_BITS * len(CROPS)

    def random_fp() -> Fingerprint:
        return Fingerprint(*(int.from_bytes(rng.bytes(bits // 8), "big") for _ in range(2)))

    index = CopyIndex(items=((str(i), random_fp()) for i in range(INDEX_SIZE)))
    queries = [random_fp() for _ in range(lookups)]
    start = time.perf_counter()
    for query in queries:
        index.find(query)
    return (time.perf_counter() - start) / lookups * 1000


def large_jpeg(photo: Image.Image) -> bytes:
    """A 12-megapixel camera-sized JPEG made from a real photo (4000x3000, q90)."""
    return encode(photo.resize((4000, 3000), Image.Resampling.BICUBIC), "JPEG", 90)


def main() -> int:
    started = time.perf_counter()
    photos = load_photos()
    if len(photos) < 10:
        print(f"only {len(photos)} scikit-image photos found; install scikit-image >= 0.22", file=sys.stderr)
        return 2
    pairs = build_pairs(photos)
    fingerprints: list[Fingerprint] = [fingerprint(sample.data) for sample in pairs.samples]
    scores = score(pairs, lambda a, b: fingerprints[a].distance(fingerprints[b]))
    n_photos = sum(1 for s in pairs.samples if s.kind == "original")
    print(
        f"{len(photos)} scikit-image photos + {n_photos - len(photos)} regions of them; {len(pairs.copies)} copy pairs "
        f"({len(VARIANTS)} variants + thumbnails), {len(pairs.distinct)} distinct pairs "
        f"({len(scores.distinct_photos)} photo×photo)"
    )
    print(f"\n{'threshold':>9}  {'recall':>7}  {'false merges':>12}  {'photo×photo':>11}")
    for threshold in sorted({4, 6, 8, 10, 12, 14, 16, COPY_DISTANCE}):
        mark = "  <- COPY_DISTANCE" if threshold == COPY_DISTANCE else ""
        print(
            f"{threshold:>9}  {scores.recall(threshold):>7.3f}  {scores.false_merges(threshold):>12.4f}  "
            f"{scores.false_merges(threshold, photos_only=True):>11.4f}{mark}"
        )
    print(f"\nper-variant recall at {COPY_DISTANCE} (file and thumbnail):")
    for kind, value in per_variant(scores, COPY_DISTANCE).items():
        print(f"  {kind:<28} {value:.3f}")
    stereo = np.array(
        [_stereo(pairs.samples[a].source, pairs.samples[b].source) for a, b, _ in pairs.distinct]
    )
    merged = scores.distinct <= COPY_DISTANCE
    others = int(np.count_nonzero(merged & ~stereo))
    print(
        f"false merges at {COPY_DISTANCE}: {int(np.count_nonzero(merged & stereo))} involve the stereo pair "
        f"motorcycle_left/right (one scene, 5% parallax); the other {others} are "
        f"{others / max(1, int(np.count_nonzero(~stereo))):.6f} of the remaining pairs"
    )
    nearest = sorted(
        (
            (d, pairs.samples[a].name, pairs.samples[b].name)
            for (a, b, _), d in zip(pairs.distinct, scores.distinct, strict=True)
        ),
    )[:3]
    print("closest distinct pairs: " + "; ".join(f"{a} ~ {b}: {d:.0f}" for d, a, b in nearest))
    missed = sorted(
        (
            (d, pairs.samples[b].name)
            for (_, b, _), d in zip(pairs.copies, scores.copies, strict=True)
            if d > COPY_DISTANCE
        ),
        reverse=True,
    )
    if missed:
        print(f"missed copies ({len(missed)}): " + "; ".join(f"{n}: {d:.0f}" for d, n in missed[:8]))

    thumbs = [s.data for s in pairs.samples if s.kind == "thumbnail"]
    files = [s.data for s in pairs.samples if s.kind == "original" and "/" not in s.name]
    big = [large_jpeg(photos["chelsea"] if "chelsea" in photos else next(iter(photos.values())))]
    print(
        f"\nms per fingerprint: thumbnail (256 px WebP) {ms_per_fingerprint(thumbs, fingerprint):.2f}, "
        f"photo file (PNG/JPEG, ~0.3-1 MP) {ms_per_fingerprint(files, fingerprint):.2f}, "
        f"12 MP JPEG {ms_per_fingerprint(big, fingerprint):.1f}"
    )
    decoded = [Image.open(io.BytesIO(data)).convert("RGB") for data in thumbs]
    hash_only = ms_per_fingerprint(decoded, fingerprint_image)
    print(f"of which the hash (fingerprint_image on the decoded thumbnail): {hash_only:.2f} ms")
    print(f"CopyIndex lookup among {INDEX_SIZE:,} fingerprints: {ms_per_lookup():.1f} ms")
    recall = scores.recall(COPY_DISTANCE)
    false_merges = scores.false_merges(COPY_DISTANCE)
    print(
        f"\nat COPY_DISTANCE={COPY_DISTANCE}: recall {recall:.3f} (target ≥ {MIN_RECALL}), "
        f"false merges {false_merges:.4f} (target ≤ {MAX_FALSE_MERGES}); {time.perf_counter() - started:.0f} s"
    )
    ok = recall >= MIN_RECALL and false_merges <= MAX_FALSE_MERGES
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
