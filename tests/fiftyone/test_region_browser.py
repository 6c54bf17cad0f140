"""Selected detections as queries in the App, in headless Chromium: the form and the gallery a user sees.

The montage sample of ``test_region_queries`` (the cat | a grey gap | the horse, a detection over
each) is opened in the App; both detections are selected through the session (as a notebook
does, and as clicking the boxes in the modal does: the App's selected labels either way). The
find form defaults to "Selected detections (2)" and says so; run, the gallery has one block per
detection, titled with it, the cat's block headed by a cat photo; its import button imports
them with the detections as provenance. ``SIMAGES_UPDATE_SCREENSHOTS=1``
refreshes ``fiftyone_plugin/docs/region-form.png`` and ``region-gallery.png``.
"""

from __future__ import annotations

import re

import fiftyone as fo
import pytest
from browser_support import Screenshots, chromium_page, needs_chromium
from fo_helpers import unique_name
from test_app_browser import DOCS, OUTPUT_WINDOW, PROMPT, open_dataset, open_operator, served_app
from test_region_queries import make_montage

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow, needs_chromium]


def test_selected_detections_are_the_query_in_the_app(api_env, cleanup_datasets, tmp_path):
    from playwright.sync_api import expect

    dataset = fo.Dataset(unique_name("simages-regions"))
    cleanup_datasets.append(dataset.name)
    montage = make_montage(api_env, dataset, tmp_path / "montage.jpg")
    shots = Screenshots(
        tmp_path / "screenshots",
        docs={"region-form": DOCS / "region-form.png", "region-gallery": DOCS / "region-gallery.png"},
    )
    shots.folder.mkdir()
    with served_app(dataset) as (app, session):
        with chromium_page() as browser:
            page = browser.page
            open_dataset(page, app)
            session.select_labels(labels=montage.selected(montage.cat, montage.horse))

            open_operator(page, "Find similar images (simages)")
            form = page.locator(PROMPT)
            expect(form.locator('input[type=radio][value="selected_labels"]')).to_be_checked()
            expect(form.get_by_text("Selected detections (2)", exact=True)).to_be_visible()
            expect(form.get_by_text(re.compile(r"^2 selected detections as queries"))).to_be_visible()
            page.locator('input[type=number][max="50"]').fill("3")
            page.locator("label", has_text="Collapse copies").locator("input").uncheck()
            expect(form.get_by_role("button", name="Execute")).to_be_enabled()
            shots.take(page, "region-form")
            form.get_by_role("button", name="Execute").click()

            output = page.locator(OUTPUT_WINDOW)
            cat_title = f"Results for detection 'cat' ({montage.cat.id}, field ground_truth) of sample {montage.sample_id}"
            horse_title = cat_title.replace("'cat'", "'horse'").replace(montage.cat.id, montage.horse.id)
            expect(output.get_by_text(cat_title)).to_be_visible(timeout=60_000)
            expect(output.get_by_text(horse_title)).to_be_visible()
            thumbnails = output.locator("img")
            expect(thumbnails).to_have_count(6)
            for i in range(6):
                page.wait_for_function(
                    "img => img.complete && img.naturalWidth > 0", arg=thumbnails.nth(i).element_handle()
                )
            # The block under the cat's title begins with a cat photo (its alt is the API image id).
            files = {r.id: r.file for r in api_env.records()}
            first_alt = thumbnails.nth(0).get_attribute("alt")
            assert files[first_alt].startswith("chelsea"), files[first_alt]
            shots.take(page, "region-gallery")

            # "Import these with labels": the import form with the same detections; run, the new
            # samples say which detection found them.
            output.get_by_role("button", name="Import these with labels").click()
            expect(form.locator('input[type=radio][value="selected_labels"]')).to_be_checked()
            expect(form.get_by_text("Selected detections (2)", exact=True)).to_be_visible()
            form.get_by_role("button", name="Execute").click()
            expect(output.get_by_text("Run tag:")).to_be_visible(timeout=120_000)
            dataset.reload()
            imported = dataset.exists("simages_id")
            # The cat's crops are copies of each other, as are the horse's: one of each is kept.
            assert len(imported) >= 2
            assert set(imported.values("simages_query_label_id")) == {montage.cat.id, montage.horse.id}
            assert set(imported.values("simages_query_sample_id")) == {montage.sample_id}
        assert not [u for u in browser.blocked if "127.0.0.1" in u]
