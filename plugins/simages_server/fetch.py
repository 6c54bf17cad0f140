"""Fetching a query image by URL without becoming an SSRF hole.

Only http/https; every hop (redirects are followed by hand, at most 3) is
resolved first and refused if any address is private, loopback, link-local
(which includes cloud metadata at 169.254.169.254), multicast, reserved or
unspecified, unless an allow-listed network contains it. Size and time are capped.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

from simages_core import InvalidRequest

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float = 10.0
    """Seconds for connecting, for each read, and for the whole download."""
    max_bytes: int = 20 * 1024 * 1024
    allow_networks: tuple[IpNetwork, ...] = ()
    max_redirects: int = 3


def parse_networks(values: Sequence[str]) -> tuple[IpNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())
    except ValueError as exc:
        raise ValueError(f"invalid network in allow-list: {exc}") from None


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_url_target(url: str, policy: FetchPolicy) -> None:
    """Raise ``InvalidRequest`` unless the URL is http(s) to a public (or allow-listed) address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            f"'url' scheme {parts.scheme!r} is not allowed: only http and https", field="url"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise InvalidRequest(
            f"'url' host {parts.hostname!r} cannot be resolved: {exc}", field="url"
        ) from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if _refused(address) and not any(address in net for net in policy.allow_networks):
            raise InvalidRequest(
                f"'url' points at a non-public address ({address}); refused "
                "(the server operator can allow networks with --allow-url-network)",
                field="url",
            )


def fetch_image_bytes(url: str, policy: FetchPolicy, session: requests.Session | None = None) -> bytes:
    """Download an image; every failure is an ``InvalidRequest`` saying what went wrong."""
    http = session or requests
    deadline = time.monotonic() + policy.timeout
    for _ in range(policy.max_redirects + 1):
        check_url_target(url, policy)
        try:
            response = http.get(
                url, stream=True, timeout=(policy.timeout, policy.timeout), allow_redirects=False
            )
        except requests.exceptions.Timeout:
            raise InvalidRequest(f"'url' did not answer within {policy.timeout:g} s", field="url") from None
        except requests.exceptions.RequestException as exc:
            raise InvalidRequest(f"'url' could not be fetched: {type(exc).__name__}", field="url") from None
        with response:
            if response.is_redirect and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code != 200:
                raise InvalidRequest(f"'url' answered HTTP {response.status_code}", field="url")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
                raise InvalidRequest(f"'url' is not an image (content-type {kind})", field="url")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise InvalidRequest(f"'url' image is larger than {policy.max_bytes:,} bytes", field="url")
            chunks, size = [], 0
            try:
                for chunk in response.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > policy.max_bytes:
                        raise InvalidRequest(
                            f"'url' image is larger than {policy.max_bytes:,} bytes", field="url"
                        )
                    if time.monotonic() > deadline:
                        raise InvalidRequest(
                            f"'url' took longer than {policy.timeout:g} s to download", field="url"
                        )
                    chunks.append(chunk)
            except requests.exceptions.RequestException as exc:
                raise InvalidRequest(f"'url' download failed: {type(exc).__name__}", field="url") from None
            return b"".join(chunks)
    raise InvalidRequest(f"'url' redirected more than {policy.max_redirects} times", field="url")
