"""``serve``'s defaults a team can trust (issue 18): no daily limit unless asked, a 402 that names this
server's limit and the option setting it, a busy port refused in one line before anything is loaded,
and an index without labels said once, in ``/health`` and in the log, with the answers unchanged."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from PIL import Image
from werkzeug.test import Client

import simages_core as sc
from simages_core.protocol import error_envelope
from simages_server.app import NO_LABELS, ServerSettings, SimilarImagesApp
from simages_server.cli import build_parser
from simages_server.http_server import ConnectionLimits, PortInUse, create_server
from simages_server.index import ImageIndex
from simages_server.indexing import build_index
from simages_server.keys import ENV_SERVER_KEYS, digests
from simages_server.testing import ManagedProcess, ServerProcess, free_port

KEY = "defaults-test-key"


def _serve_command(index_dir: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "simages_server",
        "serve",
        "--index",
        str(index_dir),
        "--port",
        str(port),
        *extra,
    ]


def _search(http: requests.Session, url: str, body: dict | None = None) -> requests.Response:
    return http.post(url + "/", data=json.dumps(body or {"text": "cat", "num_similar": 1}),
                     headers={"x-api-key": KEY}, timeout=30)  # fmt: skip


@pytest.fixture
def http():
    with requests.Session() as session:
        session.trust_env = False  # loopback only: no proxy from the environment
        yield session


# --- no daily limit unless asked ----------------------------------------------------------------


def test_the_daily_limit_option_defaults_to_none():
    args = build_parser().parse_args(["serve", "--index", "idx"])
    assert args.daily_limit == 0
    assert ServerSettings(key_digests=frozenset(), quota_path="q.sqlite").daily_limit == 0


@pytest.mark.integration
def test_serve_without_daily_limit_answers_past_the_public_apis_100(demo_collection, tmp_path, http):
    _, index_dir = demo_collection
    port = free_port()
    command = _serve_command(index_dir, port, "--state", str(tmp_path))  # no --daily-limit
    with ManagedProcess(command, health_url=f"http://127.0.0.1:{port}/health", env={ENV_SERVER_KEYS: KEY},
                        log_path=tmp_path / "server.log", name="simages-server"):  # fmt: skip
        codes = [_search(http, f"http://127.0.0.1:{port}").status_code for _ in range(101)]
    assert codes == [200] * 101
    assert "daily limit none" in (tmp_path / "server.log").read_text()


@pytest.mark.integration
def test_a_402_names_this_servers_limit_and_option_in_the_documented_shape(demo_collection, tmp_path, http):
    _, index_dir = demo_collection
    with ServerProcess(index_dir, api_keys=(KEY,), daily_limit=2, state=tmp_path) as server:
        assert [_search(http, server.url).status_code for _ in range(2)] == [200, 200]
        over = _search(http, server.url)
        with (
            sc.SimilarImagesClient(api_key=KEY, base_url=server.url, cache=False, usage=None) as client,
            pytest.raises(sc.QuotaExceeded) as raised,
        ):
            client.search(text="cat")
    assert over.status_code == 402
    body = over.json()
    assert body == error_envelope(402, body["error"])  # {"statusCode", "error", "headers"}, as documented
    message = body["error"]
    assert "daily limit of 2" in message and "--daily-limit" in message and "ternaus" not in message
    assert "--daily-limit" in str(raised.value)


# --- a busy port ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_serve_on_a_busy_port_exits_1_with_one_line_and_never_says_serving(demo_collection, tmp_path):
    _, index_dir = demo_collection
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            _serve_command(index_dir, port, "--state", str(tmp_path)),
            env={**os.environ, ENV_SERVER_KEYS: KEY}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    output = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1, output
    assert output == [
        f"simages-server: port {port} on 127.0.0.1 is already in use (another server?): "
        "stop it or choose another --port"
    ]


def test_a_port_taken_after_the_check_is_the_same_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        def app(environ, start_response):  # never called: the server cannot listen
            raise AssertionError

        with pytest.raises(PortInUse, match=f"port {port} on 127.0.0.1 is already in use"):
            create_server(app, host="127.0.0.1", port=port, threads=1, limits=ConnectionLimits())


# --- an index without labels ---------------------------------------------------------------------


def _photos(folder: Path, names_and_colours: dict[str, tuple[int, int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in names_and_colours.items():
        image = Image.new("RGB", (96, 64), colour)
        image.paste((255 - colour[0], colour[1], 128), (10, 10, 50, 40))
        image.save(folder / name)
    return folder


def _no_labels_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "has no labels" in line]


@pytest.mark.integration
def test_an_unlabelled_index_says_so_once_in_health_and_the_log(tmp_path, http):
    images = _photos(
        tmp_path / "photos", {"a.png": (200, 30, 30), "b.png": (30, 200, 30), "c.png": (30, 30, 200)}
    )
    build_index(images, tmp_path / "index", progress=False)
    log = tmp_path / "server.log"
    with ServerProcess(tmp_path / "index", api_keys=(KEY,), state=tmp_path, log_path=log) as server:
        health = http.get(server.url + "/health", timeout=10).json()
        labelled = _search(http, server.url, {"url": f"{server.url}/images/{ImageIndex.load(tmp_path / 'index').records[0].id}",
                                              "num_similar": 3, "get_labels": "coco_yolov7"})  # fmt: skip
        text = _search(http, server.url, {"text": "a cat", "num_similar": 3, "get_labels": "coco_yolov7"})
        http.get(server.url + "/health", timeout=10)
    assert health["labels"] == NO_LABELS == "none: re-index with --detector FILE.onnx or --coco FILE.json"
    # The answers stay as documented: empty annotations, and a text search that matches nothing.
    body = json.loads(labelled.json()["body"])
    assert len(body["images"]) == 3 and [a["annotations"] for a in body["annotations"]] == [[], [], []]
    assert json.loads(text.json()["body"])["images"] == []
    lines = _no_labels_lines(log.read_text())
    assert len(lines) == 1, lines
    assert "--detector FILE.onnx" in lines[0] and "--coco FILE.json" in lines[0]


def test_a_labelled_index_reports_its_count_and_logs_nothing_about_labels(demo_collection, tmp_path, caplog):
    _, index_dir = demo_collection
    index = ImageIndex.load(index_dir)
    with caplog.at_level(logging.INFO, logger="simages_server"):
        app = SimilarImagesApp(
            index, ServerSettings(key_digests=digests([KEY]), quota_path=tmp_path / "q.sqlite")
        )
    health = Client(app).get("/health").get_json()
    assert health["labels"] == f"{index.labelled} of {len(index)} images" and index.labelled > 0
    assert _no_labels_lines(caplog.text) == []


def test_a_hot_swap_to_an_unlabelled_generation_is_logged_once(tmp_path, caplog):
    images = _photos(tmp_path / "photos", {"a.png": (200, 30, 30), "b.png": (30, 200, 30)})
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 96, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 17, "bbox": [10, 10, 40, 30]}],
        "categories": [{"id": 17, "name": "cat"}],
    }))  # fmt: skip
    build_index(images, tmp_path / "index", coco=coco, progress=False)
    with caplog.at_level(logging.INFO, logger="simages_server"):
        app = SimilarImagesApp(
            ImageIndex.load(tmp_path / "index"),
            ServerSettings(key_digests=digests([KEY]), quota_path=tmp_path / "q.sqlite"),
        )
        assert _no_labels_lines(caplog.text) == []  # labelled at start: nothing to say
        (images / "a.png").unlink()  # the only labelled photo goes: the next generation has no labels
        build_index(images, tmp_path / "index", progress=False)
        assert app.reload_index()
        assert not app.reload_index()  # nothing new: nothing said again
    assert len(_no_labels_lines(caplog.text)) == 1
    assert Client(app).get("/health").get_json()["labels"] == NO_LABELS
