"""Python callers are told the Python parameter (``image``, ``sample_ids``), not the App's input
(``upload``, ``selected``) and its hints; the App keeps its own wording (``test_bad_input_forms``)."""

from __future__ import annotations

import pytest

import simages_fiftyone
from simages_fiftyone import ParamError

pytestmark = pytest.mark.integration

NOT_IN_DATASET = "0123456789abcdef01234567"


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\n")
    return path


@pytest.mark.parametrize("entry", ["find_similar", "import_similar"])
@pytest.mark.parametrize(
    ("kwargs", "field", "says"),
    [
        ({"image": "notes"}, "image", "not an image"),
        ({"image": b"definitely not an image"}, "image", "not an image"),
        ({"image": "missing"}, "image", "not found"),
        ({"sample_ids": [NOT_IN_DATASET]}, "sample_ids", "not in dataset"),
        ({"sample_ids": [NOT_IN_DATASET] * 101}, "sample_ids", "at most 100 sample ids"),
        (
            {"text": "cat", "url": "http://127.0.0.1:9/a.jpg"},
            "text/url/image/sample_ids/label_ids",
            "exactly one",
        ),
    ],
    ids=["text file", "bytes", "missing file", "unknown sample", "too many samples", "two sources"],
)
def test_errors_name_the_python_parameter(api_env, make_dataset, notes, tmp_path, entry, kwargs, field, says):
    dataset = make_dataset("chelsea.jpg")
    if kwargs.get("image") == "notes":
        kwargs = {"image": notes}
    elif kwargs.get("image") == "missing":
        kwargs = {"image": tmp_path / "missing.jpg"}
    with pytest.raises(ParamError) as info:
        getattr(simages_fiftyone, entry)(dataset, **kwargs)
    error = info.value
    assert error.field == field and str(error).startswith(f"{field}: "), str(error)
    assert says in str(error)
    # None of the App's names or hints leak into a Python caller's error.
    for app_words in ("upload", "choose an image file", "selected", "select one", "current_sample"):
        assert app_words not in str(error), str(error)
    assert len(dataset) == 1 and not dataset.list_runs()


def test_expand_dataset_names_its_own_parameters(api_env, make_dataset):
    dataset = make_dataset("chelsea.jpg")
    with pytest.raises(ParamError) as info:
        simages_fiftyone.expand_dataset(dataset, per_sample=0)
    assert info.value.field == "per_sample" and str(info.value).startswith("per_sample: ")


def test_one_table_names_each_input_for_the_app_and_for_python():
    from simages_core import InvalidRequest
    from simages_fiftyone._param_errors import PYTHON_NAMES, form_input, from_core

    core = InvalidRequest("image file x.txt is not an image Pillow can read", field="image")
    app = from_core(core, "upload")
    assert (app.field, str(app)) == (
        "upload",
        "upload: choose an image file to upload (image file x.txt is not an image Pillow can read)",
    )
    python = app.for_python()
    assert (python.field, str(python)) == ("image", "image: image file x.txt is not an image Pillow can read")
    assert form_input("url/image/text", "selected") == "selected"
    assert PYTHON_NAMES["selected"] == PYTHON_NAMES["current_sample"] == "sample_ids"
