"""``simages-ls expand`` as a streaming, resumable, budgeted run, in a real Label Studio 1.23.

Against a local server of our own (its log has one line per request, so what a run sends is
counted there): ``--dry-run`` sends nothing, ``--max-requests N`` sends exactly N, a run
interrupted (SIGINT) and run again ends with exactly what an uninterrupted run adds, and a
chunk whose import Label Studio fails (a loopback proxy in front of it answers 500 to that
one import) leaves the earlier chunks in place and is reported.
"""

from __future__ import annotations

import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from simages_label_studio.expand import SOURCE_TASK_KEY, expand_project
from simages_label_studio.settings import BackendSettings

from .conftest import CONFIG, backend_env

pytestmark = [pytest.mark.integration, pytest.mark.label_studio, pytest.mark.slow]

# Source tasks: one original of each demo photo (its variants are what expand finds) and two others.
SOURCE_FILES = [
    f"{name}.jpg"
    for name in ("astronaut", "camera", "chelsea", "clock", "coffee", "horse", "motorcycle_left", "rocket")
] + ["brick.jpg", "coins.jpg"]
SOURCES = len(SOURCE_FILES)


@pytest.fixture(scope="module")
def api(local_api, tmp_path_factory) -> Iterator:
    """A local server of this module's own (its log counts this module's requests), 100 ms per answer."""
    with local_api.start_server(tmp_path_factory.mktemp("expand-api"), latency_ms=100) as server:
        yield server


def searches(server) -> int:
    """Searches the server has answered so far (``POST /`` lines of its log)."""
    return sum(" POST / " in line for line in server.log_path.read_text().splitlines())


def make_project(label_studio, server, local_api, title: str) -> int:
    ls = label_studio.sdk()
    project = ls.projects.create(title=title, label_config=CONFIG)
    ids = [local_api.record(name).id for name in SOURCE_FILES]
    ls.projects.import_tasks(
        id=project.id, request=[{"data": {"image": f"{server.url}/images/{i}"}} for i in ids]
    )
    return project.id


def settings_for(server, label_studio, home: Path, label_studio_url: str | None = None) -> BackendSettings:
    return BackendSettings(
        **backend_env(server.url, server.api_key, home),
        LABEL_STUDIO_URL=label_studio_url or label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
    )


def cli_env(server, label_studio, home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **backend_env(server.url, server.api_key, home),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        **extra,
    }


def expand_cli(project_id: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "simages_label_studio", "expand", "--project", str(project_id), *args]


def made_by_expand(label_studio, project_id: int) -> list:
    return [t for t in label_studio.sdk().tasks.list(project=project_id) if SOURCE_TASK_KEY in t.data]


def outcome(label_studio, project_id: int) -> list[tuple[str, str]]:
    """(source task's image, new task's API image id) of every task expand made, sorted: what a run adds."""
    tasks = list(label_studio.sdk().tasks.list(project=project_id))
    source_image = {t.id: t.data["image"] for t in tasks}
    return sorted(
        (source_image[t.data[SOURCE_TASK_KEY]], t.data["simages_id"])
        for t in tasks
        if SOURCE_TASK_KEY in t.data
    )


def test_dry_run_prints_the_budget_and_sends_nothing(api, label_studio, local_api, tmp_path):
    project_id = make_project(label_studio, api, local_api, "dry run")
    before = searches(api)
    env = cli_env(api, label_studio, tmp_path / "home")
    plain = subprocess.run(
        expand_cli(project_id, "--dry-run"), env=env, capture_output=True, text=True, timeout=120
    )
    capped = subprocess.run(
        expand_cli(project_id, "--dry-run", "--max-requests", "4"), env=env, capture_output=True, text=True, timeout=120
    )  # fmt: skip
    assert plain.returncode == 0 and capped.returncode == 0, plain.stderr + capped.stderr
    assert f"{SOURCES} source tasks to search of {SOURCES} tasks" in plain.stdout
    assert f"{SOURCES} request(s), 0 beyond today's 100 free (0 used today)" in plain.stdout
    assert f"4 request(s) (capped at 4 of {SOURCES})" in capped.stdout
    assert searches(api) == before  # not one request reached the API
    assert made_by_expand(label_studio, project_id) == []
    assert label_studio.token not in plain.stdout + plain.stderr


def test_max_requests_sends_exactly_n_and_a_second_run_continues(api, label_studio, local_api, tmp_path):
    project_id = make_project(label_studio, api, local_api, "capped")
    settings = settings_for(api, label_studio, tmp_path / "home")
    before = searches(api)
    # Eight per task: screening skips a photo's variants (its first results) as copies.
    first = expand_project(project_id, per_task=8, max_requests=4, chunk_size=1, settings=settings)
    assert searches(api) - before == first.requests == 4
    assert first.stopped == "the cap of 4 requests was reached"
    assert first.remaining == SOURCES - 4 and first.chunks == len(first.landed) > 0
    assert len(made_by_expand(label_studio, project_id)) == first.added

    # Run again: the sources searched by the first run are not searched again, whatever they added.
    before = searches(api)
    second = expand_project(project_id, per_task=8, settings=settings)
    assert second.resumed == len(first.landed) and second.stopped is None and second.remaining == 0
    assert second.searched_before == 4 - len(first.landed) and second.source_tasks == SOURCES
    assert searches(api) - before == second.requests == SOURCES - 4
    ids = [t.data["simages_id"] for t in made_by_expand(label_studio, project_id)]
    assert len(ids) == len(set(ids)) == first.added + second.added


