"""Label Studio 1.23 driven in headless Chromium, as a user connects and uses the ML backend.

Log in through the login page, connect the backend through Settings → Model (the form a user
fills), run "Retrieve Predictions" from the Data Manager's actions menu, choose those predictions
under Settings → Annotation and add the "Prediction score" column from the Columns menu (the
scores shown equal the REST API's), and open a task in the labelling screen: the predicted
regions are listed with the project's labels and drawn on the image. Screenshots go to a
temporary folder; ``SIMAGES_UPDATE_SCREENSHOTS=1`` also refreshes the ones
``label_studio_backend/README.md`` shows (``label_studio_backend/docs/``)."""

from __future__ import annotations

import re

import pytest
from browser_support import Screenshots, chromium_page, needs_chromium
from label_studio_sdk import LabelStudio

from .conftest import BROWSER_TOKEN, CONFIG, DOCS, log_in, start_backend

pytestmark = [
    pytest.mark.integration,
    pytest.mark.label_studio,
    pytest.mark.browser,
    pytest.mark.slow,
    needs_chromium,
]

# The regions' rectangles on Label Studio's canvas (Konva, exposed as ``window.Konva``), drawn and visible.
DRAWN_BOXES = """n => {
    const stages = (window.Konva && window.Konva.stages) || [];
    const boxes = stages.flatMap(s => s.find("Rect")).filter(
        r => r.isVisible() && r.stroke() && r.width() * r.scaleX() > 10 && r.height() * r.scaleY() > 10
    );
    return boxes.length >= n;
}"""
# The Data Manager's table, per task id: the text of the "Prediction score" cell, once every row
# shows one (the header cells and each row's cells are in the same order).
SCORES_SHOWN = """n => {
    const head = [...document.querySelectorAll('.lsf-table-head .lsf-table__cell')];
    const col = name => head.findIndex(c => c.dataset.id === name);
    const [id, score] = [col('tasks:id'), col('tasks:predictions_score')];
    const rows = [...document.querySelectorAll('[data-testid=table-row]')];
    if (id < 0 || score < 0 || rows.length < n) return null;
    const shown = {};
    for (const row of rows) {
        const cells = row.querySelectorAll(':scope > .lsf-table__cell');
        const text = cells[score]?.innerText.trim();
        if (!text) return null;
        shown[cells[id].innerText.trim()] = text;
    }
    return shown;
}"""
FILES = ["coffee_cropped.jpg", "astronaut_resized.jpg", "chelsea_warmer.jpg", "horse_flipped.jpg"]


def assert_displayed(text: str, score: float) -> None:
    """``text`` is ``score`` as the Data Manager shows it (rounded to the digits it displays)."""
    digits = len(text.split(".")[1]) if "." in text else 0
    assert float(text) == round(score, digits), f"shown {text!r}, the predictions' mean score is {score}"


def test_connect_retrieve_and_review_predictions(studio, local_api, tmp_path):
    from playwright.sync_api import expect

    sdk = LabelStudio(base_url=studio.url, api_key=BROWSER_TOKEN)
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
        LABEL_STUDIO_API_KEY=BROWSER_TOKEN,
        SIMAGES_ALLOW_URL_NETWORKS="127.0.0.0/8",
    )
    try:
        with chromium_page() as browser:
            page = browser.page
            log_in(page, studio)

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
            (version,) = {p.model_version for p in sdk.predictions.list(project=project.id)}

            # The Data Manager scores the predictions the project is set to use; Label Studio sets
            # that to the connected model's title, not the version its predictions carry. A user
            # picks the version under Settings → Annotation → "Select which predictions ...".
            page.goto(f"{studio.url}/projects/{project.id}/settings/annotation")
            page.get_by_text("Similar Images (Connected)").click()
            page.get_by_text(re.compile(rf"^{re.escape(version)} \({len(FILES)} predictions\)$")).click()
            page.get_by_role("button", name="Save annotation settings").click()
            page.wait_for_function(
                "([url, version]) => fetch(url).then(r => r.json()).then(p => p.model_version === version)",
                arg=[f"{studio.url}/api/projects/{project.id}", version],
                polling=250,
            )
            page.goto(f"{studio.url}/projects/{project.id}/data")

            # Columns → "Prediction score", as a user adds a column (the tab's view keeps it),
            # then reload: the scores are computed by the task list the page fetches.
            columns = page.get_by_role("button", name="Columns")
            columns.click()
            score_column = page.locator("label", has=page.get_by_text("Prediction score", exact=True))
            score_column.click()
            expect(score_column.locator("input")).to_be_checked()
            columns.click()
            expect(score_column).to_be_hidden()
            page.reload()
            shown = page.wait_for_function(SCORES_SHOWN, arg=len(FILES)).json_value()
            api_tasks = sdk.tasks.list(project=project.id, fields="all")
            assert shown.keys() == {str(t.id) for t in api_tasks}, shown
            for task in api_tasks:
                scores = [p["score"] if isinstance(p, dict) else p.score for p in task.predictions or []]
                assert scores, f"task {task.id} has no prediction"
                assert_displayed(shown[str(task.id)], sum(scores) / len(scores))
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
            # Label Studio's pages asked no host off the machine (analytics and version check are off).
            assert browser.blocked == [], browser.blocked
    finally:
        backend.stop()
