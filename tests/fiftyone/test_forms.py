"""The forms as the App receives them (``resolve_type``): sources, defaults and inline errors."""

from __future__ import annotations

import asyncio

import pytest
from fiftyone.operators.executor import resolve_type
from fiftyone.operators.registry import OperatorRegistry
from fo_helpers import FIND_URI, IMPORT_URI

pytestmark = pytest.mark.integration


def form(uri: str, dataset, params: dict, **ctx) -> dict:
    prop = asyncio.run(
        resolve_type(OperatorRegistry(), uri, {"dataset_name": dataset.name, "params": params, **ctx})
    )
    return prop.to_json()["type"]["properties"]


def test_selection_is_the_default_source_and_every_source_is_offered(api_env, make_dataset):
    dataset = make_dataset("chelsea.jpg", "horse.jpg")
    props = form(FIND_URI, dataset, {}, selected=dataset.values("id"))
    assert props["source"]["default"] == "selected"
    assert props["source"]["type"]["values"] == [
        "selected",
        "selected_labels",
        "current_sample",
        "url",
        "text",
        "upload",
    ]
    assert props["source"]["view"]["choices"][0]["label"] == "Selected samples (2)"
    assert props["num_similar"]["default"] == 10 and props["labels"]["default"] is False
    assert not any(p.get("invalid") for p in props.values())
    assert "import_results" in props

    modal = form(IMPORT_URI, dataset, {}, current_sample=dataset.first().id)
    assert modal["source"]["default"] == "current_sample" and modal["labels"]["default"] is True
    assert {"label_field", "classes", "min_confidence", "target", "media_dir", "delegate"} <= set(modal)
    assert "new_dataset_name" not in modal
    assert "new_dataset_name" in form(
        IMPORT_URI, dataset, {"target": "new"}, current_sample=dataset.first().id
    )


def test_inline_errors_point_at_the_input(api_env, make_dataset):
    dataset = make_dataset("chelsea.jpg")
    props = form(IMPORT_URI, dataset, {"source": "text", "text": " "})
    assert props["text"]["invalid"] and "enter a text prompt" in props["text"]["error_message"]
    props = form(FIND_URI, dataset, {"source": "url", "url": "example.com/cat.jpg"})
    assert props["url"]["invalid"] and "not an http(s) image URL" in props["url"]["error_message"]
    props = form(FIND_URI, dataset, {"source": "text", "text": "cat", "num_similar": 80})
    assert props["num_similar"]["invalid"] and "1 to 50" in props["num_similar"]["error_message"]
    props = form(IMPORT_URI, dataset, {"source": "text", "text": "cat", "label_field": "simages_id"})
    assert props["label_field"]["invalid"] and "reserved" in props["label_field"]["error_message"]
    props = form(FIND_URI, dataset, {"source": "selected"})
    assert props["error"]["invalid"] and "select one or more samples" in props["error"]["error_message"]


def test_missing_key_banner_says_how_to_set_it(api_env, make_dataset, monkeypatch, tmp_path):
    monkeypatch.delenv("SIMAGES_API_KEY")
    monkeypatch.delenv("TERNAUS_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    dataset = make_dataset("chelsea.jpg")
    props = form(FIND_URI, dataset, {"source": "text", "text": "cat"})
    banner = props["error"]
    assert banner["invalid"] and banner["view"]["name"] == "Error"
    assert "SIMAGES_API_KEY" in banner["error_message"] and "export" in banner["error_message"]


def test_find_output_is_a_grid_of_captioned_thumbnails_and_the_import_button(api_env, make_dataset):
    """What the App's output window receives from ``find_similar`` (its browser test clicks it)."""
    from simages_fiftyone import find_similar
    from simages_fiftyone._form_outputs import GALLERY_COLUMNS, find_output

    dataset = make_dataset("chelsea.jpg")
    result = find_similar(dataset, text="a cat", num_similar=3, labels=True, collapse_copies=False)
    query = {"source": "text", "text": "a cat", "num_similar": 3, "labels": True}
    outputs, values = find_output(result, query, IMPORT_URI)
    props = outputs.to_json()["properties"]
    grid = props["thumbnails"]
    assert grid["view"]["name"] == "GridView" and grid["view"]["columns"] == GALLERY_COLUMNS
    cells = grid["type"]["properties"]
    assert list(cells) == [f"image_{r.rank}" for r in result.images] and len(cells) == 3
    first = result.images[0]
    assert cells["image_1"]["view"]["name"] == "ImageView"
    assert cells["image_1"]["view"]["label"] == f"#1 score {first.score:.3f}"
    # The dataset's own photo is what "a cat" finds first: the cell says so, then the classes.
    assert first.copy_of == dataset.first().id
    assert cells["image_1"]["view"]["description"].startswith(f"copy of sample {first.copy_of} · cat ")
    assert values["thumbnails"]["image_1"] == first.image.thumbnail_url and values["count"] == 3
    button = props["import_button"]["view"]
    assert button["operator"] == IMPORT_URI and button["params"] == query and button["prompt"] is True


def invalid(props: dict) -> dict[str, str]:
    return {name: p.get("error_message", "") for name, p in props.items() if p.get("invalid")}


@pytest.mark.parametrize("uri", [FIND_URI, IMPORT_URI])
def test_a_fresh_form_shows_no_error_until_the_user_acts(api_env, make_dataset, uri):
    """The App resolves a form as it opens (no params), then with every input's default filled in:
    neither is the user's doing, so nothing is red; a typed (even cleared) prompt is validated."""
    dataset = make_dataset("chelsea.jpg")
    assert invalid(form(uri, dataset, {})) == {}
    defaults = {
        name: p["default"] for name, p in form(uri, dataset, {}).items() if p.get("default") is not None
    }
    assert defaults["source"] == "text"  # nothing selected: the text prompt, still empty
    assert invalid(form(uri, dataset, defaults)) == {}
    assert "enter a text prompt" in invalid(form(uri, dataset, {**defaults, "text": ""}))["text"]
    assert (
        "1 to 50"
        in invalid(form(uri, dataset, {**defaults, "num_similar": 80, "text": "cat"}))["num_similar"]
    )
    # Changing any other input is acting too: the empty prompt is then pointed out.
    assert "text" in invalid(form(uri, dataset, {**defaults, "num_similar": 3}))


def test_executing_a_fresh_form_is_still_refused_by_name(api_env, make_dataset):
    import fiftyone.operators as foo

    dataset = make_dataset("chelsea.jpg")
    with pytest.raises(foo.executor.ExecutionError) as info:
        foo.execute_operator(FIND_URI, ctx={"dataset": dataset.name, "params": {"source": "text"}})
    assert "Path: text." in str(info.value) and "enter a text prompt" in str(info.value)
