"""Run ``simages-ls serve`` in a subprocess on a free loopback port: for tests and benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

from simages_server.testing import ManagedProcess, free_port


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
            sys.executable, "-m", "simages_label_studio", "serve",
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

    @property
    def pid(self) -> int:
        """The backend's process id (for benchmarks that read its threads and memory)."""
        if self._proc is None:
            raise RuntimeError("the backend is not running")
        return self._proc.pid


class LabelStudioProcess(ManagedProcess):
    """Label Studio itself (installed in its own environment), with a scripted admin: tests and the demo.

    The backend and the local server run on loopback, which Label Studio refuses by default:
    ``ML_BLOCK_LOCAL_IP`` for the backend itself, SSRF protection for the webhook it registers
    on the backend. Both are off here, as for any local stack; never on a public deployment.
    """

    def __init__(
        self,
        executable: str | Path,
        data_dir: str | Path,
        *,
        token: str,
        username: str = "admin@example.com",
        password: str = "simages-local-password",
        startup_timeout: float = 300.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.data_dir = Path(data_dir)
        env = {
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            # Nothing about its use leaves the machine: no usage analytics, no PyPI version check
            # (with both off, its pages contact no host off the machine: test_ui_browser checks).
            "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
        }
        args = [str(executable), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(self.port)]
        super().__init__(
            args,
            health_url=self.url + "/health",
            env=env,
            log_path=self.data_dir / "label-studio.log",
            startup_timeout=startup_timeout,
            name="label-studio",
        )
