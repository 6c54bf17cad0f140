"""Fixtures for the Label Studio tier: the ML backend as a real process, tasks' images on loopback,
and one real Label Studio for the whole session (it takes ~40 s to start)."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from label_studio_sdk import LabelStudio

from simages_core.boxes import LabelStudioBox, from_label_studio
from simages_label_studio.testing import BackendProcess, LabelStudioProcess

REPO = Path(__file__).resolve().parents[2]
LABEL_STUDIO_BIN = REPO / ".venv-ls" / "bin" / "label-studio"
DOCS = REPO / "label_studio_backend" / "docs"
"""Where the browser tests' screenshots go when refreshed (the backend's README shows them)."""
TOKEN = "simages0test0token0000000000000000000000"
BROWSER_TOKEN = "simages0browser0token00000000000000000000"
BROWSER_USER, BROWSER_PASSWORD = "admin@example.com", "simages-browser-password"

CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Person"/>
    <Label value="Cat"/>
    <Label value="Mug" predicted_values="cup"/>
    <Label value="Spoon"/>
    <Label value="Horse"/>
  </RectangleLabels>
  <Choices name="scene" toName="image" choice="multiple">
    <Choice value="Cat"/>
    <Choice value="Person"/>
    <Choice value="Coffee" predicted_values="cup,spoon"/>
  </Choices>
</View>
"""


@dataclass(frozen=True)
class LabelStudioInstance:
    url: str
    token: str
    log: Path | None

    def sdk(self) -> LabelStudio:
        return LabelStudio(base_url=self.url, api_key=self.token)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(
            self.url + path, headers={"Authorization": f"Token {self.token}"}, timeout=120, **kwargs
        )


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[LabelStudioInstance]:
    """A real Label Studio 1.23 from ``.venv-ls``, shared by every module that needs one."""
    if not LABEL_STUDIO_BIN.exists():
        pytest.fail(f"Label Studio is not installed at {LABEL_STUDIO_BIN}: run scripts/install.sh")
    with LabelStudioProcess(LABEL_STUDIO_BIN, tmp_path_factory.mktemp("label-studio"), token=TOKEN) as ls:
        yield LabelStudioInstance(ls.url, TOKEN, ls.log_path)


def backend_env(base_url: str, api_key: str, home: Path, **extra: str) -> dict[str, str]:
    return {
        "SIMAGES_API_URL": base_url,
        "SIMAGES_API_KEY": api_key,
        "SIMAGES_HOME": str(home),
        "SIMAGES_CACHE": "0",
        "LOG_LEVEL": "INFO",
        **extra,
    }


def start_backend(tmp: Path, base_url: str, api_key: str, **extra: str) -> BackendProcess:
    """A backend process; the caller stops it. Its log is ``tmp / "backend.log"``."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = backend_env(base_url, api_key, tmp / "home", **extra)
    return BackendProcess(env, log_path=tmp / "backend.log").start()


def coco_boxes(demo_dir: Path, file_name: str) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(class, [x0, y0, x1, y1]) of a demo image, from its COCO annotations."""
    coco = json.loads((demo_dir / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    (image_id,) = [im["id"] for im in coco["images"] if im["file_name"] == file_name]
    return [
        (
            names[a["category_id"]],
            (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]),
        )
        for a in coco["annotations"]
        if a["image_id"] == image_id
    ]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def studio(tmp_path) -> Iterator[LabelStudioProcess]:
    """A Label Studio of the test's own, with a user who logs in in the browser tests."""
    if not LABEL_STUDIO_BIN.exists():
        pytest.fail(f"Label Studio is not installed at {LABEL_STUDIO_BIN}: run scripts/install.sh")
    with LabelStudioProcess(
        LABEL_STUDIO_BIN,
        tmp_path / "label-studio",
        token=BROWSER_TOKEN,
        username=BROWSER_USER,
        password=BROWSER_PASSWORD,
    ) as process:
        yield process


def log_in(page, studio: LabelStudioProcess) -> None:
    """Log the browser page in to ``studio`` as its user, as a person would."""
    page.goto(f"{studio.url}/user/login/")
    page.locator("#email").fill(BROWSER_USER)
    page.locator("#password").fill(BROWSER_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{studio.url}/")


@pytest.fixture(params=["disk", "redis"])
def store(request, tmp_path):
    """A learned-labels store of each kind: on disk, and in a Redis started for the test."""
    from simages_core.shared_store import connect_from_env
    from simages_label_studio.learned_store import DiskLearnedStore, RedisLearnedStore

    if request.param == "disk":
        opened = DiskLearnedStore(tmp_path / "learned", every=3)
    else:
        server = request.getfixturevalue("redis_server")
        request.getfixturevalue("monkeypatch").setenv("SIMAGES_CACHE_URL", server.url)
        opened = RedisLearnedStore(connect_from_env(), every=3)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def static_images(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of a plain HTTP server on loopback: images that live outside the index."""
    folder = tmp_path_factory.mktemp("static")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()


def assert_boxes_close(
    actual: dict[str, tuple[float, ...]], expected: dict[str, tuple[float, ...]], pixels=1.0
):
    """Same labels, and every coordinate within ``pixels``."""
    assert actual.keys() == expected.keys(), (actual, expected)
    for label, box in expected.items():
        assert actual[label] == pytest.approx(box, abs=pixels), label


def pixel_boxes(result: list[dict]) -> dict[str, tuple[float, ...]]:
    """Label -> pixel box of the rectangle regions of a prediction result."""
    boxes = {}
    for region in result:
        if region["type"] == "rectanglelabels":
            v = region["value"]
            ls_box = LabelStudioBox(
                v["x"], v["y"], v["width"], v["height"], region["original_width"], region["original_height"]
            )
            boxes[v["rectanglelabels"][0]] = from_label_studio(ls_box)
    return boxes


def choices(result: list[dict]) -> list[str]:
    return [c for r in result if r["type"] == "choices" for c in r["value"]["choices"]]
