"""Copy screening in import, expand and find, against real servers over real photos and real FiftyOne.

A *copy* is the same photo resized, recompressed, mirrored, colour-shifted, watermarked or
lightly cropped; distinct photos of the same subject (here: non-overlapping crops of one photo)
are not copies. Servers of the tests' own are started over folders made here, so the answers'
ids and URLs are new to the dataset and only the fingerprints can tell a copy.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fo_helpers import FIND_URI, IMPORT_URI, unique_name
from PIL import Image, ImageDraw, ImageOps

import simages_fiftyone
from simages_core import SimilarImagesClient
from simages_core.identity import COPY_DISTANCE, CopyIndex, Fingerprint, fingerprint
from simages_fiftyone import Progress
from simages_fiftyone._expanding import plan_expand
from simages_fiftyone._find_fingerprints import FINGERPRINT_FIELD
from simages_fiftyone._importing import default_media_dir
from simages_fiftyone._params import build_expand_params, build_import_options
from simages_server.testing import ServerProcess

try:  # the index writer's module (``simages_server.index`` re-exported it before)
    from simages_server.indexing import build_index
except ImportError:  # pragma: no cover - older layout
    from simages_server.index import build_index  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

API_KEY = "screening-key"
BASE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "horse", "clock", "motorcycle_left", "rocket")
"""Demo photos that the demo collection also holds resized, recompressed, flipped and warmer."""
VARIANT_SUFFIXES = ("_flipped", "_recompressed", "_resized", "_warmer")
"""Variants that are certainly copies (0-2 bits apart); ``_cropped`` ones sit near the threshold."""
MIRROR_PHOTOS = ("brick", "coins", "grass", "gravel", "hubble_deep_field", "moon", "page", "retina", "text")


@contextmanager
def server_over(folder: Path, work: Path) -> Iterator[ServerProcess]:
    """A local server of the test's own over ``folder`` (indexed here, descriptor embedder)."""
    work.mkdir(parents=True, exist_ok=True)
    build_index(folder, work / "index", progress=False)
    with ServerProcess(
        work / "index", api_keys=(API_KEY,), state=work, log_path=work / "server.log"
    ) as server:
        yield server


def distinct(images: dict[str, Image.Image]) -> None:
    """Precondition: no two of ``images`` are copies under the default threshold."""
    index = CopyIndex(COPY_DISTANCE)
    for name, image in images.items():
        match = index.find(fingerprint(image))
        assert match is None, f"{name} is a copy of {match.key}: pick other test photos"
        index.add(name, fingerprint(image))


