"""Selected detections as queries: each box is cut from its sample's image and searched.

A sample is a montage of two demo photos (the cat on the left, the horse on the right, a grey
gap between them) with one detection over each. Searching the local server with the cat's box
finds ``chelsea.jpg`` first and with the horse's box ``horse.jpg``: the whole montage, sent
instead of the crop, could not give two different first answers for one sample. Through
``execute_operator`` (``selected_labels`` in the request, as the App sends it) and through
Python (``label_ids=``); provenance holds the box; dedup and copy screening still apply; a bad
selection is refused by name and writes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fiftyone.operators.executor import resolve_type
from fiftyone.operators.registry import OperatorRegistry
from fo_helpers import FIND_URI, IMPORT_URI
from PIL import Image, ImageOps

import simages_fiftyone
from simages_fiftyone import ParamError

pytestmark = pytest.mark.integration

GAP = 120
"""Grey pixels between the two photos: wider than the core's 10 % margin, so no crop reaches the other photo."""


@dataclass(frozen=True)
class Montage:
    dataset: fo.Dataset
    sample_id: str
    cat: fo.Detection
    horse: fo.Detection
    polyline: fo.Polyline
    classification: fo.Classification

    def selected(self, *labels: fo.Label, field: str = "ground_truth") -> list[dict]:
        """``ctx.selected_labels`` as the App sends it for labels clicked in the modal."""
        return [
            {"label_id": label.id, "sample_id": self.sample_id, "field": field, "frame_number": None}
            for label in labels
        ]


def relative(box: tuple[int, int, int, int], width: int, height: int) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height]


EXIF_ORIENTATION = 0x0112
ROTATE_TO_VIEW = 6
"""EXIF orientation 6: the stored pixels are shown turned 90 degrees clockwise."""


def make_montage(api_env, dataset: fo.Dataset, path: Path, *, sideways: bool = False) -> Montage:
    """The montage sample; ``sideways`` stores its pixels turned a quarter and says so in EXIF, as
    phones do: the App shows it upright, and its boxes are relative to the upright image."""
    cat = Image.open(api_env.images_dir / "chelsea.jpg").convert("RGB")
    horse = Image.open(api_env.images_dir / "horse.jpg").convert("RGB")
    width, height = cat.width + GAP + horse.width, max(cat.height, horse.height)
    canvas = Image.new("RGB", (width, height), (128, 128, 128))
    canvas.paste(cat, (0, 0))
    canvas.paste(horse, (cat.width + GAP, 0))
    if sideways:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = ROTATE_TO_VIEW
        canvas.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
        assert ImageOps.exif_transpose(Image.open(path)).size == (width, height)
    else:
        canvas.save(path, quality=95)

    cat_box = relative((0, 0, cat.width, cat.height), width, height)
    horse_box = relative((cat.width + GAP, 0, width, horse.height), width, height)
    detections = [
        fo.Detection(label="cat", bounding_box=cat_box),
        fo.Detection(label="horse", bounding_box=horse_box),
    ]
    polyline = fo.Polyline(label="fence", points=[[(0.1, 0.1), (0.4, 0.4)]])
    classification = fo.Classification(label="animals")
    sample = fo.Sample(
        filepath=str(path),
        ground_truth=fo.Detections(detections=detections),
        outlines=fo.Polylines(polylines=[polyline]),
        scene=classification,
    )
    dataset.add_sample(sample)
    return Montage(dataset, sample.id, detections[0], detections[1], polyline, classification)


@pytest.fixture
def montage(api_env, make_dataset, tmp_path) -> Montage:
    return make_montage(api_env, make_dataset(), tmp_path / "montage.jpg")


def photo(api_env, image_id: str) -> str:
    """The demo photo an API image is, or is a variant of: ``chelsea_resized.jpg`` -> ``chelsea``."""
    file = next(r.file for r in api_env.records() if r.id == image_id)
    return Path(file).stem.split("_")[0]


def find_with_labels(montage: Montage, *labels: fo.Label, **params) -> dict:
    ctx = {
        "dataset": montage.dataset.name,
        "params": {"num_similar": 3, "collapse_copies": False, **params},
        "selected_labels": montage.selected(*labels),
    }
    return foo.execute_operator(FIND_URI, ctx=ctx).result


def snapshot(dataset: fo.Dataset) -> tuple:
    dataset.reload()
    return (dataset.values("id"), sorted(dataset.get_field_schema()), dataset.list_runs())


