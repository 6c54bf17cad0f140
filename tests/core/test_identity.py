"""Image identity (``simages_core.identity``): copies are copies, distinct photos are not, and the
index, collapsing and thumbnail fingerprints behave; every fetch goes to a loopback server.
"""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from skimage import data as skdata

from simages_core import ImageEncodingError, SearchResult, SimilarImage
from simages_core.identity import (
    COPY_DISTANCE,
    CROPS,
    HASH_BITS,
    CopyIndex,
    Fingerprint,
    FingerprintCache,
    FingerprintError,
    ThumbnailFingerprints,
    check_threshold,
    collapse_copies,
    fingerprint,
    fingerprint_image,
    fingerprint_results,
)

from . import fetch_support
from .fetch_support import ImageHost, Route

# The fixtures, under the names the tests ask for.
host = fetch_support.host
watch_connections = fetch_support.watch_connections

PHOTOS = ("chelsea", "coffee", "astronaut")


def _photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB")


def _encoded(image: Image.Image, fmt: str = "JPEG", quality: int = 90, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=quality, **options)
    return buffer.getvalue()


def _crop(image: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = image.size
    return image.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))


def _thumbnail(image: Image.Image) -> bytes:
    """The local server's thumbnail: longest side 256, WebP q80."""
    small = image.copy()
    small.thumbnail((256, 256), Image.Resampling.LANCZOS, reducing_gap=1.0)
    return _encoded(small, "WEBP", 80)


