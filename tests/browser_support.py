"""Real-browser tests: Playwright driving Debian's ``chromium``, and the screenshots they take.

Playwright's own browser download cannot work on these machines, so the system Chromium is
launched through ``executable_path``. Every step a reader wants to see is photographed into a
temporary folder; with ``SIMAGES_UPDATE_SCREENSHOTS=1`` the chosen ones also replace the images
the READMEs show (a plain test run never changes the checkout).
"""

from __future__ import annotations

import io
import ipaddress
import os
import shutil
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",  # nothing but the page's own loopback traffic
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 900}
UPDATE = os.environ.get("SIMAGES_UPDATE_SCREENSHOTS") == "1"

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's `chromium` (scripts/install.sh)"
)


@dataclass
class Screenshots:
    """Writes ``<name>.png`` into ``folder``; those named in ``docs`` also go to the README's folder."""

    folder: Path
    docs: dict[str, Path] = field(default_factory=dict)
    taken: list[Path] = field(default_factory=list)

    def take(self, page, name: str, **kwargs) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), **kwargs)
        assert_not_blank(path)
        self.taken.append(path)
        if UPDATE and name in self.docs:
            self.docs[name].parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.docs[name])
        return path


def assert_not_blank(path: Path) -> None:
    """A screenshot of a page that rendered shows many colours; a blank or error page does not."""
    with Image.open(io.BytesIO(path.read_bytes())) as img:
        colors = img.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colors is not None and len(colors) > 200, f"{path.name} is blank or nearly so"


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class BrowserSession:
    page: object
    blocked: list[str]
    """Requests the pages tried to send off the machine (web fonts, telemetry): refused, for reports."""


@contextmanager
def chromium_page() -> Iterator[BrowserSession]:
    """A fresh page in headless Chromium; the browser is closed when the block ends, pass or fail.

    The apps' pages ask for web fonts and telemetry on the internet; every request that does not
    go to loopback is aborted before it leaves (the tests' network rule), and listed.
    """
    playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
    blocked: list[str] = []

    def route(route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or is_loopback(url):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(60_000)
            context.route("**/*", route)
            yield BrowserSession(context.new_page(), blocked)
        finally:
            browser.close()
