"""The one guarded way this project downloads a URL: the local server's ``url`` queries, task
images in the Label Studio backend, and FiftyOne's downloads.

Every hop (redirects are followed by hand) is parsed, resolved once and vetted by
``FetchPolicy`` before a connection is made, and the connection goes to that vetted address
(the original name travels as the ``Host`` header and as TLS SNI / certificate name), so DNS
cannot rebind between check and connect. No proxy comes from the environment. Bodies are
streamed under a size cap, a content-type check and an overall deadline; connection errors,
429 and 5xx are retried by urllib3's ``Retry``, and a body that breaks off mid-transfer is
fetched once more.

Errors are ``FetchError`` subclasses. ``str(error)`` is the detail for logs and trusted callers
(never a fetched body, never URL credentials); ``error.public_message`` is what an untrusted
caller may see: the reason for a refusal made before connecting, otherwise only
"could not be fetched".
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import Retry, Timeout

from ._addresses import RedactingFilter, parse_networks, redact_text, redact_url
from ._fetch_errors import (
    COULD_NOT_FETCH,
    FetchConnectError,
    FetchContentTypeError,
    FetchError,
    FetchHTTPError,
    FetchInterrupted,
    FetchRefused,
    FetchTimeout,
    FetchTooLarge,
    FetchTooManyRedirects,
)
from ._fetch_policy import FetchPolicy, Hop, Resolver, system_resolver, vet_url

__all__ = [
    "COULD_NOT_FETCH",
    "FetchConnectError",
    "FetchContentTypeError",
    "FetchError",
    "FetchHTTPError",
    "FetchInterrupted",
    "FetchPolicy",
    "FetchRefused",
    "FetchResponse",
    "FetchTimeout",
    "FetchTooLarge",
    "FetchTooManyRedirects",
    "FetchedBytes",
    "FetchedFile",
    "Fetcher",
    "Hop",
    "RedactingFilter",
    "Resolver",
    "fetch_bytes",
    "fetch_to_file",
    "parse_networks",
    "redact_text",
    "redact_url",
    "system_resolver",
    "vet_url",
]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchedBytes:
    data: bytes
    content_type: str
    url: str
    """The final URL after redirects, credentials redacted."""


@dataclass(frozen=True)
class FetchedFile:
    path: Path
    size: int
    content_type: str
    url: str
    """The final URL after redirects, credentials redacted."""


class _DeadlineRetry(Retry):
    """urllib3's Retry that also stops once the fetch's overall deadline has passed."""

    deadline: float = float("inf")

    def new(self, **kw: Any) -> _DeadlineRetry:
        retry = super().new(**kw)
        retry.deadline = self.deadline
        return retry

    def is_exhausted(self) -> bool:
        return super().is_exhausted() or time.monotonic() >= self.deadline


class FetchResponse:
    """An open 200 response whose headers passed the checks; read it with ``iter_chunks``."""

    def __init__(
        self, raw: urllib3.BaseHTTPResponse, url: str, content_type: str, policy: FetchPolicy, deadline: float
    ) -> None:
        self._raw = raw
        self.url = url
        self.content_type = content_type
        self._policy = policy
        self._deadline = deadline
        self.bytes_read = 0
        self._complete = False

    def iter_chunks(self, size: int = _CHUNK) -> Iterator[bytes]:
        """The body, chunk by chunk, within the size cap and the deadline."""
        while True:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise FetchTimeout(f"took longer than {self._policy.deadline:g} s to download")
            sock = getattr(getattr(self._raw, "connection", None), "sock", None)
            if sock is not None:  # no single read may outlive the deadline
                sock.settimeout(min(self._policy.timeout, remaining))
            try:
                chunk = self._raw.read1(size)  # what has arrived: a slow sender cannot hold a read
            except (ReadTimeoutError, TimeoutError):
                if time.monotonic() >= self._deadline - 0.05:
                    raise FetchTimeout(f"took longer than {self._policy.deadline:g} s to download") from None
                raise FetchTimeout(f"did not answer within {self._policy.timeout:g} s") from None
            except (HTTPError, OSError) as exc:
                raise FetchInterrupted(f"broke off mid-transfer ({type(exc).__name__})") from None
            if not chunk:
                self._complete = True
                return
            self.bytes_read += len(chunk)
            if self.bytes_read > self._policy.max_bytes:
                raise FetchTooLarge(f"is larger than {self._policy.max_bytes:,} bytes")
            yield chunk

    def close(self) -> None:
        if not self._complete:  # unread bytes would poison the next request on this connection
            self._raw.close()
        self._raw.release_conn()


class Fetcher:
    """Pooled, guarded downloads under one ``FetchPolicy``; thread-safe, use as a context manager."""

    def __init__(self, policy: FetchPolicy | None = None, *, pool_size: int = 10) -> None:
        self.policy = policy or FetchPolicy()
        kwargs: dict[str, Any] = {"num_pools": 64, "maxsize": pool_size, "block": False}
        if self.policy.ca_certs:
            kwargs["ca_certs"] = self.policy.ca_certs
        self._manager: urllib3.PoolManager = (
            urllib3.ProxyManager(self.policy.proxy_url, **kwargs)
            if self.policy.proxy_url
            else urllib3.PoolManager(**kwargs)
        )

    # --- public -------------------------------------------------------------

    def fetch_bytes(self, url: str) -> FetchedBytes:
        """The whole body of ``url`` in memory."""
        chunks: list[bytes] = []

        def read(response: FetchResponse) -> None:
            chunks.clear()
            chunks.extend(response.iter_chunks())

        response = self._with_refetch(url, read)
        return FetchedBytes(b"".join(chunks), response.content_type, response.url)

    def fetch_to_file(self, url: str, path: str | Path) -> FetchedFile:
        """Stream ``url`` into ``path`` (created or truncated); if the fetch fails once ``path`` was
        opened, it is removed, so no partial file is ever left."""
        path = Path(path)
        opened = False

        def write(response: FetchResponse) -> None:
            nonlocal opened
            with path.open("wb") as out:
                opened = True
                for chunk in response.iter_chunks():
                    out.write(chunk)

        try:
            response = self._with_refetch(url, write)
        except BaseException:
            if opened:
                path.unlink(missing_ok=True)
            raise
        return FetchedFile(path, response.bytes_read, response.content_type, response.url)

    @contextmanager
    def open(self, url: str, *, deadline: float | None = None) -> Iterator[FetchResponse]:
        """An open, checked response (e.g. to read only an image's header); closed on exit."""
        response = self._open(url, deadline if deadline is not None else self._new_deadline())
        try:
            yield response
        finally:
            response.close()

    def close(self) -> None:
        self._manager.clear()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- one fetch ----------------------------------------------------------

    def _new_deadline(self) -> float:
        return time.monotonic() + self.policy.deadline

    def _with_refetch(self, url: str, consume: Callable[[FetchResponse], None]) -> FetchResponse:
        deadline = self._new_deadline()
        for attempt in (1, 2):  # a body that breaks mid-transfer is fetched once more
            with self.open(url, deadline=deadline) as response:
                try:
                    consume(response)
                    return response
                except FetchInterrupted:
                    if attempt == 2 or time.monotonic() >= deadline:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self, url: str, deadline: float) -> FetchResponse:
        current = url
        parts = urlsplit(url)
        credentials = (
            (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
        )
        first_origin: tuple[str, str, int] | None = None
        for hop in range(self.policy.max_redirects + 1):
            target = vet_url(current, self.policy, after_redirect=hop > 0)
            first_origin = first_origin or target.origin
            # URL credentials become Basic auth for their own origin only, never across a redirect.
            auth = credentials if credentials and target.origin == first_origin else None
            raw = self._request(target, deadline, auth)
            location = raw.headers.get("location")
            if raw.status in _REDIRECTS and location:
                raw.close()  # not drained: a redirect's body could be endless
                raw.release_conn()
                current = urljoin(current, location.strip())
                continue
            try:
                return self._checked(raw, current, deadline)
            except BaseException:
                raw.close()
                raw.release_conn()
                raise
        raise FetchTooManyRedirects(f"redirected more than {self.policy.max_redirects} times")

    def _checked(self, raw: urllib3.BaseHTTPResponse, url: str, deadline: float) -> FetchResponse:
        if raw.status != 200:
            raise FetchHTTPError(f"answered HTTP {raw.status}", status=raw.status)
        content_type = raw.headers.get("content-type", "").split(";")[0].strip().lower()
        patterns = self.policy.content_types
        if patterns and not any(_type_matches(content_type, p) for p in patterns):
            raise FetchContentTypeError(
                f"has content-type {content_type or 'none'!r}, expected {' or '.join(patterns)}",
                content_type=content_type,
            )
        declared = raw.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.policy.max_bytes:
            raise FetchTooLarge(f"is larger than {self.policy.max_bytes:,} bytes")
        return FetchResponse(raw, redact_url(url), content_type, self.policy, deadline)

    def _request(
        self, target: Hop, deadline: float, auth: tuple[str, str] | None
    ) -> urllib3.BaseHTTPResponse:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchTimeout(f"took longer than {self.policy.deadline:g} s")
        address = str(target.address)
        tls = (
            {"server_hostname": target.host, "assert_hostname": target.host}
            if target.scheme == "https"
            else None
        )
        pool = self._manager.connection_from_host(address, target.port, target.scheme, pool_kwargs=tls)
        headers = {
            "Host": target.host_header,
            "User-Agent": self.policy.user_agent,
            "Accept": "image/*,*/*;q=0.5",
            "Accept-Encoding": "identity",  # what is counted against the cap is what is stored
        }
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request_target = target.request_target
        if isinstance(self._manager, urllib3.ProxyManager) and target.scheme == "http":
            # A plain-HTTP proxy gets the absolute form, naming the vetted address, not the name.
            ip_host = f"[{address}]" if ":" in address else address
            request_target = f"http://{ip_host}:{target.port}{target.request_target}"
            headers.update(self._manager.proxy_headers)
        retry = _DeadlineRetry(
            total=self.policy.retries,
            redirect=0,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"GET"}),
            backoff_factor=self.policy.backoff,
            backoff_max=min(5.0, self.policy.deadline),
            respect_retry_after_header=False,  # a server must not park the fetch past its deadline
            raise_on_status=False,
            raise_on_redirect=False,
        )
        retry.deadline = deadline
        wait = min(self.policy.timeout, remaining)
        try:
            return pool.urlopen(
                "GET",
                request_target,
                headers=headers,
                retries=retry,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                timeout=Timeout(connect=wait, read=wait),
            )
        except MaxRetryError as exc:
            raise _transport_error(exc.reason, self.policy) from None
        except HTTPError as exc:
            raise _transport_error(exc, self.policy) from None


