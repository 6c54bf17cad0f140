"""The ML backend over a local server that runs the user's own models on a folder with no annotations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from model_fixtures import SCENES, index_with_own_models, scene

from simages_server.testing import ServerProcess

from .conftest import CONFIG, pixel_boxes, start_backend

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_api(tmp_path_factory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("own-models-ls")
    own = index_with_own_models(root)
    # Task images live on the loopback static server, so the local server may fetch from loopback.
    with ServerProcess(
        own.index_dir, state=root, log_path=root / "server.log", extra_args=("--allow-url-network", "127.0.0.0/8")
    ) as server:
        yield server


def test_boxes_for_a_near_duplicate_come_from_the_detector(own_api, static_images, tmp_path):
    base, folder = static_images
    (width, height), _, objects = SCENES["magenta_both.png"]
    scene("magenta_both.png").resize((width * 3 // 5, height * 3 // 5)).save(folder / "own_both.jpg", quality=90)
    # The backend reads the task image's size from loopback too (the static server).
    backend = start_backend(
        tmp_path / "backend", own_api.url, own_api.api_key, SIMAGES_ALLOW_URL_NETWORKS="127.0.0.0/8"
    )
    try:
        response = requests.post(
            f"{backend.url}/predict",
            json={"tasks": [{"id": 1, "data": {"image": f"{base}/own_both.jpg"}}], "label_config": CONFIG},
            timeout=60,
        )
    finally:
        backend.stop()
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["results"]
    boxes = pixel_boxes(prediction["result"])
    expected = {name.title(): tuple(v * 0.6 for v in box) for name, box in objects}
    assert set(boxes) == set(expected) == {"Person", "Cat"}
    for label, box in expected.items():
        assert boxes[label] == pytest.approx(box, abs=2.0), label
