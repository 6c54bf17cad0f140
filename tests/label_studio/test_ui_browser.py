"""Label Studio 1.23 driven in headless Chromium, as a user connects and uses the ML backend.

Log in through the login page, connect the backend through Settings → Model (the form a user
fills), run "Retrieve Predictions" from the Data Manager's actions menu, and open a task in the
labelling screen: the predicted regions are listed with the project's labels and drawn on the
image. Screenshots go to a temporary folder; ``SIMAGES_UPDATE_SCREENSHOTS=1`` also refreshes
the ones ``label_studio_backend/README.md`` shows (``label_studio_backend/docs/``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import Screenshots, chromium_page, needs_chromium
from label_studio_sdk import LabelStudio

from simages_label_studio.testing import LabelStudioProcess

from .conftest import CONFIG, start_backend

pytestmark = [
    pytest.mark.integration,
    pytest.mark.label_studio,
    pytest.mark.browser,
    pytest.mark.slow,
    needs_chromium,
]

REPO = Path(__file__).resolve().parents[2]
LABEL_STUDIO_BIN = REPO / ".venv-ls" / "bin" / "label-studio"
DOCS = REPO / "label_studio_backend" / "docs"
TOKEN = "simages0browser0token00000000000000000000"
USER, PASSWORD = "admin@example.com", "simages-browser-password"
# The regions' rectangles on Label Studio's canvas (Konva, exposed as ``window.Konva``), drawn and visible.
DRAWN_BOXES = """n => {
    const stages = (window.Konva && window.Konva.stages) || [];
    const boxes = stages.flatMap(s => s.find("Rect")).filter(
        r => r.isVisible() && r.stroke() && r.width() * r.scaleX() > 10 && r.height() * r.scaleY() > 10
    );
    return boxes.length >= n;
}"""
FILES = ["coffee_cropped.jpg", "astronaut_resized.jpg", "chelsea_warmer.jpg", "horse_flipped.jpg"]


@pytest.fixture
def studio(tmp_path) -> Iterator[LabelStudioProcess]:
    if not LABEL_STUDIO_BIN.exists():
        pytest.fail(f"Label Studio is not installed at {LABEL_STUDIO_BIN}: run scripts/install.sh")
    with LabelStudioProcess(
        LABEL_STUDIO_BIN, tmp_path / "label-studio", token=TOKEN, username=USER, password=PASSWORD
    ) as process:
        yield process


def test_connect_retrieve_and_review_predictions(studio, local_api, tmp_path):
    from playwright.sync_api import expect

    sdk = LabelStudio(base_url=studio.url, api_key=TOKEN)
    project = sdk.projects.create(title="Similar Images demo", label_config=CONFIG)
    sdk.projects.import_tasks(
        id=project.id, request=[{"data": {"image": local_api.image_url(f)}} for f in FILES]
    )
    tasks = {t.data["image"]: t.id for t in sdk.tasks.list(project=project.id)}
    shots = Screenshots(
        tmp_path / "screenshots",
        docs={
            "model-settings": DOCS / "model-settings.png",
            "data-manager": DOCS / "data-manager.png",
            "labelling": DOCS / "labelling.png",
        },
    )
    shots.folder.mkdir()
    backend = start_backend(
        tmp_path / "backend",
        local_api.base_url,
        local_api.api_key,
        LABEL_STUDIO_URL=studio.url,
        LABEL_STUDIO_API_KEY=TOKEN,
        SIMAGES_ALLOW_URL_NETWORKS="127.0.0.0/8",
    )
    try:
        with chromium_page() as browser:
            page = browser.page
            page.goto(f"{studio.url}/user/login/")
            page.locator("#email").fill(USER)
            page.locator("#password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{studio.url}/")

            # Settings → Model: the form a user fills to connect the backend.
            page.goto(f"{studio.url}/projects/{project.id}/settings/ml")
            page.get_by_text("Connect Model", exact=True).click()
            page.locator('input[name="title"]').fill("Similar Images")
            page.locator('input[name="url"]').fill(backend.url)
            shots.take(page, "model-form")
            page.get_by_role("button", name="Save machine learning form").click()
            expect(page.get_by_text("Connected", exact=True)).to_be_visible()
            expect(page.get_by_text(backend.url)).to_be_visible()
            shots.take(page, "model-settings")
            (ml,) = sdk.ml.list(project=project.id)
            assert ml.readable_state == "Connected" and ml.url == backend.url

            # Data Manager: select every task, Actions → Retrieve Predictions, confirm.
            page.goto(f"{studio.url}/projects/{project.id}/data")
            page.get_by_label("Select all rows").check()
            page.get_by_label("Tasks Actions").click()
            page.get_by_text("Retrieve Predictions", exact=True).click()
            page.locator("button", has_text=re.compile(r"^OK$")).click()
            expect(page.get_by_text(re.compile(rf"Predictions:\s*{len(FILES)}\b"))).to_be_visible(
                timeout=120_000
            )
            page.get_by_label("Select all rows").uncheck()
            shots.take(page, "data-manager")

            # The labelling screen of the coffee task: a Mug and a Spoon, listed and drawn.
            coffee = tasks[local_api.image_url("coffee_cropped.jpg")]
            page.goto(f"{studio.url}/projects/{project.id}/data?task={coffee}")
            regions = page.locator(".lsf-outliner-item__title")
            expect(regions).to_have_count(2)
            assert sorted(regions.all_inner_texts()) == ["Mug", "Spoon"]
            expect(page.locator(".lsf-outliner-item", has_text="Mug")).to_contain_text("1.00")
            page.wait_for_function(DRAWN_BOXES, arg=2)
            assert page.locator('input[type="checkbox"]:checked + *', has_text="Coffee").count() or (
                page.get_by_label(re.compile("^Coffee")).is_checked()
            )
            shots.take(page, "labelling")
    finally:
        backend.stop()
