"""The ``simages`` command against a real loopback server."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from simages_core.cli import main

from .conftest import SAMPLE_BODY_WITH_LABELS, Reply


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_search_prints_a_table_with_labels(scripted_api):
    scripted_api.script(scripted_api.success(SAMPLE_BODY_WITH_LABELS))
    code, out, _ = _run(
        [
            "--api-url",
            scripted_api.url,
            "--api-key",
            "k",
            "search",
            "--text",
            "cat",
            "-n",
            "2",
            "--labels",
            "--no-cache",
        ]
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["#", "score", "id", "labels", "url"]
    assert lines[1].split()[:3] == ["1", "0.9000", "a1"] and "cat" in lines[1] and "person" in lines[1]
    assert lines[1].endswith("https://img.example/a.jpg")
    assert lines[-1] == "2 image(s)"


def test_search_json_is_the_body(scripted_api):
    scripted_api.script(scripted_api.success(SAMPLE_BODY_WITH_LABELS))
    code, out, _ = _run(
        [
            "--api-url",
            scripted_api.url,
            "--api-key",
            "k",
            "search",
            "--url",
            "https://example.com/x.jpg",
            "--json",
            "--labels",
            "--no-cache",
        ]
    )
    body = json.loads(out)
    assert code == 0 and [im["id"] for im in body["images"]] == ["a1", "7"]
    assert body["annotations"][0]["annotations"][0]["name"] == "cat"


def test_api_error_exit_code_and_message(scripted_api):
    scripted_api.script(Reply(402, {"statusCode": 402, "error": "You exceeded free of charge day limit"}))
    code, out, err = _run(["--api-url", scripted_api.url, "--api-key", "secret-k", "search", "--text", "cat"])
    assert code == 1 and out == ""
    assert "QuotaExceeded" in err and "day limit" in err and "secret-k" not in err


def test_invalid_input_exit_code(tmp_path):
    bad = tmp_path / "x.txt"
    bad.write_text("text")
    code, _, err = _run(["--api-key", "k", "search", "--image", str(bad)])
    assert code == 2 and "not an image" in err


def test_usage_counts_requests(scripted_api):
    scripted_api.script(scripted_api.success(SAMPLE_BODY_WITH_LABELS))
    _run(["--api-url", scripted_api.url, "--api-key", "k", "search", "--text", "cat"])
    _run(["--api-url", scripted_api.url, "--api-key", "k", "search", "--text", "cat"])
    code, out, _ = _run(["usage", "--days", "1"])
    assert code == 0
    assert out.splitlines()[1].split()[1:] == ["1", "1", "0"]


def test_num_similar_out_of_range_is_rejected_by_the_parser():
    proc = subprocess.run(
        [sys.executable, "-m", "simages_core.cli", "search", "--text", "x", "-n", "99"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "from 1 to 50" in proc.stderr
