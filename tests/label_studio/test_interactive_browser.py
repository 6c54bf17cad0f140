"""Interactive pre-annotation in Label Studio 1.23's labelling screen, in headless Chromium.

A project with ``<RectangleLabels smart="true">``, the backend connected with "Interactive
preannotations" on. The annotator opens a task, turns Auto-Annotation (and Auto-Accept
Suggestions) on, takes the smart rectangle tool, picks "Person" and draws a box around the coffee
cup: the region becomes "Mug". A box drawn on a brick wall stays, unlabelled, with the backend's
note in its details. Every ``/predict`` Label Studio sent passes through a recording proxy; the
interactive ones must have the shape of ``data/interactive_rectangle.json``, which
``SIMAGES_UPDATE_SCREENSHOTS=1`` rewrites from this session (with the README's screenshot).
"""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

import pytest
import requests
from browser_support import UPDATE, Screenshots, chromium_page, needs_chromium
from label_studio_sdk import LabelStudio

from .conftest import BROWSER_TOKEN, DOCS, log_in, start_backend
from .test_interactive import DATA, scrub, serve_images, team_photo

pytestmark = [
    pytest.mark.integration,
    pytest.mark.label_studio,
    pytest.mark.browser,
    pytest.mark.slow,
    needs_chromium,
]

SMART_CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image" smart="true">
    <Label value="Person"/>
    <Label value="Cat"/>
    <Label value="Mug" predicted_values="cup"/>
    <Label value="Spoon"/>
    <Label value="Horse"/>
  </RectangleLabels>
</View>
"""
# Boxes in pixels of the 1351x400 team photo: the coffee cup, and a patch of the brick wall.
CUP = (623, 18, 863, 300)
BRICK = (1080, 50, 1330, 250)


class _Recorder:
    """A loopback proxy in front of the backend that keeps every ``/predict`` body Label Studio sends."""

    def __init__(self, backend_url: str) -> None:
        self.bodies: list[dict[str, Any]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/predict"):
                    recorder.bodies.append(json.loads(body))
                answer = requests.request(
                    self.command,
                    backend_url + self.path,
                    data=body,
                    headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                    timeout=60,
                )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def interactive(self) -> list[dict[str, Any]]:
        return [b for b in self.bodies if (b.get("params") or {}).get("context")]


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, not values (what Label Studio's format fixes)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k not in ("predictions", "annotations", "drafts")}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return (
        "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__
    )


def test_a_box_drawn_with_auto_annotation_gets_its_label(studio, local_api, tmp_path):
    from playwright.sync_api import expect

    folder = tmp_path / "images"
    folder.mkdir()
    team_photo(local_api.images_dir, folder / "team.jpg")
    images, image_server = serve_images(folder)
    image_url = f"{images.url}/team.jpg"
    backend = start_backend(
        tmp_path / "backend", local_api.base_url, local_api.api_key, SIMAGES_ALLOW_URL_NETWORKS="127.0.0.0/8"
    )
    recorder = _Recorder(backend.url)
    shots = Screenshots(tmp_path / "screenshots", docs={"drawn-box": DOCS / "interactive-drawn-box.png"})
    shots.folder.mkdir()
    try:
        sdk = LabelStudio(base_url=studio.url, api_key=BROWSER_TOKEN)
        project = sdk.projects.create(title="Drawn boxes", label_config=SMART_CONFIG)
        sdk.projects.import_tasks(id=project.id, request=[{"data": {"image": image_url}}])
        (task,) = sdk.tasks.list(project=project.id)
        ml = sdk.ml.create(project=project.id, url=recorder.url, title="Similar Images", is_interactive=True)
        assert ml.is_interactive

        with chromium_page() as browser:
            page = browser.page
            log_in(page, studio)

            page.goto(f"{studio.url}/projects/{project.id}/data?task={task.id}")
            page.get_by_text("Auto-Annotation", exact=True).click()
            accept = page.get_by_text("Auto-Accept Suggestions", exact=True)
            accept.click()
            page.locator("button.lsf-tool_smart:visible").first.click()
            canvas = page.locator("canvas").first
            expect(canvas).to_be_visible()

            def draw(label: str, box: tuple[int, int, int, int]) -> None:
                page.get_by_text(label, exact=True).first.click()
                area = canvas.bounding_box()
                assert area is not None
                scale = area["width"] / 1351
                x0, y0 = area["x"] + box[0] * scale, area["y"] + box[1] * scale
                x1, y1 = area["x"] + box[2] * scale, area["y"] + box[3] * scale
                page.mouse.move(x0, y0)
                page.mouse.down()
                page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=6)
                page.mouse.move(x1, y1, steps=6)
                page.mouse.up()

            regions = page.locator(".lsf-outliner-item")
            draw("Person", CUP)
            expect(regions).to_have_count(1)
            expect(regions.first).to_contain_text("Mug")  # drawn as "Person", labelled by the backend
            expect(regions.first).to_contain_text("0.72")
            draw("Cat", BRICK)
            expect(regions).to_have_count(2)
            expect(regions.nth(1)).not_to_contain_text("Cat")
            regions.nth(1).click()
            expect(page.get_by_text("No label", exact=True)).to_be_visible()
            expect(page.get_by_text("no similar image shows an object this project labels")).to_be_visible()
            shots.take(page, "drawn-box")
            assert browser.blocked == [], browser.blocked

        recorded = [scrub(body, image_url) for body in recorder.interactive()]
        assert len(recorded) == 2, f"{len(recorder.bodies)} /predict calls, {len(recorded)} interactive"
        cup, brick = (body["params"]["context"]["result"][0] for body in recorded)
        assert cup["value"]["rectanglelabels"] == ["Person"] and brick["value"]["rectanglelabels"] == ["Cat"]
        assert all(BROWSER_TOKEN not in json.dumps(body) for body in recorded)
        committed = DATA / "interactive_rectangle.json"
        if UPDATE:
            committed.write_text(json.dumps(recorded, indent=1) + "\n")
        # Label Studio still sends what the replay tests replay.
        assert shape(recorded) == shape(json.loads(committed.read_text()))
    finally:
        backend.stop()
        recorder.server.shutdown()
        image_server.shutdown()
