"""``simages-ls expand`` as a user runs it (a subprocess, a real Label Studio 1.23, a local server):
quiet by default, a report that says what was searched, added and left, an early stop with a
non-zero exit when the API goes down mid-run, and no second search of a task already searched.

What a run sends is counted on the server's log (one line per request).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from simages_label_studio.expand_run import UNREACHABLE_IN_A_ROW

from .conftest import CONFIG
from .test_expand_at_scale import SOURCES, cli_env, expand_cli, make_project, searches

pytestmark = [pytest.mark.integration, pytest.mark.label_studio, pytest.mark.slow]


@pytest.fixture(scope="module")
def api(local_api, tmp_path_factory) -> Iterator:
    with local_api.start_server(tmp_path_factory.mktemp("expand-runs-api"), latency_ms=50) as server:
        yield server


def run(project_id: int, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        expand_cli(project_id, "--no-progress", *args), env=env, capture_output=True, text=True, timeout=300
    )


def test_quiet_by_default_and_verbose_on_request(api, label_studio, local_api, tmp_path):
    project_id = make_project(label_studio, api, local_api, "quiet")
    env = cli_env(api, label_studio, tmp_path / "home")
    # label-studio-sdk warns about `localhost` in LABEL_STUDIO_URL (not reachable from Docker).
    env["LABEL_STUDIO_URL"] = label_studio.url.replace("127.0.0.1", "localhost")
    quiet = run(project_id, env, "--max-requests", "2", "--dry-run")
    assert quiet.returncode == 0, quiet.stderr
    # No request lines, no 404 for the page after the last, no SDK warning.
    assert "HTTP Request" not in quiet.stderr and "404" not in quiet.stderr, quiet.stderr
    assert "docker" not in quiet.stderr.lower(), quiet.stderr
    verbose = run(project_id, env, "--max-requests", "2", "--dry-run", "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "HTTP Request: GET" in verbose.stderr and "404 Not Found" in verbose.stderr, verbose.stderr

    ran = run(project_id, env, "--max-requests", "1", "--no-screen-copies")
    assert ran.returncode == 0, ran.stderr
    assert "HTTP Request" not in ran.stderr and "404 Not Found" not in ran.stderr, ran.stderr
    assert "docker" not in ran.stderr.lower(), ran.stderr


def test_a_capped_run_reports_what_was_searched_added_and_left(api, label_studio, local_api, tmp_path):
    project_id = make_project(label_studio, api, local_api, "capped report")
    env = cli_env(api, label_studio, tmp_path / "home")
    capped = run(project_id, env, "--max-requests", "2", "--per-task", "3", "--no-screen-copies")
    assert capped.returncode == 0, capped.stderr
    first_line = capped.stdout.splitlines()[0]
    added = int(first_line.split("added ")[1].split(" ")[0])
    assert first_line == (
        f"project {project_id}: searched 2 of {SOURCES} source tasks, added {added} tasks, "
        f"{SOURCES - 2} left: run again to continue"
    ), capped.stdout
    assert 0 < added <= 2 * 3


def test_a_second_run_does_not_search_tasks_searched_before(api, label_studio, local_api, tmp_path):
    project_id = make_project(label_studio, api, local_api, "searched once")
    env = cli_env(api, label_studio, tmp_path / "home")
    # No similar image scores 1.0 but the task's own: most sources add nothing, and leave no trace.
    args = ("--min-score", "1.0", "--per-task", "2", "--no-screen-copies", "--json")
    before = searches(api)
    first = run(project_id, env, *args)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert searches(api) - before == report["requests"] == SOURCES
    empty = SOURCES - len(report["landed"])
    assert empty > 0, report  # else this test would prove nothing

    before = searches(api)
    second = run(project_id, env, *args)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert searches(api) == before and again["requests"] == 0  # not one search sent
    assert again["searched_before"] == empty and again["resumed"] == len(report["landed"])

    # Other parameters ask another question: those tasks are searched again.
    before = searches(api)
    other = run(project_id, env, "--min-score", "0.99", "--per-task", "2", "--no-screen-copies", "--json")
    assert other.returncode in (0, 3), other.stderr
    assert searches(api) - before == json.loads(other.stdout)["requests"] == empty


def test_the_api_going_down_stops_the_run_early_with_a_non_zero_exit(
    local_api, label_studio, static_images, tmp_path
):
    base, folder = static_images
    names = [f"{n}.jpg" for n in ("astronaut", "chelsea", "coffee", "horse", "clock", "rocket", "camera")]
    names += [f"{n}.jpg" for n in ("brick", "grass", "gravel", "coins", "moon", "page", "text")]
    for name in names:  # the tasks' images outlive the API: only the API goes down
        shutil.copy(local_api.images_dir / name, folder / f"down-{name}")
    ls = label_studio.sdk()
    project = ls.projects.create(title="api down", label_config=CONFIG)
    ls.projects.import_tasks(id=project.id, request=[{"data": {"image": f"{base}/down-{n}"}} for n in names])

    # The static server is on loopback too: the API may fetch the tasks' URLs there.
    allow = ("--allow-url-network", "127.0.0.0/8")
    with local_api.start_server(tmp_path / "api", latency_ms=300, extra_args=allow) as server:
        env = cli_env(server, label_studio, tmp_path / "home", SIMAGES_MAX_WORKERS="1")
        process = subprocess.Popen(
            expand_cli(project.id, "--no-progress", "--no-screen-copies", "--per-task", "1", "--json"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while searches(server) < 2:  # two searches answered: the run is under way
                assert process.poll() is None and time.monotonic() < deadline, "the run did not start"
                time.sleep(0.05)
            server.stop()
            answered = searches(server)
            stdout, stderr = process.communicate(timeout=240)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 1, stderr
    report = json.loads(stdout)
    assert report["api_unreachable"] is True
    assert "could not be reached" in stderr and "run the same command again" in stderr, stderr
    # Searches attempted after the kill: the breaker's few (plus one in flight), not every remaining task.
    after_kill = report["requests"] - answered
    assert 0 < after_kill <= UNREACHABLE_IN_A_ROW + 1, report
    assert report["remaining"] >= len(names) - answered - after_kill > 0, report
    assert len(report["failed_tasks"]) <= UNREACHABLE_IN_A_ROW + 1


def test_help_documents_the_exit_codes():
    out = subprocess.run([*expand_cli(1)[:4], "--help"], capture_output=True, text=True, timeout=60)
    assert "Exit codes of expand" in out.stdout and "3 the run went through" in out.stdout, out.stdout
