"""Fixtures shared by every test tier: the demo collection and a real local server on loopback.

Also the suite's process hygiene: a test that leaves a ``ManagedProcess`` running errors at
teardown (after the process is stopped), and the session fails if any child process of
pytest is still alive when it ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from simages_server.demo import build_demo_index
from simages_server.index import ImageIndex, IndexedImage
from simages_server.testing import ServerProcess, live_processes, stop_all

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
        """Another server over the same index (e.g. ``latency_ms=100``), started; the caller stops it
        (``with local_api.start_server(...) as server:``)."""
        kwargs.setdefault("api_keys", (API_KEY,))
        kwargs.setdefault("state", tmp_dir)
        return ServerProcess(self.index_dir, log_path=tmp_dir / "server.log", **kwargs).start()


@pytest.fixture(scope="session")
def demo_collection(tmp_path_factory) -> tuple[Path, Path]:
    """(demo_dir, index_dir), built once per test session."""
    demo_dir = tmp_path_factory.mktemp("demo")
    return demo_dir, build_demo_index(demo_dir)


@pytest.fixture(scope="session")
def local_api(demo_collection, tmp_path_factory) -> Iterator[LocalApi]:
    demo_dir, index_dir = demo_collection
    state = tmp_path_factory.mktemp("server-state")
    log_path = state / "server.log"
    with ServerProcess(index_dir, api_keys=(API_KEY,), state=state, log_path=log_path) as server:
        yield LocalApi(server.url, API_KEY, index_dir, demo_dir, log_path)


# --- process hygiene ---------------------------------------------------------------------

# Children that outlive the session by design, matched on their command line: FiftyOne's
# database service and its mongod (they stop when this interpreter exits), the watcher that
# removes FiftyOne's throwaway database afterwards (tests/fiftyone/fo_helpers.py), and
# multiprocessing's helper processes.
_LONG_LIVED_MARKERS = (
    "--51-service",
    "mongod",
    "shutil.rmtree(root",
    "multiprocessing.resource_tracker",
    "multiprocessing.forkserver",
)


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    before = set(live_processes())
    yield
    leaked = [p for p in live_processes() if p not in before]
    names = ", ".join(f"{p.name} ({' '.join(p.args[:4])} ...)" for p in leaked)
    for process in leaked:
        process.stop()
    if leaked:
        pytest.fail(f"the test left {len(leaked)} process(es) running, now stopped: {names}")


def _unexpected_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if not any(marker in command for marker in _LONG_LIVED_MARKERS):
            found.append(child)
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process the suite started is still alive (after stopping it)."""
    leaked = [f"{p.name} ({' '.join(p.args[:4])} ...)" for p in live_processes()]
    stop_all()
    children = _unexpected_children()
    _, alive = psutil.wait_procs(children, timeout=5)  # processes already on their way out
    for child in alive:
        try:
            leaked.append(f"pid {child.pid}: {' '.join(child.cmdline())[:200]}")
            child.kill()
        except psutil.NoSuchProcess:
            continue
    if not leaked:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["processes started by the suite were still running at the end (now killed):", *leaked]
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line("\n".join(lines), red=True, bold=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
