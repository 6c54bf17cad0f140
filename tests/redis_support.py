"""A real Redis for the shared-state tests: Debian's ``redis-server`` on a free loopback port.

``install.sh`` installs it; where it is missing the tests that need it skip and say why.
The process is a ``ManagedProcess`` (its own process group, tracked, stopped at teardown),
with persistence off so nothing is written outside its temporary folder.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from simages_server.testing import ManagedProcess, free_port

REDIS_SERVER = shutil.which("redis-server")


class RedisProcess(ManagedProcess):
    """``redis-server`` bound to 127.0.0.1 only; ``url`` is ``redis://127.0.0.1:<port>/0``."""

    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        args = [
            REDIS_SERVER or "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(directory), "--protected-mode", "yes",
        ]  # fmt: skip
        super().__init__(
            args,
            health_url=self.url,
            log_path=directory / "redis.log",
            name="redis-server",
        )

    def _wait_healthy(self) -> None:
        # Redis speaks RESP, not HTTP: ready is the first PING answered.
        deadline = time.monotonic() + self.startup_timeout
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                if not self.running:
                    raise RuntimeError(f"redis-server exited; see {self.log_path}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.05)  # polling a process that is starting up: no event to wait on
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {self.startup_timeout:g} s")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def require_redis_server() -> None:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/install.sh installs Debian's redis-server)")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A fresh, empty Redis for one test, stopped when it ends."""
    require_redis_server()
    directory = tmp_path / "redis"
    directory.mkdir()
    with RedisProcess(directory) as server:
        yield server
