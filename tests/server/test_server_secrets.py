"""URL credentials never reach ``/health``, an answer or a log line, and a bug is a bare 500.

The app is served in process by waitress on loopback (so its logger can be read with
``caplog``); its embedder is the real one with a fault injected into ``embed_images``.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import waitress
from PIL import Image

from simages_server.app import ServerSettings, SimilarImagesApp
from simages_server.embedders import DescriptorEmbedder
from simages_server.index import ImageIndex
from simages_server.keys import digests

pytestmark = pytest.mark.integration

KEY = "secrets-test-key"


class FailingEmbedder(DescriptorEmbedder):
    """The descriptor embedder with a bug whose message quotes a URL with credentials."""

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        raise RuntimeError("model download from https://bob:model-token-77@models.test/clip.onnx failed")


@pytest.fixture
def served_app(demo_collection, tmp_path: Path) -> Iterator[str]:
    _, index_dir = demo_collection
    settings = ServerSettings(key_digests=digests([KEY]), quota_path=tmp_path / "quota.sqlite")
    detector = {"source": "https://alice:hf-token-42@models.test/yolov7.onnx", "names": ["cat"]}
    app = SimilarImagesApp(ImageIndex.load(index_dir), settings, FailingEmbedder(), detector_info=detector)
    server: Any = waitress.create_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(timeout=10)
        app.quota.close()


def test_health_redacts_url_credentials(served_app):
    health = requests.get(served_app + "/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert "hf-token-42" not in health.text and "alice" not in health.text
    assert "https://***@models.test/yolov7.onnx" in health.text


def test_a_bug_is_a_bare_500_logged_once_without_credentials(served_app, demo_collection, caplog):
    demo_dir, _ = demo_collection
    image = base64.b64encode((demo_dir / "images" / "horse.jpg").read_bytes()).decode()
    with caplog.at_level(logging.INFO, logger="simages_server"):
        response = requests.post(
            served_app + "/", data=json.dumps({"image": image}), headers={"x-api-key": KEY}, timeout=30
        )
        assert response.status_code == 500
        envelope = response.json()
        assert (envelope["statusCode"], envelope["error"]) == (500, "internal server error")
        assert "model" not in response.text  # no detail of the failure reaches the caller
        # ...and it keeps serving.
        text = requests.post(
            served_app + "/", data=json.dumps({"text": "horse"}), headers={"x-api-key": KEY}, timeout=30
        )
        assert text.status_code == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    logged = "\n".join((record.getMessage() + "\n" + (record.exc_text or "")) for record in caplog.records)
    assert "RuntimeError" in logged and "https://***@models.test/clip.onnx" in logged
    assert "model-token-77" not in logged and "model-token-77" not in caplog.text