def _watermarked(image: Image.Image) -> Image.Image:
    """A semi-transparent logo in a corner and a credit line along the bottom."""
    w, h = image.size
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    side = w // 6
    draw.ellipse((w - side - 10, 10, w - 10, 10 + side), outline=(255, 255, 255, 140), width=side // 8)
    draw.text((10, h - 24), "(c) example stock photos", fill=(255, 255, 255, 255))
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def _exif_rotated(image: Image.Image) -> bytes:
    """Pixels stored turned 90° anticlockwise, with EXIF Orientation 6 saying how to show them upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encoded(image.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


def _hue_shifted(image: Image.Image) -> Image.Image:
    h, s, v = image.convert("HSV").split()
    return Image.merge("HSV", (h.point(lambda x: (x + 30) % 256), s, v)).convert("RGB")


VARIANTS: dict[str, Callable[[Image.Image], bytes]] = {
    "resized to a third": lambda im: _encoded(im.resize((im.width // 3, im.height // 3), Image.Resampling.LANCZOS)),
    "jpeg q15": lambda im: _encoded(im, "JPEG", 15),
    "webp q25": lambda im: _encoded(im, "WEBP", 25),
    "thumbnail": _thumbnail,
    "cropped 8% a side": lambda im: _encoded(_crop(im, 0.08, 0.08, 0.08, 0.08)),
    "cropped 10% left and top": lambda im: _encoded(_crop(im, 0.10, 0.10, 0, 0)),
    "cropped unevenly": lambda im: _encoded(_crop(im, 0.06, 0.02, 0.03, 0.08)),
    "saturated": lambda im: _encoded(ImageEnhance.Color(im).enhance(1.5)),
    "darker, less contrast": lambda im: _encoded(ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(0.8)).enhance(0.8)),
    "hue shifted": lambda im: _encoded(_hue_shifted(im)),
    "greyscale": lambda im: _encoded(im.convert("L")),
    "mirrored": lambda im: _encoded(ImageOps.mirror(im)),
    "watermarked": lambda im: _encoded(_watermarked(im)),
    "exif-rotated": _exif_rotated,
    "thumbnail of a cropped, recompressed copy": lambda im: _thumbnail(
        Image.open(io.BytesIO(_encoded(_crop(im, 0.05, 0.05, 0.05, 0.05), "JPEG", 30)))
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def originals() -> dict[str, Fingerprint]:
    return {name: fingerprint(_encoded(_photo(name), "PNG")) for name in PHOTOS}


# --- what is a copy ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", VARIANTS)
@pytest.mark.parametrize("name", PHOTOS)
def test_each_kind_of_copy_is_a_copy(originals, name, kind):
    copy = fingerprint(VARIANTS[kind](_photo(name)))
    assert copy.is_copy_of(originals[name]), f"{kind} of {name}: {copy.distance(originals[name])} bits"
    assert originals[name].is_copy_of(copy)  # the relation is symmetric


def test_distinct_photos_are_not_copies(originals):
    names = ["camera", "rocket", "moon", "coins", "page", *PHOTOS]
    prints = {name: originals.get(name) or fingerprint(_photo(name)) for name in names}
    close = [
        (a, b, prints[a].distance(prints[b]))
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if prints[a].is_copy_of(prints[b])
    ]
    assert close == []


def test_opposite_halves_of_one_photo_are_not_copies():
    photo = _photo("astronaut")
    left, right = _crop(photo, 0, 0, 0.45, 0), _crop(photo, 0.45, 0, 0, 0)
    assert not fingerprint(left).is_copy_of(fingerprint(right))


def test_exif_orientation_is_applied_to_files_and_opened_images(tmp_path, originals):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_exif_rotated(_photo("chelsea")))
    stored_pixels = fingerprint(np.asarray(Image.open(path)))  # an array carries no EXIF: as stored
    assert not stored_pixels.is_copy_of(originals["chelsea"])
    assert fingerprint(path).is_copy_of(originals["chelsea"])
    assert fingerprint(str(path)) == fingerprint(path)
    with Image.open(path) as opened:
        assert fingerprint(opened) == fingerprint(path)


def test_what_is_not_an_image_raises_image_encoding_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    truncated = _encoded(_photo("coffee"))[:5000]
    for source in (text, b"not an image", truncated, tmp_path / "missing.jpg"):
        with pytest.raises(ImageEncodingError):
            fingerprint(source)


# --- the hash: pHash as matrix products ----------------------------------------------------------

REFERENCE_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "moon", "page")


def _mirror_crop(index: int) -> int:
    left, top, right, bottom = CROPS[index]
    return CROPS.index((right, top, left, bottom))


def _grid() -> np.ndarray:
    from simages_core import identity

    return np.random.default_rng(0).uniform(0, 255, (identity.GRID_SIDE, identity.GRID_SIDE))


def test_each_crops_block_is_the_dct_of_the_crop_as_pillow_resamples_it():
    from scipy.fft import dctn

    from simages_core import identity

    grid, side = _grid(), identity.GRID_SIDE
    low = identity._low_frequencies(grid)
    for index, (left, top, right, bottom) in enumerate(CROPS):
        box = (left * side, top * side, (1 - right) * side, (1 - bottom) * side)
        resampled = identity._resampling(box[1], box[3]) @ grid @ identity._resampling(box[0], box[2]).T
        as_float = Image.fromarray(grid.astype(np.float32), "F")
        by_pillow = as_float.resize((32, 32), Image.Resampling.LANCZOS, box=box)
        np.testing.assert_allclose(resampled, np.asarray(by_pillow), atol=0.01)
        expected = dctn(resampled, type=2)[:8, :8] / 4  # scipy's DCT-II is twice ours along each axis
        np.testing.assert_allclose(low[index], expected, rtol=0, atol=1e-9 * np.abs(expected).max())


def test_a_mirror_negates_the_odd_horizontal_frequencies_of_the_mirrored_crop():
    from simages_core import identity

    grid = _grid()
    low, of_mirror = identity._low_frequencies(grid), identity._low_frequencies(grid[:, ::-1])
    sign = np.array([1.0, -1.0] * 4)  # (-1)^v along the horizontal frequency v
    for index in range(len(CROPS)):
        np.testing.assert_allclose(of_mirror[index], low[_mirror_crop(index)] * sign, atol=1e-6)


@pytest.mark.parametrize("name", PHOTOS)
def test_the_mirrored_hashes_are_the_hashes_of_the_real_mirror(name):
    photo = _photo(name)
    upright, mirrored = fingerprint_image(photo).parts()
    of_mirror, of_mirror_mirrored = fingerprint_image(ImageOps.mirror(photo)).parts()
    # Pillow's area averaging of a flipped image is the flip of its averaging up to rounding.
    for index in range(len(CROPS)):
        assert (of_mirror[index] ^ mirrored[_mirror_crop(index)]).bit_count() <= 2
        assert (of_mirror_mirrored[index] ^ upright[_mirror_crop(index)]).bit_count() <= 2


def test_whole_image_hash_agrees_with_imagehash_phash_on_real_photos():
    """ImageHash (a dev dependency) is the reference pHash; ours resamples differently, so a few bits."""
    import imagehash

    apart = {}
    for name in REFERENCE_PHOTOS:
        photo = _photo(name)
        upright, mirrored = fingerprint_image(photo).parts()
        apart[name] = (
            (upright[0] ^ int(str(imagehash.phash(photo)), 16)).bit_count(),
            (mirrored[0] ^ int(str(imagehash.phash(ImageOps.mirror(photo))), 16)).bit_count(),
        )
    assert max(max(bits) for bits in apart.values()) <= 6, apart  # the copy threshold is 12
    assert sum(sum(bits) for bits in apart.values()) <= 2 * len(REFERENCE_PHOTOS), apart


# --- the stored form ---------------------------------------------------------------------------


def test_hex_round_trip_and_length_follows_the_crops(originals):
    fp = originals["coffee"]
    text = fp.to_hex()
    assert len(text) == 2 * len(CROPS) * HASH_BITS // 4 and text == str(fp)
    assert Fingerprint.from_hex(text) == fp and Fingerprint.from_hex(text.upper()) == fp
    zero = Fingerprint(0, 0)
    assert Fingerprint.from_hex(zero.to_hex()) == zero  # leading zeros are kept


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "0" * 32,  # the single-hash form of an earlier version: recomputed, never misread
        lambda n: "g" * n,
        lambda n: " " + "0" * (n - 1),
        lambda n: "+" + "0" * (n - 1),
        lambda n: "0x" + "0" * (n - 2),
        lambda n: "0_" + "0" * (n - 2),
        lambda n: "0" * (n + 1),
        None,
        12345,
    ],
    ids=repr,
)
def test_malformed_hex_raises_fingerprint_error(bad):
    length = len(Fingerprint(0, 0).to_hex())
    text = bad(length) if callable(bad) else bad
    with pytest.raises(FingerprintError, match="hex digits"):
        Fingerprint.from_hex(text)  # type: ignore[arg-type]
    assert issubclass(FingerprintError, ValueError)


@pytest.mark.parametrize("good", [0, 1, COPY_DISTANCE, HASH_BITS])
def test_threshold_accepts_whole_bits_from_0_to_64(good):
    assert check_threshold(good) == good and CopyIndex(good).threshold == good


@pytest.mark.parametrize("bad", [-1, HASH_BITS + 1, 3.0, "5", True, None])
def test_threshold_rejects_anything_else(bad):
    with pytest.raises(ValueError, match="whole number of bits from 0 to 64"):
        check_threshold(bad)
    with pytest.raises(ValueError):
        CopyIndex(bad)
    with pytest.raises(ValueError):
        collapse_copies(SearchResult(images=()), {}, bad)


# --- CopyIndex ---------------------------------------------------------------------------------


def _random_fp(rng: random.Random) -> Fingerprint:
    bits = HASH_BITS * len(CROPS)
    return Fingerprint(rng.getrandbits(bits), rng.getrandbits(bits))


def _with_whole_bits_flipped(fp: Fingerprint, flips: int) -> Fingerprint:
    """``fp`` with ``flips`` bits of its whole-image hash changed (the highest 64 bits)."""
    shift = HASH_BITS * (len(CROPS) - 1)
    mask = sum(1 << (shift + i) for i in range(flips))
    return Fingerprint(fp.upright ^ mask, fp.mirrored)


def test_index_finds_the_nearest_within_the_threshold():
    rng = random.Random(7)
    base = _random_fp(rng)
    index = CopyIndex(items=[("far", _random_fp(rng)), ("near", _with_whole_bits_flipped(base, 2))])
    index.add("nearer", _with_whole_bits_flipped(base, 1))
    match = index.find(base)
    assert match is not None and (match.key, match.distance) == ("nearer", 1)
    assert len(index) == 3


def test_index_ties_go_to_the_first_added_and_the_threshold_is_inclusive():
    rng = random.Random(8)
    base = _random_fp(rng)
    index = CopyIndex(threshold=3, items=[("first", base), ("second", base)])
    assert index.find(base).key == "first"  # type: ignore[union-attr]
    at_threshold, beyond = _with_whole_bits_flipped(base, 3), _with_whole_bits_flipped(base, 4)
    lone = CopyIndex(threshold=3, items=[("only", base)])
    assert lone.find(at_threshold).distance == 3  # type: ignore[union-attr]
    assert lone.find(beyond) is None
    assert CopyIndex().find(base) is None  # empty


def test_index_agrees_with_fingerprint_distance(originals):
    rng = random.Random(9)
    photos = [
        fingerprint(VARIANTS[kind](_photo("coffee"))) for kind in ("mirrored", "cropped unevenly", "jpeg q15")
    ]
    known = [*(_random_fp(rng) for _ in range(200)), *originals.values()]
    index = CopyIndex(threshold=HASH_BITS, items=[(str(i), fp) for i, fp in enumerate(known)])
    for query in [*photos, *(_random_fp(rng) for _ in range(20))]:
        match = index.find(query)
        assert match is not None
        assert match.distance == min(query.distance(fp) for fp in known)
        assert known[int(match.key)].distance(query) == match.distance


def test_index_add_and_find_from_many_threads():
    rng = random.Random(10)
    batches = [[(f"{t}-{i}", _random_fp(rng)) for i in range(300)] for t in range(6)]
    index = CopyIndex(threshold=0)
    errors: list[str] = []
    start = threading.Barrier(len(batches))

    def worker(batch: list[tuple[str, Fingerprint]]) -> None:
        start.wait()
        for key, fp in batch:
            index.add(key, fp)
            match = index.find(fp)  # its own entry is there by now, whatever the others did
            if match is None or match.distance != 0:
                errors.append(key)

    threads = [threading.Thread(target=worker, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(index) == 6 * 300
    for batch in batches:
        for key, fp in batch[::37]:
            assert index.find(fp).key == key  # type: ignore[union-attr]


# --- collapsing results ------------------------------------------------------------------------


def _image(image_id: str, score: float) -> SimilarImage:
    return SimilarImage(
        f"http://127.0.0.1:1/{image_id}.jpg", score, f"http://127.0.0.1:1/{image_id}.webp", image_id
    )


def test_collapse_keeps_order_and_the_best_score_and_lists_the_copies(originals):
    cat, cup, spaceman = originals["chelsea"], originals["coffee"], originals["astronaut"]
    cat_crop = fingerprint(VARIANTS["cropped 8% a side"](_photo("chelsea")))
    cat_mirror = fingerprint(VARIANTS["mirrored"](_photo("chelsea")))
    # A merged list, not in score order: the best cat (0.95) is third.
    result = SearchResult(
        images=(
            _image("cat-crop", 0.9),
            _image("cup", 0.8),
            _image("cat", 0.95),
            _image("no-thumbnail", 0.7),
            _image("cat-mirror", 0.6),
            _image("spaceman", 0.5),
        )
    )
    prints = {"cat-crop": cat_crop, "cup": cup, "cat": cat, "cat-mirror": cat_mirror, "spaceman": spaceman}
    collapsed = result.collapse_copies(prints)
    assert [im.id for im in collapsed.images] == ["cup", "cat", "no-thumbnail", "spaceman"]
    assert {im.id: im.copies for im in collapsed.images} == {
        "cup": (),
        "cat": ("cat-crop", "cat-mirror"),
        "no-thumbnail": (),
        "spaceman": (),
    }
    assert collapsed.copies_collapsed and not result.copies_collapsed
    # At 0 bits only the mirror (a lossless flip, re-encoded) is still the cat; the crop is not.
    strict = collapse_copies(result, prints, 0)
    assert [(im.id, im.copies) for im in strict.images if im.copies] == [("cat", ("cat-mirror",))]
    assert [im.id for im in strict.images] == ["cat-crop", "cup", "cat", "no-thumbnail", "spaceman"]


def test_images_without_a_fingerprint_are_never_merged():
    same = Fingerprint(0, 0)
    result = SearchResult(images=(_image("a", 0.9), _image("b", 0.8), _image("c", 0.7), _image("d", 0.6)))
    collapsed = result.collapse_copies({"a": same, "c": same})
    assert [(im.id, im.copies) for im in collapsed.images] == [("a", ("c",)), ("b", ()), ("d", ())]


# --- fingerprints of results, from their thumbnails -------------------------------------------


def _served(host: ImageHost, path: str, body: bytes, content_type: str = "image/webp") -> str:
    host.route(path, Route(200, body, {"content-type": content_type}))
    return f"http://127.0.0.1:{host.port}{path}"


def test_fingerprint_results_reads_thumbnails_and_skips_failures(host, originals):
    photo = _photo("chelsea")
    images = [
        SimilarImage(
            "http://127.0.0.1:9/unused.jpg", 0.9, _served(host, "/t/a.webp", _thumbnail(photo)), "a"
        ),
        SimilarImage(
            _served(host, "/full/b.jpg", _encoded(photo), "image/jpeg"), 0.8, "", "b"
        ),  # no thumbnail
        SimilarImage("http://127.0.0.1:9/c.jpg", 0.7, f"http://127.0.0.1:{host.port}/t/missing.webp", "c"),
        SimilarImage("http://127.0.0.1:9/d.jpg", 0.6, _served(host, "/t/d.webp", b"<html>no</html>"), "d"),
        SimilarImage("http://127.0.0.1:9/e.jpg", 0.5, _served(host, "/t/e.webp", b"text", "text/html"), "e"),
    ]
    with ThumbnailFingerprints() as fingerprints:
        found = fingerprints(images)
    assert set(found) == {"a", "b"}  # 404, not an image, wrong content type: no entry, no error
    assert found["a"] == fingerprint(_thumbnail(photo)) and found["a"].is_copy_of(originals["chelsea"])
    assert found["b"].is_copy_of(originals["chelsea"])
    assert host.hits("/t/missing.webp") >= 1 and host.hits("/unused.jpg") == 0


def test_fingerprint_cache_means_a_second_call_fetches_nothing(host):
    from simages_core.fetch import Fetcher, FetchPolicy

    images = [
        SimilarImage(
            "http://127.0.0.1:9/x.jpg", 0.9, _served(host, f"/t/{name}.webp", _thumbnail(_photo(name))), name
        )
        for name in PHOTOS
    ]
    cache = FingerprintCache(max_entries=10)
    with Fetcher(FetchPolicy(untrusted_caller=False)) as fetcher:
        first = fingerprint_results(images, fetcher, cache=cache)
        requests = len(host.seen)
        second = fingerprint_results(images, fetcher, cache=cache)
    assert requests == len(PHOTOS) and len(host.seen) == requests  # nothing fetched the second time
    assert first == second and len(cache) == len(PHOTOS)


def test_fingerprint_cache_is_bounded_least_recently_used():
    cache = FingerprintCache(max_entries=2)
    a, b, c = Fingerprint(1, 1), Fingerprint(2, 2), Fingerprint(3, 3)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") == a  # a is now the most recent
    cache.put("c", c)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (a, None, c, 2)


def test_exif_rotated_file_served_as_a_result_is_a_copy(host, originals):
    url = _served(host, "/full/rotated.jpg", _exif_rotated(_photo("coffee")), "image/jpeg")
    with ThumbnailFingerprints() as fingerprints:
        found = fingerprints([SimilarImage(url, 0.9, "", "r")])
    assert found["r"].is_copy_of(originals["coffee"])
