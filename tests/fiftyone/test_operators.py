"""The operators through ``fiftyone.operators.execute_operator``, on throwaway datasets, against the local server."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fo_helpers import FIND_URI, IMPORT_URI, coco_boxes, unique_name

from simages_core.boxes import to_fiftyone

pytestmark = pytest.mark.integration


def last_run(dataset: fo.Dataset) -> dict:
    keys = sorted(k for k in dataset.list_runs() if k.startswith("simages_"))
    assert keys, "the import recorded no run"
    return dataset.load_run_results(keys[-1]).serialize()


def run_import(dataset: fo.Dataset, params: dict, **ctx) -> dict:
    """Execute import_similar immediately and return the counts it recorded."""
    before = set(dataset.list_runs())
    foo.execute_operator(IMPORT_URI, ctx={"dataset": dataset.name, "params": params, **ctx})
    target = fo.load_dataset(params["new_dataset_name"]) if params.get("target") == "new" else dataset
    target.reload()
    new = sorted(set(target.list_runs()) - before)
    assert new, "no run recorded"
    return target.load_run_results(new[-1]).serialize()


def test_find_similar_by_text_returns_gallery_and_leaves_dataset(api_env, make_dataset):
    dataset = make_dataset("chelsea.jpg")
    result = foo.execute_operator(
        FIND_URI,
        ctx={
            "dataset": dataset.name,
            "params": {
                "source": "text",
                "text": "cat",
                "num_similar": 5,
                "labels": True,
                "collapse_copies": False,
            },
        },
    ).result
    assert result["count"] == 5 and result["copies_collapsed"] is False
    assert result["results"][0]["classes"] == ["cat"]
    assert [r["rank"] for r in result["results"]] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True)
    assert result["results"][0]["thumbnail_url"] in result["gallery"]
    assert "cat 1.00" in result["gallery"] or "cat " in result["gallery"]
    assert len(dataset) == 1 and "simages_id" not in dataset.get_field_schema()


def test_import_selected_samples_with_labels_matches_coco_boxes(api_env, make_dataset, tmp_path):
    dataset = make_dataset("chelsea.jpg", "coffee.jpg")
    ids = dataset.values("id")
    media = tmp_path / "media"
    # Screening off: the boxes of the dataset's own photos (copies) are what is compared here.
    counts = run_import(
        dataset,
        {
            "source": "selected",
            "num_similar": 3,
            "labels": True,
            "media_dir": str(media),
            "screen_copies": False,
        },
        selected=ids,
    )
    assert counts["imported"] == counts["found"] > 0 and counts["screened"] is False
    assert counts["skipped_duplicates"] == 0 and counts["failed_downloads"] == 0
    imported = dataset.match_tags(counts["tag"])
    assert len(imported) == counts["imported"]
    expected = coco_boxes(api_env)
    records = {r.id: r for r in api_env.records()}
    for sample in imported:
        assert os.path.isfile(sample.filepath) and Path(sample.filepath).parent == media
        record = records[sample.simages_id]
        assert sample.metadata.width == record.width and sample.metadata.height == record.height
        assert sample.simages_source_url == f"{api_env.base_url}/images/{record.id}"
        assert sample.simages_thumbnail_url == f"{api_env.base_url}/thumbnails/{record.id}.webp"
        assert sample.simages_query.startswith("sample:") and sample.simages_query[7:] in ids
        assert sample.simages_query_time is not None
        want = sorted(
            (name, to_fiftyone(box, w, h))
            for name, box, w, h in expected[record.file]
            if to_fiftyone(box, w, h)
        )
        got = sorted((d.label, tuple(d.bounding_box)) for d in sample.detections.detections)
        assert [g[0] for g in got] == [w[0] for w in want]
        for (_, gb), (_, wb) in zip(got, want, strict=True):
            assert gb == pytest.approx(wb, abs=2e-3)
        for d in sample.detections.detections:
            assert 0 < d.confidence <= 1 and isinstance(d.yolo_class_id, int)
    ranks = sorted(imported.values("simages_rank"))
    assert ranks == list(range(1, len(ranks) + 1))


def test_import_by_url_without_labels_then_rerun_skips_everything(api_env, make_dataset, tmp_path):
    dataset = make_dataset("horse.jpg")
    url = api_env.image_url("horse.jpg")
    params = {
        "source": "url",
        "url": url,
        "num_similar": 4,
        "labels": False,
        "media_dir": str(tmp_path / "m"),
        "screen_copies": False,  # dedup by API id and URL is what this test is about
    }
    first = run_import(dataset, params)
    assert first["imported"] == 4 and first["skipped_duplicates"] == 0
    imported = dataset.match_tags(first["tag"])
    assert set(imported.values("simages_query")) == {f"url:{url}"}
    assert "detections" not in dataset.get_field_schema()
    assert imported.first().simages_rank == 1
    files = sorted(os.listdir(tmp_path / "m"))
    assert len(files) == 4 and not [f for f in files if f.startswith(".")]

    second = run_import(dataset, params)
    assert second["imported"] == 0 and second["skipped_duplicates"] == 4 and second["found"] == 4
    assert len(dataset) == 1 + 4
    assert sorted(os.listdir(tmp_path / "m")) == files


def test_import_text_into_new_dataset_with_class_filter(api_env, make_dataset, cleanup_datasets, tmp_path):
    dataset = make_dataset("chelsea.jpg")
    new_name = unique_name("simages-new")
    cleanup_datasets.append(new_name)
    counts = run_import(
        dataset,
        {
            "source": "text",
            "text": "espresso cup with a spoon",
            "num_similar": 3,
            "labels": True,
            "target": "new",
            "new_dataset_name": new_name,
            "label_field": "simages_labels_x" if False else "found",
            "classes": ["cup"],
            "min_confidence": 0.5,
            "media_dir": str(tmp_path / "new"),
        },
    )
    assert len(dataset) == 1  # the current dataset is untouched
    new = fo.load_dataset(new_name)
    assert counts["dataset_name"] == new_name and counts["new_dataset"] is True
    # The answers include copies of one photo (resized, recompressed...): the first is imported,
    # the others are skipped as copies of its new sample.
    assert counts["found"] == 3 and len(new) == counts["imported"] == 3 - counts["skipped_copies"] < 3
    assert set(counts["copies"].values()) <= set(new.values("id"))
    assert new.first().simages_fingerprint
    labels = {d.label for s in new for d in (s.found.detections if s.found else [])}
    assert labels == {"cup"}  # spoons filtered out
    assert set(new.values("simages_query")) == {"text:espresso cup with a spoon"}


def test_import_uploaded_image_and_current_sample(api_env, make_dataset, tmp_path):
    dataset = make_dataset("coffee.jpg", "clock.jpg")
    content = base64.b64encode((api_env.images_dir / "astronaut.jpg").read_bytes()).decode()
    upload = {"name": "astro.jpg", "type": "image/jpeg", "size": 1, "content": content, "last_modified": 0}
    counts = run_import(
        dataset,
        {"source": "upload", "upload": upload, "num_similar": 2, "labels": True, "media_dir": str(tmp_path)},
    )
    top = dataset.match_tags(counts["tag"]).sort_by("simages_rank").first()
    files = {r.id: r.file for r in api_env.records()}
    assert files[top.simages_id].startswith("astronaut") and top.simages_query == "upload:astro.jpg"
    assert [d.label for d in top.detections.detections] == ["person"]
    assert counts["imported"] == 1 and counts["skipped_copies"] == 1  # the second answer copies the first

    # The sample open in the modal finds itself and its copies: nothing is imported, all are copies of it.
    clock_id = dataset.match({"filepath": str(api_env.images_dir / "clock.jpg")}).first().id
    counts = run_import(
        dataset,
        {"source": "current_sample", "num_similar": 2, "labels": True, "media_dir": str(tmp_path)},
        current_sample=clock_id,
    )
    assert counts["imported"] == 0 and counts["skipped_copies"] == 2 == counts["found"]
    assert set(counts["copies"].values()) == {clock_id}
    assert all(files[i].startswith("clock") for i in counts["copies"])
    assert "skipped: 2 copies of samples already in the dataset" in counts["summary"]

    counts = run_import(
        dataset,
        {
            "source": "current_sample",
            "num_similar": 2,
            "labels": True,
            "media_dir": str(tmp_path),
            "screen_copies": False,
        },
        current_sample=clock_id,
    )
    samples = dataset.match_tags(counts["tag"])
    assert set(samples.values("simages_query")) == {f"sample:{clock_id}"} and counts["imported"] == 2
    assert all(files[i].startswith("clock") for i in samples.values("simages_id"))


def test_find_similar_merges_selected_samples(api_env, make_dataset):
    dataset = make_dataset("chelsea.jpg", "chelsea.jpg")
    ids = dataset.values("id")
    result = foo.execute_operator(
        FIND_URI,
        ctx={
            "dataset": dataset.name,
            "params": {
                "source": "selected",
                "num_similar": 4,
                "import_results": True,
                "collapse_copies": False,
            },
            "selected": ids,
        },
    ).result
    found = [r["id"] for r in result["results"]]
    assert len(found) == len(set(found)) == 4  # same query twice: merged, not doubled
    assert found[0] == api_env.record("chelsea.jpg").id


def test_delegated_import_runs_in_process(api_env, make_dataset, tmp_path):
    from fiftyone.operators.delegated import DelegatedOperationService

    dataset = make_dataset("motorcycle_left.jpg")
    params = {
        "source": "text",
        "text": "motorcycle",
        "num_similar": 3,
        "media_dir": str(tmp_path),
        "screen_copies": False,  # the dataset's photo is what the text finds: counted apart in test_screening
    }
    queued = foo.execute_operator(
        IMPORT_URI, ctx={"dataset": dataset.name, "params": params, "request_delegation": True}
    )
    assert queued.delegated
    assert len(dataset) == 1  # nothing happens until an orchestrator runs it
    service = DelegatedOperationService()
    try:
        service.execute_queued_operations(operator=IMPORT_URI, dataset_name=dataset.name)
        dataset.reload()
        counts = last_run(dataset)
        assert counts["imported"] == 3 and len(dataset) == 4
        ops = service.list_operations(operator=IMPORT_URI, dataset_name=dataset.name)
        assert [op.run_state for op in ops] == ["completed"]
    finally:
        service.delete_for_dataset(dataset.name) if hasattr(service, "delete_for_dataset") else None


@pytest.mark.parametrize(
    ("params", "ctx", "message"),
    [
        ({"source": "selected"}, {}, "select one or more samples"),
        ({"source": "current_sample"}, {}, "open a sample in the modal"),
        ({"source": "text", "text": "   "}, {}, "enter a text prompt"),
        ({"source": "url", "url": "ftp://example.com/x.jpg"}, {}, r"not an http\(s\) image URL"),
        ({"source": "url", "url": "not a url"}, {}, r"not an http\(s\) image URL"),
        ({"source": "text", "text": "cat", "num_similar": 51}, {}, "from 1 to 50"),
        ({"source": "text", "text": "cat", "num_similar": 0}, {}, "from 1 to 50"),
    ],
)
def test_form_rejects_bad_input(api_env, make_dataset, params, ctx, message):
    dataset = make_dataset("chelsea.jpg")
    for uri in (FIND_URI, IMPORT_URI):
        with pytest.raises(foo.executor.ExecutionError, match=message):
            foo.execute_operator(uri, ctx={"dataset": dataset.name, "params": params, **ctx})
    assert len(dataset) == 1


def test_form_explains_a_missing_api_key(api_env, make_dataset, monkeypatch, tmp_path):
    monkeypatch.delenv("SIMAGES_API_KEY")
    monkeypatch.delenv("TERNAUS_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ternaus/ternaus.json either
    dataset = make_dataset("chelsea.jpg")
    with pytest.raises(foo.executor.ExecutionError, match="SIMAGES_API_KEY"):
        foo.execute_operator(
            FIND_URI, ctx={"dataset": dataset.name, "params": {"source": "text", "text": "cat"}}
        )


def test_python_find_similar_with_an_image_path_and_typed_result(api_env, make_dataset):
    import simages_fiftyone

    dataset = make_dataset("coffee.jpg")
    result = simages_fiftyone.find_similar(
        dataset, image=api_env.images_dir / "coffee.jpg", num_similar=3, labels=True, collapse_copies=False
    )
    assert isinstance(result, simages_fiftyone.FindSimilarResult) and len(result) == 3
    top = result.images[0]
    files = {r.id: r.file for r in api_env.records()}
    assert files[top.image.id].startswith("coffee") and str(top.query) == "upload:coffee.jpg"
    assert sorted(d.name for d in top.image.detections) == ["cup", "spoon"]
    # Not collapsed, still compared with the dataset: all three are copies of its one sample.
    assert {r.copy_of for r in result.images} == {dataset.first().id} and not top.copies
    assert len(dataset) == 1 and "simages_fingerprint" not in dataset.get_field_schema()
    with pytest.raises(simages_fiftyone.ParamError, match="exactly one"):
        simages_fiftyone.find_similar(dataset, text="cat", url="http://example.com/a.jpg")
