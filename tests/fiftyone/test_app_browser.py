"""The FiftyOne App on loopback, driven in headless Chromium the way a person uses the plugin.

Open "Find similar images" with nothing selected (no error until the user types), select two
samples in the grid, open the operator browser, fill "Find similar images" (sources,
the inline error for an empty text prompt), run a text prompt ("Then import them" opens the
import form with it), then the two samples: the gallery
shows thumbnails with scores and classes. "Import these with labels" in the gallery opens the
import form with the same query; it runs with a progress bar, and the grid then shows the run's
new samples with their boxes. Screenshots go to a temporary folder; ``SIMAGES_UPDATE_SCREENSHOTS=1``
also refreshes the ones ``fiftyone_plugin/README.md`` shows (``fiftyone_plugin/docs/``)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import fiftyone as fo
import pytest
import requests
from browser_support import Screenshots, chromium_page, needs_chromium
from fo_helpers import REPO, unique_name

from simages_fiftyone._importing import default_media_dir
from simages_server.testing import free_port

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow, needs_chromium]

DOCS = REPO / "fiftyone_plugin" / "docs"
LOOKER = '[data-cy="looker"]'
SELECTED = '[data-cy="action-manage-selected"]'
OUTPUT_WINDOW = '[data-cy="operators-prompt-view-modal"]'
"""FiftyOne's output window (``ctx.ops.show_output``): the gallery, the import's progress and summary."""
PROMPT = '[data-cy="operators-prompt-modal"]'


@dataclass(frozen=True)
class App:
    url: str
    dataset: fo.Dataset


def wait_until_served(url: str, timeout: float = 60.0) -> None:
    """The App's server answers (polling a loopback URL: a state, not a fixed pause)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.2)


@contextmanager
def served_app(dataset: fo.Dataset) -> Iterator[tuple[App, fo.Session]]:
    """The App showing ``dataset`` (its own server process on a loopback port, with the plugin and
    its secrets from the environment), answering, until the block ends; and its session."""
    port = free_port()
    session = fo.launch_app(dataset, remote=True, address="127.0.0.1", port=port, auto=False)
    try:
        app = App(f"http://127.0.0.1:{port}", dataset)
        wait_until_served(app.url + "/")
        yield app, session
    finally:
        session.close()
        if hasattr(fo, "close_app"):
            fo.close_app()


@pytest.fixture
def app(api_env, make_dataset) -> Iterator[App]:
    dataset = make_dataset("chelsea.jpg", "coffee.jpg", "astronaut.jpg", name=unique_name("simages-app"))
    with served_app(dataset) as (served, _):
        yield served


def open_dataset(page, app: App) -> None:
    from playwright.sync_api import expect

    page.goto(f"{app.url}/datasets/{app.dataset.name}")
    expect(page.locator(LOOKER)).to_have_count(len(app.dataset))
    # First-visit notices cover the grid; a user dismisses them once.
    for name in ("Dismiss", "Disable"):
        notice = page.get_by_role("button", name=name, exact=True)
        if notice.count():
            notice.click()
            expect(notice).to_have_count(0)


def select_tiles(page, count: int) -> None:
    """Tick the checkboxes of the first ``count`` tiles, by position in the grid.

    The grid re-renders its tiles while it lays out; a tile is found under the mouse at the moment
    of the click, so a re-render cannot redirect the click to another sample.
    """
    from playwright.sync_api import expect

    grid = page.locator('[data-cy="fo-grid"]').bounding_box()
    xs = [grid["x"] + 60 + i * grid["width"] / (count + 1) for i in range(count)]
    for i, x in enumerate(xs):
        y = grid["y"] + 60
        page.mouse.move(x, y)
        # Polled until a laid-out tile with its checkbox is under the point (the grid may still be
        # re-rendering), then clicked at once.
        center = page.wait_for_function(
            """([x, y]) => {
                const tile = document.elementFromPoint(x, y)?.closest('[data-cy=looker]');
                const box = tile?.querySelector('[data-cy=looker-checkbox-]');
                if (!box) return null;
                const r = box.getBoundingClientRect();
                return r.width > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null;
            }""",
            arg=[x, y],
        ).json_value()
        page.mouse.click(*center)
        expect(page.locator(SELECTED)).to_have_text(re.compile(rf"^\s*{i + 1}\b"))


def open_operator(page, label: str) -> None:
    from playwright.sync_api import expect

    page.locator('[data-cy="action-browse-operations"]').click()
    page.keyboard.type(label.split(" (")[0])
    page.get_by_text(label, exact=True).click()
    expect(page.get_by_role("button", name="Execute")).to_be_visible()


