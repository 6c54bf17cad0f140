"""The ``simages`` command against a real loopback server."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import pytest

from simages_core.cli import main

from . import fetch_support
from .conftest import SAMPLE_BODY_WITH_LABELS, Reply
from .fetch_support import Route

# Any connect to a non-loopback address fails the test; name lookups are logged.
watch_connections = fetch_support.watch_connections
host = fetch_support.host


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
            "--all",  # the sample's thumbnails are on img.example: nothing may fetch them
        ]
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["#", "score", "id", "labels", "url"]
    assert lines[1].split()[:3] == ["1", "0.9000", "a1"] and "cat" in lines[1] and "person" in lines[1]
    assert lines[1].endswith("https://img.example/a.jpg")
    assert lines[-1] == "2 image(s)"


def test_search_json_is_the_body(scripted_api, watch_connections):
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
    assert watch_connections.lookups == []  # JSON is the body as sent: no thumbnail fetched


def test_a_thumbnail_that_cannot_be_read_leaves_its_image_uncollapsed(scripted_api, host):
    import io

    from PIL import Image, ImageOps
    from skimage import data as skdata

    def webp(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=80)
        return buffer.getvalue()

    cat = Image.fromarray(skdata.chelsea())
    host.route("/t/a.webp", Route(200, webp(cat), {"content-type": "image/webp"}))
    host.route("/t/b.webp", Route(200, webp(ImageOps.mirror(cat)), {"content-type": "image/webp"}))
    thumb = f"http://127.0.0.1:{host.port}/t"
    images = [
        {"url": f"{thumb}/{i}.jpg", "score": s, "thumbnail_url": f"{thumb}/{i}.webp", "id": i}
        for i, s in (("a", 0.9), ("b", 0.8), ("gone", 0.7))
    ]
    scripted_api.script(scripted_api.success({"info": {}, "images": images}))
    code, out, err = _run(
        ["--api-url", scripted_api.url, "--api-key", "k", "search", "--text", "cat", "--no-cache"]
    )
    assert code == 0 and err == ""
    rows = [line.split()[2:4] for line in out.splitlines()[1:-1]]
    assert rows == [["a", "1"], ["gone", "-"]]  # b is a's mirror; gone's thumbnail answers 404
    assert out.splitlines()[-1] == "2 image(s), 1 copy of them not listed (--all lists them)"


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
    _run(["--api-url", scripted_api.url, "--api-key", "k", "search", "--text", "cat", "--all"])
    _run(["--api-url", scripted_api.url, "--api-key", "k", "search", "--text", "cat", "--all"])
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


# --- copies collapsed, against the real local server over the demo collection --------------------


def _demo_family(file_name: str) -> str:
    """The demo photo a file was made from: ``chelsea_cropped.jpg`` -> ``chelsea``."""
    from simages_server.demo import VARIANTS

    stem = file_name.rsplit(".", 1)[0]
    for variant in VARIANTS:
        stem = stem.removesuffix(f"_{variant.suffix}")
    return stem


def _table_rows(out: str) -> tuple[list[str], list[list[str]]]:
    lines = out.splitlines()
    return lines[0].split(), [line.split() for line in lines[1:-1]]


def test_table_collapses_copies_and_all_lists_them(local_api):
    families = {r.id: _demo_family(r.file) for r in local_api.records()}
    base = ["--api-url", local_api.base_url, "--api-key", local_api.api_key, "search", "--no-cache"]
    code, out, err = _run([*base, "--text", "cat", "-n", "10", "--all"])
    assert code == 0, err
    header, rows = _table_rows(out)
    assert header == ["#", "score", "id", "url"]
    assert [families[row[2]] for row in rows] == ["chelsea"] * 6  # the photo and its five variants
    assert out.splitlines()[-1] == "6 image(s)"

    code, out, err = _run([*base, "--text", "cat", "-n", "10"])
    assert code == 0, err
    header, rows = _table_rows(out)
    assert header == ["#", "score", "id", "copies", "url"]
    assert [(families[row[2]], row[3:5]) for row in rows] == [("chelsea", ["5", "copies"])]
    assert out.splitlines()[-1] == "1 image(s), 5 copies of them not listed (--all lists them)"


def test_every_demo_variant_collapses_and_no_two_photos_do(local_api):
    """Over (nearly) the whole demo collection: each photo's variants (resized, JPEG q25, 6% crop,
    mirrored, colour-shifted) fold into one row, and distinct photos each keep their own."""
    families = {r.id: _demo_family(r.file) for r in local_api.records()}
    base = ["--api-url", local_api.base_url, "--api-key", local_api.api_key, "search", "--no-cache"]
    query = ["--image", str(local_api.images_dir / "coffee.jpg"), "-n", "50"]
    code, out, err = _run([*base, *query, "--all"])
    assert code == 0, err
    listed = [families[row[2]] for row in _table_rows(out)[1]]

    code, out, err = _run([*base, *query])
    assert code == 0, err
    _, rows = _table_rows(out)
    kept = {families[row[2]]: int(row[3]) if row[3] != "-" else 0 for row in rows}
    assert len(kept) == len(rows)  # no photo twice
    assert set(kept) == set(listed)  # no photo merged into another
    assert kept == {family: listed.count(family) - 1 for family in set(listed)}
    assert sum(kept.values()) >= 30  # the collection's variants were really in the answer


@pytest.fixture(scope="module")
def unlabelled_server(demo_collection, tmp_path_factory):
    """A local server over a few demo photos indexed without --coco or --detector: no labels at all."""
    from simages_server.indexing import build_index
    from simages_server.testing import ServerProcess

    demo_dir, _ = demo_collection
    tmp = tmp_path_factory.mktemp("unlabelled")
    photos = tmp / "photos"
    photos.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "horse.jpg"):
        shutil.copy(demo_dir / "images" / name, photos / name)
    build_index(photos, tmp / "index", progress=False)
    with ServerProcess(tmp / "index", api_keys=("cli-key",), state=tmp, log_path=tmp / "server.log") as server:
        yield server


def test_an_unlabelled_index_is_named_once_on_stderr(unlabelled_server, demo_collection):
    demo_dir, _ = demo_collection
    base = ["--api-url", unlabelled_server.url, "--api-key", "cli-key", "search", "--no-cache"]
    code, out, err = _run([*base, "--image", str(demo_dir / "images" / "coffee.jpg"), "-n", "3", "--labels"])
    assert code == 0, err
    assert out.splitlines()[0].split() == ["#", "score", "id", "labels", "url"]  # the table is as before
    assert err.count("simages: note: none of these images has labels") == 1
    assert "--detector FILE.onnx" in err and "--coco FILE.json" in err

    code, out, err = _run([*base, "--text", "a cat", "-n", "3", "--json"])
    assert code == 0, err
    assert json.loads(out)["images"] == []  # the answer stays as documented
    assert err.count("simages: note: no image matched the text") == 1 and "--coco" in err


def test_a_labelled_index_gets_no_note(local_api):
    base = ["--api-url", local_api.base_url, "--api-key", local_api.api_key, "search", "--no-cache"]
    code, out, err = _run([*base, "--text", "cat", "-n", "3", "--labels"])
    assert code == 0 and "cat" in out
    assert err == ""
