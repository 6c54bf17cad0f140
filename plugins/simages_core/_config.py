"""Client configuration: where the API is, which key to use, and how patient to be.

Every setting has a safe default, so no call can hang forever, and every one
can come from the environment, so deployed backends are configured without code.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from platformdirs import user_cache_dir

from .protocol import DEFAULT_API_URL

ENV_API_KEY = "SIMAGES_API_KEY"
ENV_TERNAUS_TOKEN = "TERNAUS_TOKEN"  # what the official client (getsimilar) reads
ENV_API_URL = "SIMAGES_API_URL"
ENV_HOME = "SIMAGES_HOME"
ENV_CACHE = "SIMAGES_CACHE"
ENV_CACHE_TTL = "SIMAGES_CACHE_TTL"
ENV_CACHE_URL = "SIMAGES_CACHE_URL"
SHARED_STORE_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_REDIS_PORT = 6379
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


@dataclass(frozen=True)
class ApiEndpoint:
    """The API URL split into what may be shown and stored, and the credentials it carried."""

    url: str
    """Scheme, host, port and path: no userinfo, safe for logs, messages and cache keys."""
    auth: tuple[str, str] | None = None
    """``user:password`` from the URL, sent as HTTP basic auth and never shown."""


def parse_base_url(url: str) -> ApiEndpoint:
    """Check an API URL and move any ``user:pass@`` out of it; ``ValueError`` names the problem.

    The message shows the URL without its credentials.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # an unclosed IPv6 bracket, a port that is not a number
        raise ValueError(f"API URL is not a valid URL ({exc})") from None
    netloc = (f"[{host}]" if host and ":" in host else host or "") + (f":{port}" if port else "")
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"API URL must be http(s)://host[:port][/path], got {shown!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"API URL must not have a query or fragment: {shown!r}")
    auth = None
    if parts.username is not None or parts.password is not None:
        auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    return ApiEndpoint(url=shown.rstrip("/") or shown, auth=auth)


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
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{ENV_CACHE_TTL} must be a positive number of seconds, got {raw[:40]!r}")
    return value


@dataclass(frozen=True)
class SharedStoreUrl:
    """Where the shared response cache and usage ledger live (``SIMAGES_CACHE_URL``), checked.

    ``url`` may carry ``user:password@`` (or ``?password=``): it is handed to redis-py and
    nowhere else, so it is kept out of ``repr``; messages and logs use ``shown``/``address``.
    """

    url: str = field(repr=False)
    shown: str
    """Scheme, host, port and database (or socket path), no userinfo and no query."""
    address: str
    """``host:port``, or the socket path of a ``unix://`` URL: what an error names."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """The URL's userinfo, password and ``?password=``, for scrubbing text that might quote them."""

    def __str__(self) -> str:
        return self.shown


def parse_shared_store_url(raw: str) -> SharedStoreUrl:
    """Check a ``redis://``, ``rediss://`` or ``unix://`` URL; ``ValueError`` names the variable.

    No message shows the URL's credentials or query string (where ``?password=`` may sit).
    """
    raw = raw.strip()
    try:
        parts = urlsplit(raw)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # an unclosed IPv6 bracket, a port that is not a number
        raise ValueError(f"{ENV_CACHE_URL} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme == "unix":
        address = unquote(parts.path)
        shown = f"unix://{address}"
    else:
        netloc = (f"[{host}]" if host and ":" in host else host or "") + f":{port or DEFAULT_REDIS_PORT}"
        address = netloc
        shown = urlunsplit((scheme, netloc, parts.path, "", ""))
    if scheme not in SHARED_STORE_SCHEMES:
        # Only the scheme is echoed: whatever else was set may hold a password.
        raise ValueError(
            f"{ENV_CACHE_URL} must be a redis://, rediss:// or unix:// URL (e.g. redis://redis:6379/0), "
            f"got a URL with scheme {scheme[:20]!r}"
        )
    if scheme == "unix":
        if not address.startswith("/"):
            raise ValueError(f"{ENV_CACHE_URL} must name the socket's absolute path: unix:///run/redis.sock")
    elif not host:
        raise ValueError(f"{ENV_CACHE_URL} must name a host: {scheme}://host[:port][/db]")
    elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(f"{ENV_CACHE_URL}'s path must be a database number (/0), got {shown!r}")
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    candidates = [userinfo, parts.password or "", unquote(parts.password or "")]
    candidates += parse_qs(parts.query).get("password", [])
    secrets = tuple(sorted({c for c in candidates if len(c) >= 3}, key=len, reverse=True))
    return SharedStoreUrl(url=raw, shown=shown, address=address, secrets=secrets)


def shared_store_from_env() -> SharedStoreUrl | None:
    """``SIMAGES_CACHE_URL`` checked, or ``None`` when it is unset (the on-disk stores are used)."""
    raw = os.environ.get(ENV_CACHE_URL, "").strip()
    return parse_shared_store_url(raw) if raw else None
