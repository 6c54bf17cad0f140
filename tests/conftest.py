"""Fixtures shared by every test tier: the demo collection and a real local server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from simages_server.demo import build_demo_collection
from simages_server.index import ImageIndex, IndexedImage, build_index
from simages_server.testing import ServerProcess

API_KEY = "local-test-key"


@dataclass(frozen=True)
class LocalApi:
    """A running local server over the demo collection."""

    base_url: str
    api_key: str
    index_dir: Path
    demo_dir: Path
    """Holds ``images/`` and ``annotations.json`` (COCO)."""
    log_path: Path

    @property
    def images_dir(self) -> Path:
        return self.demo_dir / "images"

    def records(self) -> list[IndexedImage]:
        return ImageIndex.load(self.index_dir).records

    def record(self, file_name: str) -> IndexedImage:
        return next(r for r in self.records() if r.file == file_name)

    def image_url(self, file_name: str) -> str:
        return f"{self.base_url}/images/{self.record(file_name).id}"

    def start_server(self, tmp_dir: Path, **kwargs) -> ServerProcess:
        """Another server over the same index (e.g. ``latency_ms=100``); the caller stops it."""
        kwargs.setdefault("api_keys", (API_KEY,))
        kwargs.setdefault("state", tmp_dir)
        return ServerProcess(self.index_dir, log_path=tmp_dir / "server.log", **kwargs).start()


@pytest.fixture(scope="session")
def demo_collection(tmp_path_factory) -> tuple[Path, Path]:
    """(demo_dir, index_dir), built once per test session."""
    demo_dir = tmp_path_factory.mktemp("demo")
    images_dir = build_demo_collection(demo_dir)
    index_dir = demo_dir / "index"
    build_index(images_dir, index_dir, coco=demo_dir / "annotations.json", progress=False)
    return demo_dir, index_dir


@pytest.fixture(scope="session")
def local_api(demo_collection, tmp_path_factory) -> Iterator[LocalApi]:
    demo_dir, index_dir = demo_collection
    state = tmp_path_factory.mktemp("server-state")
    log_path = state / "server.log"
    with ServerProcess(index_dir, api_keys=(API_KEY,), state=state, log_path=log_path) as server:
        yield LocalApi(server.url, API_KEY, index_dir, demo_dir, log_path)
