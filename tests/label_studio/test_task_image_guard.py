"""Size probes of task image URLs go through the core's guarded fetch: no blind SSRF for task authors.

Only loopback is ever contacted. Forbidden addresses come from a stub resolver that
answers a test name with loopback *and* the forbidden address: the guard must refuse
the name because of the forbidden one, and if it did not, it would connect to the
loopback server, whose request count shows it; ``connection_watch`` also sees every connect
and would stop one to a non-loopback address before any packet left.
"""

from __future__ import annotations

import http.server
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import requests
from connection_watch import watching_connections
from PIL import Image

from simages_label_studio.task_images import TaskImageError, TaskImageResolver

from .conftest import CONFIG, start_backend

JPEG = io.BytesIO()
Image.new("RGB", (640, 480), "teal").save(JPEG, format="JPEG")


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.path.startswith("/image.jpg"):
            body, status = JPEG.getvalue(), 200
        else:
            body, status = b"secret internal page: db password is hunter2", 404
        self.send_response(status)
        self.send_header("content-type", "image/jpeg" if status == 200 else "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def counting_server() -> Iterator[tuple[int, list[str]]]:
    """(port, paths requested) of a loopback image server."""
    hits: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _resolver(forbidden: str, **kwargs) -> TaskImageResolver:
    names = {"images.test": ["127.0.0.1", forbidden], "ok.test": ["127.0.0.1"]}
    return TaskImageResolver(None, None, timeout=5, resolver=lambda host, port: names[host], **kwargs)


@pytest.mark.parametrize(
    ("forbidden", "kind"),
    [
        ("10.1.2.3", "private"),
        ("169.254.169.254", "link-local"),
        ("192.168.0.10", "private"),
        ("fd00::1", ""),
    ],
)
def test_a_name_resolving_to_a_non_public_address_is_refused_before_any_connection(
    counting_server, forbidden, kind
):
    port, hits = counting_server
    resolver = _resolver(forbidden, allow_networks=("127.0.0.0/8",))
    with resolver, watching_connections() as watch, pytest.raises(TaskImageError) as info:
        resolver.probe_size(f"http://images.test:{port}/image.jpg")
    assert hits == [] and watch.connects == []  # refused before connecting anywhere
    public = info.value.public_message
    assert public.startswith(f"could not fetch 'http://images.test:{port}/image.jpg': ")
    assert forbidden in public and "non-public" in public and "SIMAGES_ALLOW_URL_NETWORKS" in public
    assert kind in str(info.value)


def test_loopback_is_refused_by_default_and_reached_when_allowed(counting_server):
    port, hits = counting_server
    url = f"http://ok.test:{port}/image.jpg"
    with _resolver("127.0.0.1") as default, pytest.raises(TaskImageError, match="non-public"):
        default.probe_size(url)
    assert hits == []
    with _resolver("127.0.0.1", allow_networks=("127.0.0.0/8",)) as allowed:
        assert allowed.probe_size(url) == (640, 480)
    assert hits == ["/image.jpg"]


def test_the_task_author_never_learns_what_the_target_answered(counting_server):
    port, _ = counting_server
    url = f"http://127.0.0.1:{port}/admin"
    resolver = TaskImageResolver(None, None, timeout=5, allow_networks=("127.0.0.0/8",))
    with resolver, pytest.raises(TaskImageError) as info:
        resolver.probe_size(url)
    assert info.value.public_message == f"could not fetch {url!r}"
    assert "answered 404" in str(info.value)  # the backend's own log has the detail
    assert "hunter2" not in str(info.value)


def test_the_apis_own_host_is_trusted_without_an_allow_list(counting_server):
    port, hits = counting_server
    with TaskImageResolver(None, None, timeout=5, trusted_hosts=(f"127.0.0.1:{port}",)) as resolver:
        assert resolver.probe_size(f"http://127.0.0.1:{port}/image.jpg") == (640, 480)
        with pytest.raises(TaskImageError, match="non-public"):  # another port is another host
            resolver.probe_size(f"http://127.0.0.1:{port + 1}/image.jpg")
    assert hits == ["/image.jpg"]


def test_credentials_in_a_task_url_are_not_echoed(counting_server):
    port, _ = counting_server
    with TaskImageResolver(None, None, timeout=5) as resolver, pytest.raises(TaskImageError) as info:
        resolver.probe_size(f"http://bob:pw-in-url-77@127.0.0.1:{port}/image.jpg")
    assert "pw-in-url-77" not in str(info.value) + info.value.public_message


@pytest.mark.integration
def test_the_backend_refuses_a_loopback_task_image_unless_allowed(local_api, counting_server, tmp_path: Path):
    """The API may fetch the URL (it allows loopback); the backend's size probe may not, by default."""
    port, _ = counting_server
    with local_api.start_server(tmp_path / "api", extra_args=("--allow-url-network", "127.0.0.0/8")) as api:
        tasks = [
            {"id": 1, "data": {"image": f"http://127.0.0.1:{port}/image.jpg"}},
            {
                "id": 2,
                "data": {"image": local_api.image_url("chelsea.jpg").replace(local_api.base_url, api.url)},
            },
        ]
        for allow, first_ok in (("", False), ("127.0.0.0/8", True)):
            backend = start_backend(
                tmp_path / f"be{bool(allow)}", api.url, local_api.api_key, SIMAGES_ALLOW_URL_NETWORKS=allow
            )
            try:
                response = requests.post(
                    f"{backend.url}/predict", json={"tasks": tasks, "label_config": CONFIG}, timeout=60
                )
            finally:
                backend.stop()
            assert response.status_code == 200, response.text
            first, second = response.json()["results"]
            assert "result" in second
            if first_ok:
                assert "result" in first
            else:
                assert first["error"].startswith(
                    f"task 1: could not fetch 'http://127.0.0.1:{port}/image.jpg'"
                )
                assert "non-public" in first["error"]


def test_a_bad_allow_list_stops_the_backend_naming_the_variable(tmp_path: Path):
    env = {**os.environ, "SIMAGES_HOME": str(tmp_path), "SIMAGES_ALLOW_URL_NETWORKS": "10.0.0.0/8, intranet"}
    done = subprocess.run(
        [sys.executable, "-m", "simages_label_studio", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "SIMAGES_ALLOW_URL_NETWORKS: 'intranet' is not a network" in done.stderr