def _transport_error(reason: BaseException | None, policy: FetchPolicy) -> FetchError:
    if isinstance(reason, SSLError):
        return FetchConnectError("TLS handshake or certificate check failed")
    if isinstance(reason, NewConnectionError):  # before timeouts: urllib3 derives it from ConnectTimeoutError
        return FetchConnectError("connection failed (NewConnectionError)")
    if isinstance(reason, (ConnectTimeoutError, ReadTimeoutError, TimeoutError, socket.timeout)):
        return FetchTimeout(f"did not answer within {policy.timeout:g} s")
    return FetchConnectError(f"connection failed ({type(reason).__name__})")


def _type_matches(content_type: str, pattern: str) -> bool:
    pattern = pattern.lower()
    if pattern.endswith("/*"):
        return content_type.startswith(pattern[:-1])
    return content_type == pattern


def fetch_bytes(url: str, policy: FetchPolicy | None = None) -> FetchedBytes:
    """One guarded download into memory (a throwaway pool; use a ``Fetcher`` for many)."""
    with Fetcher(policy) as fetcher:
        return fetcher.fetch_bytes(url)


def fetch_to_file(url: str, path: str | Path, policy: FetchPolicy | None = None) -> FetchedFile:
    """One guarded download into ``path`` (removed on failure)."""
    with Fetcher(policy) as fetcher:
        return fetcher.fetch_to_file(url, path)
