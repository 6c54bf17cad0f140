"""Run ``simages-server serve`` in a subprocess on a free loopback port: for tests, benchmarks and the demo.

Every ``ManagedProcess`` runs in its own process group and is tracked until stopped, so a
test can never leave one behind: ``stop`` ends the whole group, ``stop_all`` (also run at
interpreter exit) ends whatever is still running, and ``live_processes`` lets a test session
check that nothing was left.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import requests

_LIVE: set[ManagedProcess] = set()
_LIVE_LOCK = threading.Lock()


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
        """Start and wait for health; a process already running is left as it is (``with p.start()`` is fine)."""
        if self.running:
            return self
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                self.args,
                env=self._environment(),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=os.name == "posix",  # its own group: stop() ends its children too
            )
        finally:
            if not isinstance(log, int):
                log.close()  # the child has its own copy
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        with requests.Session() as http:
            http.trust_env = False  # a proxy from the environment must not see loopback health checks
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self._proc.returncode}; see {self.log_path}"
                    )
                try:
                    if http.get(self.health_url, timeout=1).ok:
                        return
                except requests.RequestException:
                    pass
                time.sleep(0.1)  # polling a process that is starting up: no event to wait on
        raise RuntimeError(f"{self.name} did not answer {self.health_url} within {self.startup_timeout:g} s")

    def stop(self) -> None:
        """Terminate the process group, kill it after 10 s; safe to call twice, also after a failed start."""
        proc, self._proc = self._proc, None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if proc is None:
            return
        if proc.returncode is None:
            self._signal(proc, signal.SIGTERM)
            if not _exited_unreaped(proc.pid, timeout=10):
                self._signal(proc, signal.SIGKILL)
        # The leader is a zombie until reaped below, so its group id cannot have been reused:
        # whatever it started (same group) is ended too.
        self._signal(proc, signal.SIGKILL)
        proc.wait()

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            if os.name == "posix":
                os.killpg(proc.pid, sig)
            elif proc.poll() is None:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass  # the group is already gone

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self: _P) -> _P:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _exited_unreaped(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited without reaping it (so its pid and group id stay reserved)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not hasattr(os, "waitid"):  # not Linux: reaping is the only way to wait
            try:
                if os.waitpid(pid, os.WNOHANG)[0] != 0:
                    return True
            except ChildProcessError:
                return True
        elif os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.05)  # a process shutting down signals nothing we could block on here
    return False


def live_processes() -> list[ManagedProcess]:
    """Every ``ManagedProcess`` started and not yet stopped."""
    with _LIVE_LOCK:
        return list(_LIVE)


def stop_all() -> list[ManagedProcess]:
    """Stop every ``ManagedProcess`` still running; returns those that were (a leak, for a report)."""
    leaked = live_processes()
    for process in leaked:
        process.stop()
    return leaked


atexit.register(stop_all)


class ServerProcess(ManagedProcess):
    """A real ``simages-server serve`` process; ``url`` is its base URL once started.

    ``state`` is the ``--state`` value: a folder for the SQLite counters, or a Redis URL
    (``redis://127.0.0.1:6379/0``) so that several processes share one daily limit.
    """

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
