"""Bad-input catalogue, client side: malformed answers to the client parser, malformed ``simages`` CLI input.

Each parser input raises ``DecodingError`` (never another exception type) with a message saying what
was wrong; each CLI input exits 2 with a message naming the option and the problem. Part of the
project-wide catalogue (the server, the Label Studio backend and the FiftyOne plugin have their own).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

import simages_core as sc
from simages_core.cli import main
from simages_core.protocol import parse_response

_IMAGE = {"url": "https://h/a.jpg", "score": 0.5, "thumbnail_url": "https://h/a.webp", "id": 1}


def _envelope(body: Any) -> bytes:
    return json.dumps({"statusCode": 200, "body": json.dumps(body)}).encode()


def _with_image(**changes: Any) -> bytes:
    return _envelope({"images": [{**_IMAGE, **changes}]})


def _with_annotation(annotation: Any, **entry: Any) -> bytes:
    return _envelope({"images": [_IMAGE], "annotations": [{"image_id": 1, "annotations": [annotation], **entry}]})


_DETECTION = {"name": "cat", "score": 0.9, "box": [1, 2, 3, 4], "category_id": 15}

PARSER_CASES = [
    pytest.param(b"[" * 50_000 + b"]" * 50_000, "nested too deeply", id="arrays-nested-50000-deep"),
    pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply", id="objects-nested-50000-deep"),
    pytest.param(
        json.dumps({"statusCode": 200, "body": "[" * 50_000 + "]" * 50_000}).encode(),
        "nested too deeply",
        id="body-string-nested-50000-deep",
    ),
    pytest.param(b"\xff\xfe\x00\x81garbage\x00", "not a JSON object", id="binary-garbage"),
    pytest.param(b"", "not a JSON object", id="empty-response"),
    pytest.param(b'{"statusCode": 200, "body": "{\\"images\\": [', "not a JSON object", id="truncated-json"),
    pytest.param(b'{"images": [1' + b"0" * 5000 + b"]}", "not a JSON object", id="integer-of-5000-digits"),
    pytest.param(b'{"statusCode": true}', "'statusCode' must be an integer", id="status-code-bool"),
    pytest.param(_envelope(None), "'body' must be a JSON object", id="body-null"),
    pytest.param(_envelope({"images": {"0": _IMAGE}}), "'body.images' must be a list", id="images-an-object"),
    pytest.param(_envelope({"images": [], "info": ["x"]}), "'body.info' must be an object", id="info-a-list"),
    pytest.param(_envelope({"images": ["https://h/a.jpg"]}), "'body.images[0]' must be an object", id="image-a-string"),
    pytest.param(
        _with_image(score=float("nan")), "score' must be a finite number", id="score-nan"
    ),
    pytest.param(_with_image(score=1e308).replace(b"1e+308", b"1e999"), "finite number", id="score-overflows-to-inf"),
    pytest.param(_with_image(score="0.9"), "score' must be a finite number", id="score-a-string"),
    pytest.param(_with_image(score=10**400), "OverflowError", id="score-400-digit-integer"),
    pytest.param(_with_image(id=True), "id' must be a non-empty string or integer", id="id-bool"),
    pytest.param(_with_image(id=""), "id' must be a non-empty string or integer", id="id-empty"),
    pytest.param(_with_image(url=None), "'body.images[0].url' must be a str", id="url-null"),
    pytest.param(_with_annotation({**_DETECTION, "box": [1, 2, 3, 4, 5]}), "must have 4 numbers", id="box-5-numbers"),
    pytest.param(_with_annotation({**_DETECTION, "box": [1, 2, "3", 4]}), "box' must be a finite", id="box-string"),
    pytest.param(
        _with_annotation({**_DETECTION, "category_id": 1.0}), "category_id' must be an integer", id="category-float"
    ),
    pytest.param(_with_annotation(_DETECTION, width=-5), "width' must be a positive number", id="width-negative"),
    pytest.param(_with_annotation("cat"), "annotations[0]' must be an object", id="detection-a-string"),
]


@pytest.mark.parametrize(("content", "words"), PARSER_CASES)
def test_parser_refuses_malformed_answer_with_a_decoding_error(content, words):
    with pytest.raises(sc.DecodingError) as info:
        parse_response(200, content, labels_requested=True)
    assert words in str(info.value)
    assert len(str(info.value)) < 600  # a hostile answer cannot flood logs through our message


def _run(argv: list[str], capsys) -> tuple[int, str]:
    err = io.StringIO()
    try:
        code = main(argv, out=io.StringIO(), err=err)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code if isinstance(exc.code, int) else 2
    return code, err.getvalue() + capsys.readouterr().err


def _text_file(tmp_path) -> str:
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    return str(path)


def _truncated_jpeg(tmp_path) -> str:
    buf = io.BytesIO()
    Image.effect_noise((200, 200), 50).convert("RGB").save(buf, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[:2000])
    return str(path)


CLI_CASES = [
    pytest.param(["search", "--text", "cat", "-n", "0"], ["--num-similar", "from 1 to 50", "got 0"], id="n-zero"),
    pytest.param(["search", "--text", "cat", "-n", "51"], ["--num-similar", "from 1 to 50"], id="n-51"),
    pytest.param(["search", "--text", "cat", "-n", "abc"], ["--num-similar", "integer", "'abc'"], id="n-not-a-number"),
    pytest.param(["search", "--text", "cat", "-n", "2.5"], ["--num-similar", "integer"], id="n-fraction"),
    pytest.param(["search", "--text", ""], ["--text", "non-empty"], id="text-empty"),
    pytest.param(["search", "--text", "   "], ["--text", "non-empty"], id="text-blank"),
    pytest.param(["search", "--url", "ftp://host/x.jpg"], ["--url", "http or https"], id="url-ftp"),
    pytest.param(["search", "--url", "not a url"], ["--url", "http or https"], id="url-not-a-url"),
    pytest.param(["search", "--image", "missing.jpg"], ["--image", "image file not found: missing.jpg"], id="image-missing"),
    pytest.param(["search", "--image", "{tmp}"], ["--image", "folder"], id="image-a-folder"),
    pytest.param(["search", "--image", "{text_file}"], ["--image", "not an image"], id="image-a-text-file"),
    pytest.param(["search", "--image", "{truncated}"], ["--image", "truncated"], id="image-truncated-jpeg"),
    pytest.param(["--api-url", "ftp://host", "search", "--text", "cat"], ["--api-url", "http"], id="api-url-ftp"),
    pytest.param(["--api-url", "host:8000", "search", "--text", "cat"], ["--api-url", "http"], id="api-url-no-scheme"),
    pytest.param(
        ["--api-url", "http://me:pw-s3cret@host/?k=1", "search", "--text", "cat"],
        ["--api-url", "query"],
        id="api-url-with-query",
    ),
    pytest.param(["usage", "--days", "0"], ["--days", "from 1 to 366"], id="days-zero"),
    pytest.param(["usage", "--days", "abc"], ["--days", "whole number"], id="days-not-a-number"),
    pytest.param(["search"], ["one of the arguments --url --image --text is required"], id="no-query"),
    pytest.param(["search", "--text", "a", "--url", "http://h/x"], ["not allowed with"], id="two-queries"),
]


@pytest.mark.parametrize(("argv", "words"), CLI_CASES)
def test_cli_refuses_bad_input_with_exit_2_naming_the_problem(
    argv, words, tmp_path, monkeypatch, capsys, scripted_api
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIMAGES_API_KEY", "cli-key-s3cret")
    monkeypatch.setenv("SIMAGES_API_URL", scripted_api.url)
    values = {"tmp": str(tmp_path), "text_file": _text_file(tmp_path), "truncated": _truncated_jpeg(tmp_path)}
    code, err = _run([arg.format(**values) for arg in argv], capsys)
    assert code == 2, err
    for word in words:
        assert word in err
    assert "s3cret" not in err
    assert scripted_api.received == []  # refused before any request


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("SIMAGES_API_URL", "ftp://u:pw-s3cret@host/", ["SIMAGES_API_URL", "http"]),
        ("SIMAGES_CACHE_TTL", "a day", ["SIMAGES_CACHE_TTL", "number of seconds"]),
    ],
    ids=["env-api-url-ftp", "env-cache-ttl-not-a-number"],
)
def test_cli_names_a_bad_environment_setting(name, value, words, monkeypatch, capsys):
    monkeypatch.setenv("SIMAGES_API_KEY", "cli-key-s3cret")
    monkeypatch.setenv(name, value)
    code, err = _run(["search", "--text", "cat"], capsys)
    assert code == 2, err
    for word in words:
        assert word in err
    assert "s3cret" not in err
