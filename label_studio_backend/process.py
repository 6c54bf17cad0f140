"""Run ``simages-ls serve`` in a subprocess on a free loopback port: for tests and benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

from simages_core.server.process import ManagedProcess, free_port


class BackendProcess(ManagedProcess):
    """The ML backend as Label Studio sees it; ``env`` holds its settings (``SIMAGES_API_URL``, ...)."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        threads: int = 8,
        log_path: str | Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable, "-m", "label_studio_backend", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--threads", str(threads),
        ]  # fmt: skip
        super().__init__(
            args,
            health_url=self.url + "/health",
            env=env,
            log_path=log_path,
            startup_timeout=startup_timeout,
            name="simages-ls",
        )
