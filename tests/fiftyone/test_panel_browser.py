"""The Similar Images panel in the real App, in headless Chromium, as a user curates with it.

Open a sample, open the panel from the sample viewer's actions, step to the next sample and
back (the local server's log shows no second request for the first sample), tick two results,
import them, and find exactly those two new samples in the grid with their boxes.
``SIMAGES_UPDATE_SCREENSHOTS=1`` refreshes ``fiftyone_plugin/docs/panel-modal.png`` and
``panel-imported.png``.
"""

from __future__ import annotations

import re
import time

import pytest
from browser_support import Screenshots, chromium_page, needs_chromium
from fo_helpers import coco_boxes, unique_name
from test_app_browser import DOCS, LOOKER, open_dataset, served_app
from test_panel_state import server_searches

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow, needs_chromium]

MODAL_ACTION = '[data-cy="action-toggle-fullscreen"] >> xpath=preceding-sibling::div[1]'
"""The sample viewer's action the plugin places (an icon, just before the full-screen toggle)."""
PANEL_TAB_BODY = "#modal"
GRID_ACTION = '[data-item-id="@simages/similar-images/open_similar_images_panel"]'


def wait_for_thumbnails(page, images) -> None:
    for i in range(images.count()):
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=images.nth(i).element_handle()
        )


def wait_for(condition, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds (a state, never a fixed pause)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)


def test_panel_in_the_modal_steps_back_from_cache_and_imports_the_ticked_results(
    api_env, make_dataset, tmp_path
):
    from playwright.sync_api import expect

    dataset = make_dataset("chelsea.jpg", "horse.jpg", "clock.jpg", name=unique_name("simages-panel"))
    shots = Screenshots(
        tmp_path / "screenshots",
        docs={
            "panel-modal": DOCS / "panel-modal.png",
            "panel-imported": DOCS / "panel-imported.png",
            "panel-grid": DOCS / "panel-grid.png",
        },
    )
    shots.folder.mkdir()
    with served_app(dataset) as (app, _):
        with chromium_page() as browser:
            page = browser.page
            open_dataset(page, app)
            first, second = dataset.values("id")[:2]
            page.locator(LOOKER).first.click()
            # The modal is ready once its sample is drawn; an action clicked before is not heard yet.
            expect(page.locator("#modal canvas")).to_have_attribute("canvas-loaded", "true", timeout=60_000)
            expect(page.locator(MODAL_ACTION)).to_be_visible()
            before = server_searches(api_env)
            page.locator(MODAL_ACTION).click()  # the sample viewer's action opens the panel
            panel = page.locator(PANEL_TAB_BODY)
            expect(panel.get_by_text(f"Similar to sample {first}", exact=True)).to_be_visible(timeout=60_000)
            assert server_searches(api_env) == before + 1

            # 20 results per search: the cat's own photo and its variants are one result (marked as
            # a copy of the open sample), and there are others to tick.
            per_search = panel.locator('input[type=number][max="50"]')
            per_search.fill("20")
            captions = panel.get_by_text(re.compile(r"^#\d+ · score "))
            expect(captions.nth(2)).to_be_visible(timeout=60_000)  # more than the 10 results' two groups
            expect(
                panel.get_by_text(
                    re.compile(r"^Requests sent by this panel: 2 · free requests left today: 98 of 100$")
                )
            ).to_be_visible()
            expect(captions.first).to_contain_text(f"copy of sample {first} in this dataset")
            shown_first = captions.all_inner_texts()

            page.locator(
                '[data-cy="nav-right-button"]'
            ).click()  # the next sample: its neighbours, one request
            expect(panel.get_by_text(f"Similar to sample {second}", exact=True)).to_be_visible(timeout=60_000)
            wait_for(lambda: server_searches(api_env) == before + 3)
            page.locator('[data-cy="nav-left-button"]').click()  # back: answered from the panel's cache
            expect(panel.get_by_text(f"Similar to sample {first}", exact=True)).to_be_visible(timeout=60_000)
            expect(captions).to_have_count(len(shown_first))
            assert captions.all_inner_texts() == shown_first
            expect(panel.get_by_text(re.compile(r"^Requests sent by this panel: 3 "))).to_be_visible()
            assert server_searches(api_env) == before + 3  # no second request for the first sample

            # Tick two results that are not copies of the dataset's samples, and have boxes in the collection.
            images = panel.locator("img")
            alts = [images.nth(i).get_attribute("alt") for i in range(len(shown_first))]
            files = {r.id: r.file for r in api_env.records()}
            boxed = {name for name, boxes in coco_boxes(api_env).items() if boxes}
            fresh = [
                i
                for i, text in enumerate(shown_first)
                if "copy of sample" not in text and files[alts[i]] in boxed
            ][:2]
            assert len(fresh) == 2, shown_first
            ticked = [alts[i] for i in fresh]
            for i in fresh:
                panel.get_by_label("Import", exact=True).nth(i).check()
            button = panel.get_by_role("button", name="Import selected (2)")
            expect(button).to_be_enabled()
            wait_for_thumbnails(page, images)
            shots.take(page, "panel-modal")
            # A thumbnail opens its full-size image in a new tab.
            with page.context.expect_page() as opened:
                images.nth(fresh[0]).click()
            full = opened.value
            full.wait_for_load_state()
            assert full.url == api_env.base_url + f"/images/{ticked[0]}"
            full.close()

            originals = set(dataset.values("id"))
            button.click()
            # The modal closes and the grid shows the run's new samples: exactly the two ticked, with boxes.
            expect(page.locator(LOOKER)).to_have_count(2, timeout=120_000)
            dataset.reload()
            new = dataset.select([i for i in dataset.values("id") if i not in originals])
            assert sorted(new.values("simages_id")) == sorted(ticked)
            assert all(s.detections and s.detections.detections for s in new)
            assert set(new.values("simages_query")) == {f"sample:{first}"}  # provenance: the sample on screen
            assert len({t for t in new.distinct("tags") if t.startswith("simages-")}) == 1  # one import run
            expect(page.locator('[data-cy="entry-counts"]')).to_have_text("2 samples")
            for tile in page.locator(LOOKER).locator("canvas").all():
                expect(tile).to_have_attribute("canvas-loaded", "true")
            shots.take(page, "panel-imported")

            # In the grid, the same panel (from the grid's actions) searches a text prompt.
            page.locator(GRID_ACTION).click()
            # The panel's own box: the innermost element holding its text box and its usage line.
            grid_panel = (
                page.locator("div")
                .filter(has=page.locator("input[type=string]"))
                .filter(has=page.get_by_text(re.compile("^Requests sent by this panel")))
                .last
            )
            grid_panel.locator("input[type=string]").fill("a cat")
            grid_panel.get_by_role("button", name="Search text").click()
            expect(grid_panel.get_by_text("Similar to the text 'a cat'", exact=True)).to_be_visible(
                timeout=60_000
            )
            expect(grid_panel.get_by_text(re.compile(r"^#1 · score "))).to_be_visible()
            expect(
                grid_panel.get_by_role("button", name="Search with the 0 selected samples")
            ).to_be_disabled()
            wait_for_thumbnails(page, grid_panel.locator("img"))
            shots.take(page, "panel-grid")
        assert not [u for u in browser.blocked if "127.0.0.1" in u]
