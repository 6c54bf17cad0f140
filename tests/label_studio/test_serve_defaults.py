"""``simages-ls serve`` defaults a self-hosting team can trust, each run as a real process:
loopback unless told otherwise, a warning when listening beyond it without a password, and one
WARNING (not one per request) when the API's answers carry no labels at all.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from simages_server.index import ImageIndex
from simages_server.indexing import build_index
from simages_server.testing import ManagedProcess, ServerProcess, free_port

from .conftest import CONFIG, backend_env, start_backend

pytestmark = [pytest.mark.integration]


def test_serve_listens_on_loopback_by_default(local_api, tmp_path):
    port = free_port()
    args = [sys.executable, "-m", "simages_label_studio", "serve", "--port", str(port)]
    env = backend_env(local_api.base_url, local_api.api_key, tmp_path / "home")
    log = tmp_path / "backend.log"
    with ManagedProcess(
        args, health_url=f"http://127.0.0.1:{port}/health", env=env, log_path=log, name="simages-ls"
    ):
        text = log.read_text()
    assert f"serving on http://127.0.0.1:{port}" in text, text
    assert "without BASIC_AUTH_USER" not in text


# 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails after the start-up warning, and
# nothing is sent anywhere.
@pytest.mark.parametrize("auth", [False, True])
def test_a_non_loopback_address_without_basic_auth_is_warned_about(local_api, tmp_path, auth):
    env = backend_env(local_api.base_url, local_api.api_key, tmp_path / "home")
    if auth:
        env |= {"BASIC_AUTH_USER": "team", "BASIC_AUTH_PASS": "a-long-password"}
    out = subprocess.run(
        [sys.executable, "-m", "simages_label_studio", "serve", "--host", "192.0.2.1", "--port", "9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    warned = "listening on 192.0.2.1, reachable from other machines, without BASIC_AUTH_USER" in out.stderr
    assert warned is not auth, out.stderr
    assert "a-long-password" not in out.stderr


@pytest.mark.label_studio
def test_the_backend_warns_once_when_the_api_answers_carry_no_labels(local_api, tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "horse.jpg", "brick.jpg"):
        (images / name).write_bytes((local_api.images_dir / name).read_bytes())
    index = tmp_path / "unlabelled-index"
    build_index(images, index, progress=False)  # no --detector, no --coco: no labels
    with ServerProcess(
        index, api_keys=("k",), state=tmp_path / "state", log_path=tmp_path / "s.log"
    ) as server:
        backend = start_backend(tmp_path / "backend", server.url, "k")
        try:
            for task_id, name in enumerate(("chelsea.jpg", "coffee.jpg", "horse.jpg"), start=1):
                record_url = _image_url(server, index, name)
                response = requests.post(
                    f"{backend.url}/predict",
                    json={"tasks": [{"id": task_id, "data": {"image": record_url}}], "label_config": CONFIG},
                    timeout=60,
                )
                assert response.status_code == 200, response.text
        finally:
            backend.stop()
    log = (tmp_path / "backend" / "backend.log").read_text()
    warnings = [line for line in log.splitlines() if "answered with no labels" in line]
    assert len(warnings) == 1, log
    assert " WARNING " in warnings[0] and "predictions of model" in warnings[0]
    assert "simages-server index --detector FILE.onnx" in warnings[0] and "--coco FILE.json" in warnings[0]


def _image_url(server, index, file_name: str) -> str:
    record = next(r for r in ImageIndex.load(index).records if r.file == file_name)
    return f"{server.url}/images/{record.id}"
