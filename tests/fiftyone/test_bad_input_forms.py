"""Bad-input catalogue, FiftyOne part: each malformed operator input is refused by name, and nothing is written.

Every case goes through the App's form resolution (``resolve_type``: the named input, or the
banner, is invalid with the message) and through ``execute_operator`` (which validates with
the same form: an ``ExecutionError`` whose text names the input); afterwards the dataset holds what it held, no run is recorded and
no media folder was made.
"""

from __future__ import annotations

import asyncio
import base64

import fiftyone.operators as foo
import pytest
from fiftyone.operators.executor import resolve_type
from fiftyone.operators.registry import OperatorRegistry
from fo_helpers import FIND_URI, IMPORT_URI

pytestmark = pytest.mark.integration

BOTH = (FIND_URI, IMPORT_URI)
IMPORT = (IMPORT_URI,)
TEXT = {"source": "text", "text": "cat"}


def upload(content: bytes, name: str = "query.jpg") -> dict:
    return {"name": name, "content": base64.b64encode(content).decode("ascii")}


# (case id, operators, params, App context, input the error names, what the message says)
CASES = [
    ("empty text prompt", BOTH, {"source": "text", "text": ""}, {}, "text", "enter a text prompt"),
    ("blank text prompt", BOTH, {"source": "text", "text": " \t "}, {}, "text", "enter a text prompt"),
    ("whitespace URL", BOTH, {"source": "url", "url": "   "}, {}, "url", "not an http(s) image URL"),
    ("ftp URL", BOTH, {"source": "url", "url": "ftp://example.com/a.jpg"}, {}, "url", "http or https"),
    ("URL without scheme", BOTH, {"source": "url", "url": "example.com/a.jpg"}, {}, "url", "http or https"),
    ("num_similar 0", BOTH, {**TEXT, "num_similar": 0}, {}, "num_similar", "from 1 to 50"),
    ("num_similar 51", BOTH, {**TEXT, "num_similar": 51}, {}, "num_similar", "from 1 to 50"),
    ("num_similar 'ten'", BOTH, {**TEXT, "num_similar": "ten"}, {}, "num_similar", "integer"),
    ("num_similar 2.5", BOTH, {**TEXT, "num_similar": 2.5}, {}, "num_similar", "integer"),
    (
        "upload that is not an image",
        BOTH,
        {"source": "upload", "upload": upload(b"just some notes\n", "notes.txt")},
        {},
        "upload",
        "choose an image file",
    ),
    ("empty upload", BOTH, {"source": "upload", "upload": upload(b"")}, {}, "upload", "choose an image file"),
    (
        "label field with a dot",
        IMPORT,
        {**TEXT, "label_field": "a.b"},
        {},
        "label_field",
        "not a valid field",
    ),
    ("reserved label field", IMPORT, {**TEXT, "label_field": "filepath"}, {}, "label_field", "reserved"),
    ("min_confidence 2", IMPORT, {**TEXT, "min_confidence": 2}, {}, "min_confidence", "between 0 and 1"),
    ("new dataset without a name", IMPORT, {**TEXT, "target": "new"}, {}, "new_dataset_name", "enter a name"),
    ("unknown source", BOTH, {"source": "webcam"}, {}, "source", "unknown query source"),
    ("selection with no samples", BOTH, {"source": "selected"}, {}, "selected", "select one or more"),
    ("no sample in the modal", BOTH, {"source": "current_sample"}, {}, "current_sample", "open a sample"),
    (
        "selected sample not in the dataset",
        BOTH,
        {"source": "selected"},
        {"selected": ["0123456789abcdef01234567"]},
        "selected",
        "not in dataset",
    ),
]


def form_errors(uri: str, dataset, params: dict, ctx: dict) -> dict[str, str]:
    """Input name (or ``"error"`` for the banner) -> error message, as the App receives the form."""
    prop = asyncio.run(
        resolve_type(OperatorRegistry(), uri, {"dataset_name": dataset.name, "params": params, **ctx})
    )
    props = prop.to_json()["type"]["properties"]
    return {name: p.get("error_message", "") for name, p in props.items() if p.get("invalid")}


@pytest.mark.parametrize(
    ("uris", "params", "ctx", "input_name", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input_is_refused_by_name_and_writes_nothing(
    api_env, make_dataset, tmp_path, uris, params, ctx, input_name, message
):
    dataset = make_dataset("chelsea.jpg")
    before = (dataset.values("id"), sorted(dataset.get_field_schema()), dataset.list_runs())
    media = tmp_path / "media"
    params = {**params, "media_dir": str(media)}
    for uri in uris:
        errors = form_errors(uri, dataset, params, ctx)
        # an input the form shows carries its own error; one it does not show gets the banner
        shown = errors.get(input_name, errors.get("error", ""))
        assert message in shown, (uri, errors)
        assert len(errors) == 1, errors
        with pytest.raises(foo.executor.ExecutionError) as info:
            foo.execute_operator(uri, ctx={"dataset": dataset.name, "params": params, **ctx})
        # FiftyOne validates with the same form: "Validation error. Path: <input>. Reason: <message>",
        # or, for the banner, "Path: error. Reason: <input>: <message>"
        text = str(info.value)
        assert f"Path: {input_name}." in text or f"Path: error. Reason: {input_name}: " in text, text
        assert message in text
    dataset.reload()
    assert (dataset.values("id"), sorted(dataset.get_field_schema()), dataset.list_runs()) == before
    assert not media.exists()