def test_a_selected_detection_is_searched_as_its_crop_from_execute_operator(montage, api_env):
    cat = find_with_labels(montage, montage.cat)
    # the cat's photo or one of its variants (resized, recompressed...), which score within 0.001 of it
    assert photo(api_env, cat["results"][0]["id"]) == "chelsea"
    region = cat["results"][0]["query_region"]
    assert region["label_id"] == montage.cat.id and region["sample_id"] == montage.sample_id
    assert region["field"] == "ground_truth" and region["label"] == "cat"
    assert region["bounding_box"] == pytest.approx(montage.cat.bounding_box)
    assert all(r["query"] == f"label:{montage.cat.id}" for r in cat["results"])

    horse = find_with_labels(montage, montage.horse)
    assert photo(api_env, horse["results"][0]["id"]) == "horse"  # same sample, another box, another answer

    both = find_with_labels(montage, montage.cat, montage.horse)
    by_query: dict[str, list[str]] = {}
    for r in both["results"]:
        by_query.setdefault(r["query"], []).append(r["id"])
    cat_first, horse_first = by_query[f"label:{montage.cat.id}"][0], by_query[f"label:{montage.horse.id}"][0]
    assert (photo(api_env, cat_first), photo(api_env, horse_first)) == ("chelsea", "horse")
    # The gallery has one block per detection, each headed by the detection it belongs to.
    gallery = both["gallery"]
    cat_head = (
        f"Results for detection 'cat' ({montage.cat.id}, field ground_truth) of sample {montage.sample_id}"
    )
    horse_head = cat_head.replace("'cat'", "'horse'").replace(montage.cat.id, montage.horse.id)
    assert gallery.index(cat_head) < gallery.index(horse_head)
    cat_block = gallery[gallery.index(cat_head) : gallery.index(horse_head)]
    assert f"/thumbnails/{cat_first}.webp" in cat_block and f"/thumbnails/{horse_first}.webp" not in cat_block
    assert snapshot(montage.dataset)[2] == []  # searching wrote nothing


def test_the_box_is_cut_from_the_upright_image_of_an_exif_rotated_photo(api_env, make_dataset, tmp_path):
    sideways = make_montage(api_env, make_dataset(), tmp_path / "sideways.jpg", sideways=True)
    for label, expected in ((sideways.cat, "chelsea"), (sideways.horse, "horse")):
        found = simages_fiftyone.find_similar(
            sideways.dataset, label_ids=label.id, num_similar=3, collapse_copies=False
        )
        assert photo(api_env, found.images[0].image.id) == expected


def test_the_form_offers_the_selected_detections(montage):
    props = asyncio.run(
        resolve_type(
            OperatorRegistry(),
            IMPORT_URI,
            {
                "dataset_name": montage.dataset.name,
                "params": {},
                "selected_labels": montage.selected(montage.cat, montage.horse),
                "current_sample": montage.sample_id,
            },
        )
    ).to_json()["type"]["properties"]
    assert props["source"]["default"] == "selected_labels"
    choices = {c["value"]: c["label"] for c in props["source"]["view"]["choices"]}
    assert choices["selected_labels"] == "Selected detections (2)"
    assert props["selected_labels_notice"]["view"]["label"].startswith("2 selected detections as queries")
    assert not any(p.get("invalid") for p in props.values())


def test_label_ids_from_python_import_the_crop_with_the_box_as_provenance(montage, api_env, tmp_path):
    dataset = montage.dataset
    found = simages_fiftyone.find_similar(
        dataset, label_ids=[montage.horse.id], num_similar=3, collapse_copies=False
    )
    assert photo(api_env, found.images[0].image.id) == "horse"
    assert found.images[0].query.region is not None and found.images[0].query.region.label == "horse"

    result = simages_fiftyone.import_similar(
        dataset, label_ids=[montage.cat.id], num_similar=3, media_dir=str(tmp_path / "m"), screen_copies=False
    )
    assert result.imported == result.found == 3
    imported = dataset.match_tags(result.tag)
    first = imported.match(fo.ViewField("simages_rank") == 1).first()
    assert photo(api_env, first.simages_id) == "chelsea"
    for sample in imported:
        assert sample.simages_query == f"label:{montage.cat.id}"
        assert sample.simages_query_label_id == montage.cat.id
        assert sample.simages_query_sample_id == montage.sample_id
        assert sample.simages_query_field == "ground_truth"
        assert sample.simages_query_box == pytest.approx(montage.cat.bounding_box)
    run = dataset.get_run_info(result.run_key).config.serialize()
    assert run["source"] == "selected_labels" and run["label_ids"] == [montage.cat.id]
    assert run["query_regions"] == [
        {
            "sample_id": montage.sample_id,
            "field": "ground_truth",
            "label_id": montage.cat.id,
            "label": "cat",
            "bounding_box": pytest.approx(montage.cat.bounding_box),
        }
    ]
    # The montage itself has none of the provenance fields.
    assert dataset[montage.sample_id].simages_query_label_id is None


