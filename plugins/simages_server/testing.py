"""Run ``simages-server serve`` in a subprocess on a free loopback port: for tests, benchmarks and the demo."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_P = TypeVar("_P", bound="ManagedProcess")


class ManagedProcess:
    """A child process that serves HTTP: started, then waited for until ``health_url`` answers.

    Used for the local server here, and by tests and benchmarks for the ML backend and
    Label Studio. Use as a context manager; ``stop`` terminates, then kills after 10 s.
    """

    def __init__(
        self,
        args: list[str],
        *,
        health_url: str,
        env: dict[str, str] | None = None,
        log_path: str | Path | None = None,
        startup_timeout: float = 30.0,
        name: str = "process",
    ) -> None:
        self.args = args
        self.health_url = health_url
        self.env = env
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.name = name
        self._proc: subprocess.Popen[bytes] | None = None

    def _environment(self) -> dict[str, str]:
        return {**os.environ, **(self.env or {})}

    def start(self: _P) -> _P:
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(self.args, env=self._environment(), stdout=log, stderr=log)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode}; see {self.log_path}")
            try:
                if requests.get(self.health_url, timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {self.health_url} within {self.startup_timeout:g} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self: _P) -> _P:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ServerProcess(ManagedProcess):
    """A real ``simages-server serve`` process; ``url`` is its base URL once started."""

    def __init__(
        self,
        index: str | Path,
        *,
        api_keys: tuple[str, ...] = ("local-dev-key",),
        daily_limit: int = 0,
        latency_ms: float = 0.0,
        state: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        log_path: str | Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.index = Path(index)
        self.api_keys = api_keys
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable, "-m", "simages_server", "serve", "--index", str(self.index),
            "--port", str(self.port), "--daily-limit", str(daily_limit), "--latency-ms", str(latency_ms),
            *(["--state", str(state)] if state else []), *extra_args,
        ]  # fmt: skip
        super().__init__(
            args,
            health_url=self.url + "/health",
            env={"SIMAGES_SERVER_API_KEYS": ",".join(api_keys)},
            log_path=log_path,
            startup_timeout=startup_timeout,
            name="simages-server",
        )

    @property
    def api_key(self) -> str:
        return self.api_keys[0]
