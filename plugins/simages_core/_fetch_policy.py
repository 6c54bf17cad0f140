"""What a guarded fetch may reach (``FetchPolicy``) and the vetting of each hop before it connects.

``vet_url`` turns a URL into a ``Hop``: the resolved address to connect to (every address the
name resolves to must pass the policy), the request target and the ``Host`` header.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from ._addresses import (
    HostError,
    IpAddress,
    IpNetwork,
    parse_host,
    parse_networks,
    redact_url,
    refusal_reason,
)
from ._fetch_errors import FetchRefused

Resolver = Callable[[str, int], Sequence[str]]
"""``(host name, port) -> IP address strings``; raises ``OSError`` when the name does not resolve."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host``, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetch may reach and how much it may cost; the defaults suit an untrusted caller."""

    untrusted_caller: bool = True
    """True: only global unicast addresses (plus ``allow_networks``). False: any unicast address."""
    allow_networks: Sequence[IpNetwork | str] = ()
    """Networks reachable even though they are not public: CIDR strings or networks (stored as networks)."""
    timeout: float = 10.0
    """Seconds for connecting and for each read."""
    deadline: float = 30.0
    """Seconds for the whole fetch: every redirect, retry and byte."""
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    content_types: tuple[str, ...] = ("image/*",)
    """Accepted ``Content-Type`` patterns (``type/*`` or exact); empty accepts anything."""
    retries: int = 2
    """urllib3 retries for connection errors, 429 and 5xx (plus one refetch of a broken body)."""
    backoff: float = 0.25
    proxy_url: str | None = None
    """An explicit proxy; environment proxies (``HTTP_PROXY``...) are never used."""
    ca_certs: str | None = None
    """A CA bundle for TLS verification instead of the system's (certificates are always verified)."""
    user_agent: str = "simages-plugins"
    resolver: Resolver | None = field(default=None, compare=False, repr=False)
    """Injected name resolution (tests map names to addresses); default: the system resolver."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_networks", parse_networks(self.allow_networks))
        for name in ("timeout", "deadline"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FetchPolicy.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_bytes",):
            if getattr(self, name) <= 0:
                raise ValueError(f"FetchPolicy.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_redirects", "retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"FetchPolicy.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.proxy_url is not None and urlsplit(self.proxy_url).scheme not in ("http", "https"):
            raise ValueError(
                f"FetchPolicy.proxy_url must be an http(s) URL, got {redact_url(self.proxy_url)!r}"
            )

    @property
    def networks(self) -> tuple[IpNetwork, ...]:
        """``allow_networks`` as parsed networks."""
        return parse_networks(self.allow_networks)  # already parsed: returns them as they are

    def replace(self, **changes: Any) -> FetchPolicy:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Hop:
    """One vetted hop: the address to connect to, and the name the server and its certificate know."""

    scheme: str
    host: str
    port: int
    address: IpAddress
    request_target: str
    host_header: str
    origin: tuple[str, str, int]


def vet_url(url: str, policy: FetchPolicy, *, after_redirect: bool = False) -> Hop:
    """Parse, resolve and vet one hop; ``FetchRefused`` says why it may not be fetched."""
    where = " (after a redirect)" if after_redirect else ""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchRefused(f"is not a valid URL{where}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchRefused(f"scheme {scheme!r} is not allowed{where}: only http or https")
    try:
        host = parse_host(parts.hostname or "")
    except HostError as exc:
        raise FetchRefused(f"{exc}{where}") from None
    if port == 0:
        raise FetchRefused(f"port 0 is not a port to fetch from{where}")
    port = port or (443 if scheme == "https" else 80)
    if isinstance(host, str):
        addresses = _lookup(host, port, where, policy.resolver or system_resolver)
        name = host
    else:
        addresses = [host]
        name = str(host)
    for address in addresses:  # every record must pass: one private answer refuses the name
        reason = refusal_reason(address, untrusted=policy.untrusted_caller, allow=policy.networks)
        if reason is not None:
            if isinstance(host, str):
                shown = f"host {name!r} resolves to {reason}"
            elif parts.hostname == name:
                shown = f"host {reason}"
            else:  # a numeric form such as 2130706433 or 0177.0.0.1: show what it means
                shown = f"host {parts.hostname!r} is {reason}"
            raise FetchRefused(f"{shown}{where}; refused")
    host_text = f"[{host}]" if ":" in name else name
    default_port = port == (443 if scheme == "https" else 80)
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?") if parts.query else ""
    return Hop(
        scheme=scheme,
        host=name,
        port=port,
        address=addresses[0],
        request_target=path + query,
        host_header=host_text if default_port else f"{host_text}:{port}",
        origin=(scheme, name, port),
    )


def _lookup(host: str, port: int, where: str, resolve: Resolver) -> list[IpAddress]:
    if host.rstrip(".").endswith(".invalid") or host.rstrip(".") == "invalid":
        # RFC 6761: never sent to a resolver.
        raise FetchRefused(f"host {host!r} cannot be resolved{where}")
    try:
        found = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host, port)]
    except (OSError, UnicodeError, ValueError):
        found = []
    if not found:
        raise FetchRefused(f"host {host!r} cannot be resolved{where}")
    return found
