"""The FiftyOne App on loopback lists the plugin's operators and shows an imported sample with its boxes.

Headless Chromium takes the screenshot; with ``SIMAGES_UPDATE_SCREENSHOT=1`` it also replaces the one
the plugin README shows (``fiftyone_plugin/docs/app.png``).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time

import fiftyone as fo
import pytest
import requests
from fo_helpers import REPO, unique_name
from PIL import Image

import simages_fiftyone
from simages_server.testing import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's `chromium` on PATH"),
]

SCREENSHOT = REPO / "fiftyone_plugin" / "docs" / "app.png"


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.5)


def test_app_lists_operators_and_shows_imported_boxes(api_env, make_dataset, tmp_path):
    dataset = make_dataset("coffee.jpg", name=unique_name("simages-app"))
    result = simages_fiftyone.import_similar(
        dataset, sample_ids=dataset.values("id"), num_similar=4, media_dir=str(tmp_path / "media")
    )
    assert result.imported == 4
    first = dataset.match_tags(result.tag).sort_by("simages_rank").first()
    assert first.detections and {d.label for d in first.detections.detections} == {"cup", "spoon"}

    port = free_port()
    session = fo.launch_app(dataset, remote=True, address="127.0.0.1", port=port, auto=False)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(base + "/")
        listed = requests.post(base + "/operators", json={"dataset_name": dataset.name}, timeout=30).json()
        uris = {op["uri"] for op in listed["operators"]}
        assert {
            "@simages/similar-images/find_similar",
            "@simages/similar-images/import_similar",
        } <= uris
        assert not [e for e in listed["errors"] if "simages" in str(e)]

        shot = tmp_path / "app.png"
        url = f"{base}/datasets/{dataset.name}?id={first.id}"
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--screenshot={shot}",
                "--window-size=1400,900",
                "--virtual-time-budget=20000",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        session.close()
        if hasattr(fo, "close_app"):
            fo.close_app()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (1400, 900)
        colors = img.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colors is not None and len(colors) > 500, "the screenshot is blank or nearly so"
    # Refresh the README's screenshot only when asked: a test run must not change the checkout.
    if os.environ.get("SIMAGES_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(data)