def choose(page, value: str) -> None:
    page.locator(f'input[type=radio][value="{value}"]').check()


def set_number(page, value: int) -> None:
    page.locator('input[type=number][max="50"]').fill(str(value))


def gallery(page) -> list[str]:
    """The captions of the find operator's thumbnails (``#1 score 0.999 · cat 1.00``), once shown.

    The gallery is FiftyOne's output window: a grid of image views, each headed by its caption.
    """
    from playwright.sync_api import expect

    output = page.locator(OUTPUT_WINDOW)
    found = output.get_by_text("Similar images found:")
    expect(found).to_be_visible()
    count = int(found.locator("xpath=..").inner_text().split(":")[1])
    thumbnails = output.locator("img")
    expect(thumbnails).to_have_count(count)
    for i in range(count):  # every thumbnail was fetched from the local server and decoded
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=thumbnails.nth(i).element_handle()
        )
    # Each image view: its header (rank and score, then the classes) above the linked thumbnail.
    cells = thumbnails.evaluate_all("imgs => imgs.map(i => i.closest('a').parentElement.innerText)")
    return [" · ".join(line.strip() for line in cell.split("\n") if line.strip()) for cell in cells]


# Records every state of the output window's progress bar (the import yields ``set_progress``):
# a run on a few images can finish between two polls, an observer sees every change.
WATCH_PROGRESS = """() => {
    window.__progress = [];
    const seen = () => {
        const bar = document.querySelector('[data-cy=operators-prompt-view-modal] [role=progressbar]');
        if (!bar) return;
        const box = bar.closest('[data-cy=operators-prompt-view-modal]');
        const state = bar.getAttribute('aria-valuenow') + '|' + box.innerText.replace(/\\s+/g, ' ');
        if (window.__progress.at(-1) !== state) window.__progress.push(state);
    };
    new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def defaults_resolved(response) -> bool:
    """The App's resolve of a form with its inputs' defaults filled in (it first resolves it empty)."""
    if "resolve-type" not in response.url or response.request.method != "POST":
        return False
    return bool(((response.request.post_data_json or {}).get("params") or {}).get("source"))


def fresh_form_shows_no_error(page) -> None:
    """Nothing selected, the find form opens on an empty text prompt: no red error until the user
    acts. The App resolves the form as it opens ({}) and again with the defaults filled in; the
    second answer is awaited (state, not time) before looking for an error, and typing then
    clearing the prompt shows it."""
    from playwright.sync_api import expect

    with page.expect_response(defaults_resolved) as answer:
        open_operator(page, "Find similar images (simages)")
    assert answer.value.ok
    prompt = page.locator(PROMPT)
    text = prompt.locator('input[type="string"]').first
    expect(text).to_be_visible()
    expect(prompt.get_by_text(re.compile(r"^enter a text prompt"))).to_have_count(0)
    text.fill("a")
    text.fill("")
    expect(prompt.get_by_text(re.compile(r"^enter a text prompt"))).to_be_visible()
    prompt.get_by_role("button", name="Cancel").click()
    expect(prompt).to_have_count(0)


def test_find_then_import_in_the_app(app, tmp_path):
    from playwright.sync_api import expect

    shots = Screenshots(
        tmp_path / "screenshots",
        docs={
            "find-form": DOCS / "find-form.png",
            "gallery": DOCS / "gallery.png",
            "imported": DOCS / "app.png",
        },
    )
    shots.folder.mkdir()
    with chromium_page() as browser:
        page = browser.page
        output = page.locator(OUTPUT_WINDOW)
        open_dataset(page, app)
        fresh_form_shows_no_error(page)
        select_tiles(page, 2)

        # The form: every source, the two selected samples, and an inline error for an empty prompt.
        open_operator(page, "Find similar images (simages)")
        for source in (
            "Selected samples (2)",
            "Sample in the modal",
            "Image URL",
            "Text prompt",
            "Uploaded image",
        ):
            expect(page.get_by_text(source, exact=True)).to_be_visible()
        choose(page, "text")
        expect(page.get_by_text(re.compile(r"^enter a text prompt"))).to_be_visible()
        expect(page.get_by_role("button", name="Execute")).to_be_disabled()
        shots.take(page, "find-validation")

        # A text prompt: as many thumbnails as asked for, a cat first; "Then import them" opens
        # the import form with the same prompt next to the results (cancelled here).
        page.locator('[role="dialog"] input[type="string"]').fill("a cat")
        set_number(page, 2)
        page.locator("label", has_text="Detect objects").locator("input").check()
        page.locator("label", has_text="Then import them").locator("input").check()
        expect(page.get_by_role("button", name="Execute")).to_be_enabled()
        page.get_by_role("button", name="Execute").click()
        captions = gallery(page)
        # The dataset holds this cat photo: the first result says it is a copy of that sample, and
        # its own copies among the results are folded into it ("1 copy") rather than shown again.
        assert 1 <= len(captions) <= 2 and "cat" in captions[0], captions
        assert "copy of sample " in captions[0], captions
        assert len(captions) == 2 or " · 1 copy · " in captions[0], captions
        form = page.locator(PROMPT)
        expect(form.get_by_text("Import similar images", exact=True)).to_be_visible()
        expect(form.locator('input[type=radio][value="text"]')).to_be_checked()
        expect(form.locator('input[type="string"]').first).to_have_value("a cat")
        shots.take(page, "gallery-text")
        form.get_by_role("button", name="Cancel").click()
        expect(form).to_have_count(0)
        output.get_by_role("button", name="Done").click()
        expect(output).to_have_count(0)

        # The two selected samples, three images each, with their objects.
        open_operator(page, "Find similar images (simages)")
        choose(page, "selected")
        set_number(page, 3)
        page.locator("label", has_text="Detect objects").locator("input").check()
        expect(page.get_by_role("button", name="Execute")).to_be_enabled()
        shots.take(page, "find-form")
        page.get_by_role("button", name="Execute").click()
        captions = gallery(page)
        # Two queries of 3, merged by image id, copies folded together: each scored and labelled.
        assert 2 <= len(captions) <= 6, captions
        for caption in captions:
            assert re.match(r"#\d+ score [01]\.\d{3}( · \d+ cop(y|ies))? · \w", caption), caption
        assert any("cat" in c for c in captions) and any("cup" in c for c in captions), captions
        shots.take(page, "gallery")

        # "Import these with labels" opens the import form with the same query.
        output.get_by_role("button", name="Import these with labels").click()
        expect(form.get_by_text("Import similar images", exact=True)).to_be_visible()
        expect(form.locator('input[type=radio][value="selected"]')).to_be_checked()
        expect(form.get_by_text("Selected samples (2)", exact=True)).to_be_visible()
        expect(form.locator('input[type=number][max="50"]')).to_have_value("3")
        expect(form.locator("label", has_text="Detect objects").locator("input")).to_be_checked()
        expect(form.get_by_text(default_media_dir(app.dataset.name))).to_be_visible()
        # The selected samples find themselves and their copies; screening is switched off here so
        # that they are imported (the screening itself is tested in test_screening.py).
        skip = form.locator("label", has_text="Skip copies").locator("input")
        expect(skip).to_be_checked()
        skip.uncheck()
        expect(form.get_by_role("button", name="Execute")).to_be_enabled()
        shots.take(page, "import-form")

        # It runs with progress (the output window's progress bar, with the import's own labels).
        originals = set(app.dataset.values("id"))
        page.evaluate(WATCH_PROGRESS)
        form.get_by_role("button", name="Execute").click()
        page.wait_for_function("() => window.__progress.length > 0", timeout=120_000)
        expect(output.get_by_text("Run tag:")).to_be_visible(timeout=120_000)
        progress = page.evaluate("window.__progress")
        assert any(re.search(r"Searching|Found \d+|Downloaded \d+/\d+", p) for p in progress), progress
        app.dataset.reload()
        (tag,) = {t for t in app.dataset.distinct("tags") if t.startswith("simages-")}
        imported = app.dataset.match_tags(tag)
        assert len(imported) == len(app.dataset) - len(originals) >= 3
        queries = set(imported.values("simages_query"))  # the selected samples' query, not the text one
        assert {q.split(":", 1)[0] for q in queries} == {"sample"}, queries
        assert {q.split(":", 1)[1] for q in queries} <= originals, queries
        assert all(s.detections and s.detections.detections for s in imported)
        expect(output.get_by_text(tag)).to_be_visible()
        shots.take(page, "import-output")
        output.get_by_role("button", name="Done").click()
        # The App switched to the run's view: only the imported samples, with their boxes.
        expect(page.locator(LOOKER)).to_have_count(len(imported))
        expect(page.locator('[data-cy="entry-counts"]')).to_have_text(f"{len(imported)} samples")
        for tile in page.locator(LOOKER).locator("canvas").all():
            expect(tile).to_have_attribute("canvas-loaded", "true")
        shots.take(page, "imported")
    assert not [u for u in browser.blocked if "127.0.0.1" in u]