def test_dedup_and_copy_screening_apply_to_detection_queries(montage, api_env, tmp_path):
    dataset = montage.dataset
    cat_photo = fo.Sample(filepath=str(api_env.images_dir / "chelsea.jpg"))
    dataset.add_sample(cat_photo)
    params = {"source": "selected_labels", "num_similar": 5, "labels": True, "media_dir": str(tmp_path / "m")}
    ctx = {"dataset": dataset.name, "params": params, "selected_labels": montage.selected(montage.cat)}
    foo.execute_operator(IMPORT_URI, ctx=ctx)
    dataset.reload()
    first_key = sorted(k for k in dataset.list_runs() if k.startswith("simages_"))[-1]
    first = dataset.load_run_results(first_key).serialize()
    # chelsea.jpg (and its variants) are copies of the dataset's own cat photo: skipped, mapped to it
    assert first["skipped_copies"] >= 1 and first["copies"][api_env.record("chelsea.jpg").id] == cat_photo.id
    assert first["imported"] + first["skipped_copies"] == first["found"] == 5
    assert dataset.get_run_info(first_key).config.serialize()["label_ids"] == [montage.cat.id]

    again = simages_fiftyone.import_similar(
        dataset, label_ids=montage.cat.id, num_similar=5, media_dir=str(tmp_path / "m"), screen_copies=False
    )
    assert again.skipped_duplicates == first["imported"] and again.imported == first["skipped_copies"]


@pytest.mark.parametrize(
    ("which", "says"),
    [
        ("polyline", "is a Polyline, not a detection"),
        ("classification", "is a Classification, not a detection"),
        ("unknown", "no label with id 0123456789abcdef01234567 in dataset"),
        ("malformed", "not a FiftyOne label id: 'box-1'"),
        ("other dataset", "no label with id"),
    ],
)
def test_a_bad_label_is_refused_by_name_and_nothing_is_written(montage, make_dataset, tmp_path, which, says):
    other = make_dataset("horse.jpg")
    other_sample = other.first()
    other_sample["ground_truth"] = fo.Detections(
        detections=[fo.Detection(label="horse", bounding_box=[0, 0, 1, 1])]
    )
    other_sample.save()
    label_id = {
        "polyline": montage.polyline.id,
        "classification": montage.classification.id,
        "unknown": "0123456789abcdef01234567",
        "malformed": "box-1",
        "other dataset": other_sample.ground_truth.detections[0].id,
    }[which]
    dataset = montage.dataset
    before = snapshot(dataset)
    media = tmp_path / "media"
    entries = (
        (simages_fiftyone.find_similar, {}),
        (simages_fiftyone.import_similar, {"media_dir": str(media)}),
    )
    for entry, extra in entries:
        with pytest.raises(ParamError) as info:
            entry(dataset, label_ids=[montage.cat.id, label_id], **extra)
        assert info.value.field == "label_ids" and str(info.value).startswith("label_ids: "), str(info.value)
        assert says in str(info.value) and isinstance(info.value, ValueError)
    # The App: the form's banner, and execute_operator refusing with the same words.
    selected = [
        {
            "label_id": montage.cat.id,
            "sample_id": montage.sample_id,
            "field": "ground_truth",
            "frame_number": None,
        },
        {"label_id": label_id, "sample_id": montage.sample_id, "field": "outlines", "frame_number": None},
    ]
    params = {"source": "selected_labels", "media_dir": str(media)}
    with pytest.raises(foo.executor.ExecutionError) as app_error:
        foo.execute_operator(
            IMPORT_URI, ctx={"dataset": dataset.name, "params": params, "selected_labels": selected}
        )
    assert "selected_labels: " in str(app_error.value) and says in str(app_error.value)
    assert snapshot(dataset) == before and not media.exists()


def test_labels_on_video_frames_and_an_empty_selection_are_explained(montage):
    dataset = montage.dataset
    frame_label = [
        {
            "label_id": montage.cat.id,
            "sample_id": montage.sample_id,
            "field": "frames.detections",
            "frame_number": 3,
        }
    ]
    for selected, says in ((frame_label, "on frame 3 of a video"), ([], "select detections")):
        with pytest.raises(foo.executor.ExecutionError) as info:
            foo.execute_operator(
                FIND_URI,
                ctx={
                    "dataset": dataset.name,
                    "params": {"source": "selected_labels"},
                    "selected_labels": selected,
                },
            )
        assert says in str(info.value)
    # As for ``sample_ids=[]``: an empty list is no query at all, and the error lists the five.
    with pytest.raises(ParamError, match=r"^text/url/image/sample_ids/label_ids: give exactly one of"):
        simages_fiftyone.find_similar(dataset, label_ids=[])


def test_a_box_too_small_to_search_is_refused_before_anything_is_written(montage, tmp_path):
    dataset = montage.dataset
    sample = dataset[montage.sample_id]
    tiny = fo.Detection(label="speck", bounding_box=[0.5, 0.5, 0.001, 0.001])
    sample.ground_truth.detections.append(tiny)
    sample.save()
    before = snapshot(dataset)
    with pytest.raises(ParamError, match="too small to search with") as info:
        simages_fiftyone.import_similar(dataset, label_ids=[tiny.id], media_dir=str(tmp_path / "m"))
    assert info.value.field == "label_ids" and tiny.id in str(info.value)
    assert snapshot(dataset) == before and not Path(tmp_path / "m").exists()