def test_an_interrupted_run_run_again_adds_every_item_exactly_once(api, label_studio, local_api, tmp_path):
    whole = make_project(label_studio, api, local_api, "uninterrupted")
    resumed = make_project(label_studio, api, local_api, "interrupted")
    # Without copy screening: the demo collection holds few distinct photos besides these sources (the
    # rest are their variants, which screening skips), too few imports for an interruption to fall
    # between. Screening across reruns: test_expand_copies.py.
    expected = expand_project(
        whole, per_task=3, screen_copies=False, settings=settings_for(api, label_studio, tmp_path / "h1")
    )
    assert expected.added >= 4, "too few new tasks for an interruption to fall between imports"

    # One search at a time and one source task per import: the run is slow enough to stop midway.
    env = cli_env(api, label_studio, tmp_path / "h2", SIMAGES_MAX_WORKERS="1")
    args = expand_cli(resumed, "--per-task", "3", "--chunk-size", "1", "--no-progress", "--no-screen-copies")
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        try:
            deadline = time.monotonic() + 120
            while len(made_by_expand(label_studio, resumed)) < 2:  # two imports have landed
                assert run.poll() is None, run.communicate()
                assert time.monotonic() < deadline, "expand imported nothing within 120 s"
                time.sleep(0.05)
            run.send_signal(signal.SIGINT)
            _, err = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 130, err
    assert "run the same command again to continue" in err and "Traceback" not in err
    partial = outcome(label_studio, resumed)
    assert 2 <= len(partial) < expected.added  # it stopped midway, with whole imports only

    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    # Every source task is accounted for: searched now, or expanded or searched by the interrupted run.
    line = re.search(
        r"searched (\d+) of (\d+) source tasks.*\n.*; (\d+) source tasks expanded and (\d+) searched",
        again.stdout,
    )
    assert line and line[1] == line[2] and int(line[2]) + int(line[3]) + int(line[4]) == SOURCES, again.stdout
    final = outcome(label_studio, resumed)
    assert final == outcome(label_studio, whole)  # every expected item, exactly once
    assert set(partial) <= set(final)


class _FailingImportProxy(http.server.BaseHTTPRequestHandler):
    """Forwards to Label Studio; answers 500 to every import from the one numbered ``fail_import`` on.

    Every one, not just that one: the SDK retries a 5xx, and its retry must fail too.
    """

    target = ""
    fail_import = 0
    imports = 0
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        cls = type(self)
        if self.command == "POST" and re.match(r"/api/projects/\d+/import/?(\?|$)", self.path):
            with cls.lock:
                cls.imports += 1
                failing = cls.imports >= cls.fail_import
            if failing:
                self._answer(500, b'{"detail": "import refused by the test proxy"}', "application/json")
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        upstream = requests.request(
            self.command,
            cls.target + self.path,
            headers=headers,
            data=body,
            timeout=120,
            allow_redirects=False,
        )
        self._answer(upstream.status_code, upstream.content, upstream.headers.get("Content-Type", ""))

    def _answer(self, status: int, content: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward


@pytest.fixture
def failing_proxy(label_studio) -> Iterator[str]:
    handler = type(
        "Proxy", (_FailingImportProxy,), {"target": label_studio.url, "fail_import": 2, "imports": 0}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_failing_chunk_import_keeps_earlier_chunks_and_is_reported(
    api, label_studio, local_api, failing_proxy, tmp_path
):
    project_id = make_project(label_studio, api, local_api, "failing import")
    settings = settings_for(api, label_studio, tmp_path / "home", label_studio_url=failing_proxy)
    # Without copy screening, for enough chunks (see the interrupted-run test).
    report = expand_project(project_id, per_task=3, chunk_size=1, screen_copies=False, settings=settings)

    assert report.failed_chunk is not None and report.failed_chunk.chunk == 2
    assert "Label Studio answered 500" in report.failed_chunk.reason
    assert report.stopped is not None and "the import of chunk 2 failed" in report.stopped
    assert report.chunks == 1 and report.remaining > 0
    # The first chunk is in the project, exactly as reported; the failed one is not.
    in_project = made_by_expand(label_studio, project_id)
    assert sorted(t.id for t in in_project) == sorted(report.new_task_ids) and report.added > 0
    assert not set(report.failed_chunk.source_tasks) & {t.data[SOURCE_TASK_KEY] for t in in_project}

    # Through the command line, Label Studio still refusing: exit 1, the failed chunk on stderr.
    env = cli_env(api, label_studio, tmp_path / "home", LABEL_STUDIO_URL=failing_proxy)
    cli = subprocess.run(
        expand_cli(project_id, "--per-task", "3", "--chunk-size", "1", "--no-screen-copies"), env=env, capture_output=True, text=True, timeout=300
    )  # fmt: skip
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "stopped: the import of chunk 1 failed: Label Studio answered 500" in cli.stderr
    assert re.search(r"expand: .*\d+/\d+", cli.stderr)  # the progress bar
    assert "left: run again to continue" in cli.stdout and "Traceback" not in cli.stderr
    assert label_studio.token not in cli.stdout + cli.stderr
    assert sorted(t.id for t in made_by_expand(label_studio, project_id)) == sorted(report.new_task_ids)

    # Run again (Label Studio answering normally): it finishes the project without duplicates.
    fixed = settings_for(api, label_studio, tmp_path / "home")
    second = expand_project(project_id, per_task=3, screen_copies=False, settings=fixed)
    assert second.failed_chunk is None and second.resumed == len(report.landed)
    ids = [t.data["simages_id"] for t in made_by_expand(label_studio, project_id)]
    assert len(ids) == len(set(ids)) == report.added + second.added
