"""FiftyOne tier: a throwaway database and plugins folder, set before FiftyOne reads its config.

FiftyOne reads ``FIFTYONE_*`` variables once, when ``fiftyone`` is first imported, so they are
set when ``fo_helpers`` is imported, here, before any test module of the folder.
The plugins folder holds a symlink to ``fiftyone_plugin/``, which is how a user installs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import fo_helpers
import pytest
from fo_proxy import BreakingProxy

# Importing fo_helpers (above) created the throwaway folders and set the FIFTYONE_* variables.
unique_name = fo_helpers.unique_name

import fiftyone as fo  # noqa: E402 - only after the variables are set


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.fiftyone)


@pytest.fixture
def api_env(local_api, monkeypatch, tmp_path) -> object:
    """The core's configuration pointed at the local server, with no cache and a private home."""
    monkeypatch.setenv("SIMAGES_API_URL", local_api.base_url)
    monkeypatch.setenv("SIMAGES_API_KEY", local_api.api_key)
    monkeypatch.setenv("SIMAGES_HOME", str(tmp_path / "simages-home"))
    monkeypatch.setenv("SIMAGES_CACHE", "0")
    return local_api


@pytest.fixture
def cleanup_datasets() -> Iterator[list[str]]:
    """Names appended here are deleted after the test (datasets the test or the plugin created)."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            if fo.dataset_exists(name):
                fo.delete_dataset(name)


@pytest.fixture
def make_dataset(local_api, cleanup_datasets) -> Callable[..., fo.Dataset]:
    """``make_dataset(*file_names)``: a throwaway dataset over demo images, deleted afterwards."""

    def make(*file_names: str, name: str | None = None) -> fo.Dataset:
        dataset = fo.Dataset(name or unique_name())
        cleanup_datasets.append(dataset.name)
        dataset.add_samples([fo.Sample(filepath=str(local_api.images_dir / f)) for f in file_names])
        return dataset

    return make


@pytest.fixture
def proxy_factory(api_env) -> Iterator[Callable[..., BreakingProxy]]:
    """``proxy_factory(broken, die_after=None, broken_thumbnails=...)``: a loopback image host that
    breaks on purpose."""
    proxies: list[BreakingProxy] = []

    def make(
        broken: dict[str, str], die_after: int | None = None, broken_thumbnails: frozenset[str] = frozenset()
    ) -> BreakingProxy:
        proxy = BreakingProxy(api_env.base_url, broken, die_after, broken_thumbnails)
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.close()
