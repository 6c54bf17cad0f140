"""Client configuration: where the API is, which key to use, and how patient to be.

Every setting has a safe default, so no call can hang forever, and every one
can come from the environment, so deployed backends are configured without code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

from .protocol import DEFAULT_API_URL

ENV_API_KEY = "SIMAGES_API_KEY"
ENV_TERNAUS_TOKEN = "TERNAUS_TOKEN"  # what the official client (getsimilar) reads
ENV_API_URL = "SIMAGES_API_URL"
ENV_HOME = "SIMAGES_HOME"
ENV_CACHE = "SIMAGES_CACHE"
ENV_CACHE_TTL = "SIMAGES_CACHE_TTL"
TERNAUS_TOKEN_FILE = Path("~/.ternaus/ternaus.json")
HOW_TO_SET_KEY = (
    f"pass api_key=..., set {ENV_API_KEY} (or {ENV_TERNAUS_TOKEN}), or write "
    '{"token": "..."} to ~/.ternaus/ternaus.json; get a key at https://ternaus.com/account'
)


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection and for the answer (the API's own JS example waits 300 s)."""

    connect: float = 5.0
    read: float = 120.0


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a request is tried again.

    Connection errors, timeouts, 429 and 5xx are retried with exponential
    backoff plus jitter, honouring ``Retry-After`` up to ``max_retry_after``;
    the documented 400/401/402/403 never are, since trying again cannot help
    and a paid request must not be sent twice.
    """

    attempts: int = 3
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    backoff_jitter: float = 0.25
    max_retry_after: float = 60.0
    retry_statuses: tuple[int, ...] = (429, 500, 502, 503, 504)

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError("attempts must be 0 or more")


def resolve_api_key(explicit: str | None = None) -> str | None:
    """The API key from the argument, the environment, or the official client's token file."""
    for candidate in (explicit, os.environ.get(ENV_API_KEY), os.environ.get(ENV_TERNAUS_TOKEN)):
        if candidate and candidate.strip():
            return candidate.strip()
    path = TERNAUS_TOKEN_FILE.expanduser()
    try:
        token = json.loads(path.read_text(encoding="utf-8")).get("token")
    except (OSError, ValueError, AttributeError):
        return None
    return token.strip() if isinstance(token, str) and token.strip() else None


def resolve_base_url(explicit: str | None = None) -> str:
    """The API URL from the argument or ``SIMAGES_API_URL``, default ``https://simages.info``."""
    url = explicit or os.environ.get(ENV_API_URL) or DEFAULT_API_URL
    return url.rstrip("/") or url


def simages_home() -> Path:
    """Root folder for the response cache and usage ledger (``SIMAGES_HOME`` overrides)."""
    return Path(os.environ.get(ENV_HOME) or user_cache_dir("simages-plugins"))


def cache_enabled_by_env() -> bool:
    return os.environ.get(ENV_CACHE, "1").strip().lower() not in ("0", "false", "off", "no")


def cache_ttl_from_env(default: float) -> float:
    raw = os.environ.get(ENV_CACHE_TTL)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{ENV_CACHE_TTL} must be a number of seconds, got {raw!r}") from None