def encoded(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def variants_of(photo: Image.Image) -> dict[str, Image.Image]:
    """Copies of ``photo`` as the web makes them."""
    w, h = photo.size
    warmer = Image.merge(
        "RGB",
        [
            band.point(lambda v, k=k: min(255, int(v * k)))
            for band, k in zip(photo.split(), (1.15, 1.0, 0.85), strict=True)
        ],
    )
    watermarked = photo.copy()
    draw = ImageDraw.Draw(watermarked)
    draw.rectangle((5, h - 25, 120, h - 5), fill=(255, 255, 255))
    draw.text((10, h - 22), "(c) someone", fill=(0, 0, 0))
    return {
        "resized": photo.resize((w * 6 // 10, h * 6 // 10)),
        "recompressed": encoded(photo, 30),
        "mirrored": ImageOps.mirror(photo),
        "warmer": warmer,
        "cropped": photo.crop((w // 33, h // 33, w * 32 // 33, h * 32 // 33)),
        "watermarked": watermarked,
    }


def files_by_id(work: Path) -> dict[str, str]:
    """API image id -> file name, from the index ``server_over(folder, work)`` built."""
    from simages_server.index import ImageIndex

    return {r.id: r.file for r in ImageIndex.load(work / "index").records}


def base_of(file_name: str) -> str:
    stem = Path(file_name).stem
    for suffix in (*VARIANT_SUFFIXES, "_cropped"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def test_importing_the_datasets_own_photos_imports_none_of_them_and_counts_them_as_copies(
    api_env, make_dataset, tmp_path
):
    dataset = make_dataset(*(f"{name}.jpg" for name in BASE_PHOTOS))
    sample_of = {Path(p).stem: i for i, p in zip(*dataset.values(["id", "filepath"]), strict=True)}
    files = {r.id: r.file for r in api_env.records()}
    result = simages_fiftyone.import_similar(
        dataset, sample_ids=dataset.values("id"), num_similar=5, media_dir=str(tmp_path / "m")
    )
    with SimilarImagesClient(
        api_key=api_env.api_key, base_url=api_env.base_url, cache=False, usage=None
    ) as client:
        answers = client.search_many(
            [simages_fiftyone._params.ExpandParams(5).query(p) for p in dataset.values("filepath")]
        )
    found = {image.id for item in answers for image in item.result.images}
    own = {
        i for i in found if Path(files[i]).stem in sample_of or Path(files[i]).stem.endswith(VARIANT_SUFFIXES)
    }
    assert own, "the demo server should find the dataset's own photos"
    # Every answer that is one of the dataset's photos (or a plain copy of it) is skipped as a copy
    # of that very sample; nothing imported is one of them.
    assert own <= set(result.copies)
    for image_id in own:
        assert result.copies[image_id] == sample_of[base_of(files[image_id])], files[image_id]
    imported = set(dataset.match_tags(result.tag).values("simages_id")) if result.imported else set()
    assert not imported & own
    assert result.found == len(found)
    assert (
        result.imported + result.skipped_copies + result.skipped_duplicates + result.failed_downloads
        == len(found)
    )
    assert result.skipped_copies == len(result.copies) >= len(own)
    assert f"skipped: {result.skipped_copies} copies of samples already in the dataset" in result.summary()
    # The run record holds the same: the matching sample id of every copy.
    record = dataset.load_run_results(result.run_key, cache=False).serialize()
    assert record["copies"] == result.copies and record["skipped_copies"] == result.skipped_copies


def test_variants_of_a_dataset_photo_are_skipped_and_distinct_photos_of_its_subject_imported(
    api_env, cleanup_datasets, tmp_path
):
    import skimage.data

    big = Image.fromarray(skimage.data.astronaut()).convert("RGB")
    w, h = big.size
    crops = [
        big.crop((x * w // 2, y * h // 2, (x + 1) * w // 2, (y + 1) * h // 2)) for y in (0, 1) for x in (0, 1)
    ]
    distinct({f"crop{i}": c for i, c in enumerate(crops)})
    mine = tmp_path / "mine"
    mine.mkdir()
    crops[0].save(mine / "crop0.jpg", quality=92)
    served = tmp_path / "served"
    served.mkdir()
    for name, variant in variants_of(crops[0]).items():
        variant.convert("RGB").save(served / f"variant_{name}.jpg", quality=90)
    for i, crop in enumerate(crops[1:], start=1):
        crop.save(served / f"crop{i}.jpg", quality=90)
    dataset = fo.Dataset(unique_name())
    cleanup_datasets.append(dataset.name)
    dataset.add_sample(fo.Sample(filepath=str(mine / "crop0.jpg")))
    with server_over(served, tmp_path / "server") as server:
        files = files_by_id(tmp_path / "server")
        result = simages_fiftyone.import_similar(
            dataset,
            sample_ids=dataset.values("id"),
            num_similar=len(files),
            media_dir=str(tmp_path / "media"),
            api_key=API_KEY,
            api_url=server.url,
        )
    imported = dataset.match_tags(result.tag)
    assert sorted(files[i] for i in imported.values("simages_id")) == ["crop1.jpg", "crop2.jpg", "crop3.jpg"]
    assert sorted(files[i] for i in result.copies) == sorted(
        f"variant_{n}.jpg" for n in variants_of(crops[0])
    )
    assert set(result.copies.values()) == {dataset.first().id}
    assert (result.found, result.imported, result.skipped_copies) == (len(files), 3, 6)
    # New samples carry the fingerprint they were screened with; only the files of those imported are on disk.
    assert all(Fingerprint.from_hex(v) for v in imported.values(FINGERPRINT_FIELD))
    assert sorted(os.listdir(tmp_path / "media")) == sorted(
        os.path.basename(p) for p in imported.values("filepath")
    )


def test_an_expansion_started_again_imports_nothing_new_even_from_a_server_with_new_ids(
    api_env, cleanup_datasets, tmp_path
):
    """Run 1 expands against a server; run 2 starts over against a mirror of it (every photo resized
    and re-encoded, under new names, so no id or URL matches): everything it finds is a copy."""
    photos = {name: Image.open(api_env.images_dir / f"{name}.jpg").convert("RGB") for name in MIRROR_PHOTOS}
    distinct(photos)
    first_folder, mirror = tmp_path / "first", tmp_path / "mirror"
    first_folder.mkdir()
    mirror.mkdir()
    for name, photo in photos.items():
        photo.save(first_folder / f"{name}.jpg", quality=92)
        photo.resize((photo.width * 8 // 10, photo.height * 8 // 10)).save(
            mirror / f"m_{name}.jpg", quality=75
        )
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in MIRROR_PHOTOS[:3]:
        shutil.copy(api_env.images_dir / f"{name}.jpg", mine / f"{name}.jpg")
    dataset = fo.Dataset(unique_name())
    cleanup_datasets.append(dataset.name)
    dataset.add_samples([fo.Sample(filepath=str(mine / f"{n}.jpg")) for n in MIRROR_PHOTOS[:3]])
    total = len(MIRROR_PHOTOS)
    with server_over(first_folder, tmp_path / "server1") as server:
        first = simages_fiftyone.expand_dataset(
            dataset, total, media_dir=str(tmp_path / "media"), api_key=API_KEY, api_url=server.url
        )
    assert first.complete and first.fingerprints_computed == 3
    assert first.imported == total - 3 and first.skipped_copies == 3  # the dataset's own three photos
    assert len(dataset) == total
    # Started over (its record deleted) against the mirror: the query samples now include what run 1
    # imported, whose fingerprints were stored as they went in, so nothing is fingerprinted again.
    dataset.delete_run(first.run_key)
    progress: list[Progress] = []
    with server_over(mirror, tmp_path / "server2") as server:
        second = simages_fiftyone.expand_dataset(
            dataset,
            total,
            media_dir=str(tmp_path / "media"),
            api_key=API_KEY,
            api_url=server.url,
            progress=progress.append,
        )
    assert second.complete and not second.resumed and second.requests_this_run == total
    assert second.imported == 0 and second.skipped_copies == total and len(dataset) == total
    assert set(second.copies.values()) <= set(dataset.values("id"))
    assert second.fingerprints_computed == 0 and not [
        p for p in progress if p.label.startswith("Fingerprint")
    ]
    assert sorted(os.listdir(tmp_path / "media")) == sorted(
        os.path.basename(p) for p in dataset.match_tags(first.tag).values("filepath")
    )


def test_downloads_go_to_fiftyones_dataset_directory_not_the_indexed_folder(api_env, make_dataset):
    dataset = make_dataset("chelsea.jpg")
    indexed_before = sorted(os.listdir(api_env.images_dir))
    result = simages_fiftyone.import_similar(dataset, text="a horse", num_similar=2)
    try:
        assert result.imported > 0
        assert result.media_dir == default_media_dir(dataset.name)
        assert Path(result.media_dir).is_relative_to(fo.config.default_dataset_dir)
        for path in dataset.match_tags(result.tag).values("filepath"):
            assert Path(path).parent == Path(result.media_dir)
            assert not Path(path).is_relative_to(api_env.images_dir)
        assert sorted(os.listdir(api_env.images_dir)) == indexed_before  # the server's folder is unchanged
    finally:
        shutil.rmtree(result.media_dir, ignore_errors=True)


def test_fingerprints_are_computed_once_and_nothing_else_on_the_samples_changes(
    api_env, make_dataset, tmp_path
):
    dataset = make_dataset("coffee.jpg", "horse.jpg")
    dataset.add_sample(fo.Sample(filepath=str(tmp_path / "gone.jpg")))  # a file that cannot be read
    before = {s.id: s.to_dict() for s in dataset}
    progress: list[Progress] = []
    first = simages_fiftyone.import_similar(
        dataset, text="a cat", num_similar=1, media_dir=str(tmp_path / "m"), progress=progress.append
    )
    assert (first.fingerprints_computed, first.unreadable_samples) == (2, 1)
    assert any(p.label == "Fingerprinting 3 sample(s) of " + repr(dataset.name) for p in progress)
    stored = dict(zip(*dataset.select(list(before)).values(["id", FINGERPRINT_FIELD]), strict=True))
    assert [bool(stored[i]) for i in before] == [True, True, False]
    for sample_id, old in before.items():
        new = dataset[sample_id].to_dict()
        # FiftyOne's own bookkeeping moves when a field is written; nothing of the user's does. The
        # fields the imported samples brought into the schema read as unset on the old samples.
        assert {k: new[k] for k in old if k != "last_modified_at"} == {
            k: v for k, v in old.items() if k != "last_modified_at"
        }
        added = {k: v for k, v in new.items() if k not in old and k != FINGERPRINT_FIELD}
        assert added and set(added.values()) == {None}
    second = simages_fiftyone.import_similar(
        dataset, text="a rocket", num_similar=1, media_dir=str(tmp_path / "m")
    )
    assert (
        second.fingerprints_computed == 0 and second.unreadable_samples == 1
    )  # only the unreadable one is retried
    assert dict(zip(*dataset.select(list(before)).values(["id", FINGERPRINT_FIELD]), strict=True)) == stored


def test_python_import_records_its_run_as_the_operator_does(api_env, make_dataset, tmp_path):
    dataset = make_dataset("clock.jpg")
    result = simages_fiftyone.import_similar(
        dataset, text="a clock", num_similar=3, media_dir=str(tmp_path / "a")
    )
    assert result.run_key in dataset.list_runs()
    python_record = dataset.load_run_results(result.run_key, cache=False).serialize()
    assert python_record["copies"] == result.copies and python_record["imported"] == result.imported
    assert result.skipped_copies > 0 and set(result.copies.values()) == {dataset.first().id}
    python_config = dataset.get_run_info(result.run_key).config.serialize()
    assert python_config["screen_copies"] is True and python_config["copy_threshold"] == COPY_DISTANCE

    before = set(dataset.list_runs())
    foo.execute_operator(
        IMPORT_URI,
        ctx={
            "dataset": dataset.name,
            "params": {
                "source": "text",
                "text": "a clock",
                "num_similar": 3,
                "media_dir": str(tmp_path / "b"),
            },
        },
    )
    dataset.reload()
    (key,) = set(dataset.list_runs()) - before
    operator_record = dataset.load_run_results(key, cache=False).serialize()
    operator_config = dataset.get_run_info(key).config.serialize()
    assert set(operator_record) == set(python_record) and set(operator_config) == set(python_config)


def test_a_copy_whose_thumbnail_cannot_be_read_is_screened_from_its_download(
    api_env, make_dataset, proxy_factory, tmp_path
):
    dataset = make_dataset("clock.jpg")
    with SimilarImagesClient(
        api_key=api_env.api_key, base_url=api_env.base_url, cache=False, usage=None
    ) as client:
        ids = [i.id for i in client.search(image=api_env.images_dir / "clock.jpg", num_similar=3).images]
    proxy = proxy_factory({}, broken_thumbnails=frozenset(ids))
    media = tmp_path / "media"
    result = simages_fiftyone.import_similar(
        dataset, sample_ids=dataset.values("id"), num_similar=3, media_dir=str(media), api_url=proxy.url
    )
    assert set(proxy.thumbnail_requests) == set(ids) and set(proxy.image_requests) == set(ids)
    assert (result.imported, result.skipped_copies) == (0, 3)
    assert set(result.copies.values()) == {dataset.first().id}
    assert os.listdir(media) == []  # the copies' files were removed as soon as they were recognised


def test_an_expansion_screens_before_the_targets_fingerprints_are_in_and_checks_again_before_adding(
    api_env, make_dataset, proxy_factory, tmp_path, monkeypatch
):
    """The target is fingerprinted on a thread while the first answers are screened and downloaded:
    here it is held until the first candidate was screened, so that candidate (a copy of the
    dataset's photo) is accepted and downloaded; it is caught before it is added, with the copies
    of it, and its file goes."""
    from simages_fiftyone import _screening, _target_prints

    dataset = make_dataset("clock.jpg")
    screened = threading.Event()
    read_stored = _target_prints.add_stored

    def held_add_stored(*args, **kwargs):
        assert screened.wait(60), "no candidate was screened while the target's fingerprints were pending"
        return read_stored(*args, **kwargs)

    check = _screening.Screening.check

    def check_then_release(self, image_id, fp):
        accepted = check(self, image_id, fp)
        screened.set()
        return accepted

    monkeypatch.setattr(_target_prints, "add_stored", held_add_stored)
    monkeypatch.setattr(_screening.Screening, "check", check_then_release)
    proxy = proxy_factory({})
    media = tmp_path / "media"
    result = simages_fiftyone.expand_dataset(dataset, 3, media_dir=str(media), api_url=proxy.url)
    assert result.complete and result.fingerprints_computed == 1
    assert (result.imported, result.skipped_copies) == (0, 3) and len(dataset) == 1
    assert set(result.copies.values()) == {dataset.first().id}  # the copies of the early one too
    downloads = len(proxy.image_requests) - len(proxy.thumbnail_requests)  # the proxy lists both
    assert downloads == 1  # the one screened early was downloaded, then caught
    assert os.listdir(media) == []


def test_screening_off_imports_the_copies(api_env, make_dataset, tmp_path):
    dataset = make_dataset("clock.jpg")
    result = simages_fiftyone.import_similar(
        dataset, sample_ids=dataset.values("id"), num_similar=3, media_dir=str(tmp_path), screen_copies=False
    )
    assert (result.imported, result.skipped_copies, result.screened) == (3, 0, False)
    assert FINGERPRINT_FIELD not in dataset.get_field_schema()  # nothing fingerprinted either


def test_find_collapses_copies_and_marks_the_datasets_own(api_env, make_dataset):
    dataset = make_dataset("chelsea.jpg")
    result = foo.execute_operator(
        FIND_URI,
        ctx={"dataset": dataset.name, "params": {"source": "text", "text": "a cat", "num_similar": 6}},
    ).result
    assert result["copies_collapsed"] is True
    top = result["results"][0]
    assert top["copy_of"] == dataset.first().id and len(top["copies"]) >= 3
    assert result["copies_of_samples"][top["id"]] == dataset.first().id
    assert re.search(
        rf"\*\*#1\*\* score 1\.000 · {len(top['copies'])} copies · copy of sample {top['copy_of']}",
        result["gallery"],
    )
    every = [r["id"] for r in result["results"]] + [c for r in result["results"] for c in r["copies"]]
    assert len(every) == len(set(every)) == 6  # nothing lost, nothing twice
    assert FINGERPRINT_FIELD not in dataset.get_field_schema()  # a search writes nothing

    plain = simages_fiftyone.find_similar(
        dataset, text="a cat", num_similar=6, collapse_copies=False, mark_copies=False
    )
    assert len(plain) == 6 and not any(r.copies or r.copy_of for r in plain.images)


def test_the_copy_threshold_is_checked_and_part_of_an_expansions_identity(api_env, make_dataset):
    dataset = make_dataset("chelsea.jpg")
    with pytest.raises(foo.executor.ExecutionError, match="copy_threshold"):
        foo.execute_operator(
            IMPORT_URI,
            ctx={"dataset": dataset.name, "params": {"source": "text", "text": "cat", "copy_threshold": 65}},
        )
    with pytest.raises(simages_fiftyone.ParamError, match="copy_threshold"):
        simages_fiftyone.import_similar(dataset, text="cat", copy_threshold=-1)
    params = build_expand_params()
    keys = {
        plan_expand(dataset, params, build_import_options(**options)).run_key
        for options in ({}, {"screen_copies": False}, {"copy_threshold": 4})
    }
    assert len(keys) == 3 and len(dataset) == 1


def test_the_import_form_shows_where_downloads_go(api_env, make_dataset):
    import asyncio

    from fiftyone.operators.executor import resolve_type
    from fiftyone.operators.registry import OperatorRegistry

    dataset = make_dataset("chelsea.jpg")

    def form(params: dict) -> dict:
        ctx = {"dataset_name": dataset.name, "params": params}
        return asyncio.run(resolve_type(OperatorRegistry(), IMPORT_URI, ctx)).to_json()["type"]["properties"]

    props = form({"source": "text", "text": "cat"})
    assert default_media_dir(dataset.name) in props["media_dir"]["view"]["description"]
    assert props["screen_copies"]["default"] is True and props["copy_threshold"]["default"] == COPY_DISTANCE
    new = form({"source": "text", "text": "cat", "target": "new", "new_dataset_name": "grown set"})
    assert default_media_dir("grown set") in new["media_dir"]["view"]["description"]
    assert "copy_threshold" not in form({"source": "text", "text": "cat", "screen_copies": False})
