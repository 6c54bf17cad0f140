"""Which URLs name this server's own images: ``http(s)://<one of its names>:<its port>/images/<id>``.

A ``url`` query naming the server's own image (or its thumbnail) is looked up, never fetched: the
guarded fetch refuses loopback and private addresses, so fetching would fail, and it would be a
request to ourselves. The server is reached under several names (its bind address, ``localhost``,
``127.0.0.1`` and ``::1`` on loopback, the machine's own names and addresses when bound to all
addresses, the ``--public-url``), so all of them count, with the port the server listens on.

Names are compared as written; nothing is resolved per query. A name that merely *resolves* to one
of our addresses is not ours (it may be another host tomorrow, or another port's service today), so
it goes to the guarded fetch, which refuses or fetches it as it would any other URL.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_OWN_PATH = re.compile(r"^/(?:images/([0-9a-f]{16})|thumbnails/([0-9a-f]{16})\.webp)$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def own_image_id(path: str) -> str | None:
    """The image id in ``/images/<id>`` or ``/thumbnails/<id>.webp``; ``None`` for any other path."""
    match = _OWN_PATH.match(path)
    return None if match is None else match.group(1) or match.group(2)


def machine_names() -> list[str]:
    """This machine's host name, canonical name and the addresses its name resolves to (at start, once)."""
    names = [socket.gethostname()]
    try:
        for _, _, _, canonical, sockaddr in socket.getaddrinfo(
            names[0], None, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME
        ):
            names.extend([canonical, str(sockaddr[0])])
    except OSError:  # a host name the resolver does not know: the name itself still counts
        pass
    return [name for name in names if name]


@dataclass(frozen=True)
class OwnOrigins:
    """The ``(host, port)`` pairs this server is reached at; hosts lower-case, IPv6 without brackets."""

    origins: frozenset[tuple[str, int]]
    prefixes: frozenset[tuple[str, int, str]] = frozenset()
    """Origins reached under a path prefix (a ``--public-url`` such as ``https://example.org/simages``)."""

    def including(self, public_url: str | None) -> OwnOrigins:
        """These origins and ``public_url``'s (if given)."""
        origin = _origin(public_url) if public_url else None
        if origin is None:
            return self
        prefix = _path_prefix(public_url or "")
        if prefix:
            return OwnOrigins(self.origins, self.prefixes | {(*origin, prefix)})
        return OwnOrigins(self.origins | {origin}, self.prefixes)

    @classmethod
    def for_server(
        cls,
        host: str,
        port: int,
        public_url: str | None = None,
        *,
        names_of_machine: Callable[[], Iterable[str]] = machine_names,
    ) -> OwnOrigins:
        """The names a server bound to ``host:port`` (and published at ``public_url``) is reached by."""
        bound = _normalised(host)
        names = {bound} if bound else set()
        address = _address(bound)
        if not bound or (address is not None and address.is_unspecified):  # all addresses
            names.update(LOOPBACK_NAMES)
            names.update(_normalised(name) for name in names_of_machine())
        elif bound == "localhost" or (address is not None and address.is_loopback):
            names.update(LOOPBACK_NAMES)
        bound_origins = cls(frozenset((name, port) for name in names if name))
        if public_url and _origin(public_url) is None:
            raise ValueError(f"--public-url {public_url!r} is not an http(s) URL with a host")
        return bound_origins.including(public_url)

    def image_id(self, url: str, *, also: Iterable[str] = ()) -> str | None:
        """The id of this server's image that ``url`` names, else ``None``.

        ``also``: more ``host[:port]`` values that count as ours for this call (the ``Host`` the
        client itself used to reach us).
        """
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        origin = _origin(url)
        if origin is None:
            return None
        image_id = own_image_id(parts.path)
        if image_id is not None and (
            origin in self.origins or parts.netloc.lower() in {value.lower() for value in also}
        ):
            return image_id
        for host, port, prefix in self.prefixes:
            if (host, port) == origin and parts.path.startswith(prefix + "/"):
                return own_image_id(parts.path[len(prefix) :])
        return None


def _origin(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of an http(s) URL, the port defaulted by scheme; ``None`` if it has neither."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number or out of range
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None  # userinfo: not how anyone names this server, so not ours
    return _normalised(parts.hostname), port if port is not None else _DEFAULT_PORTS[scheme]


def _path_prefix(url: str) -> str:
    """The path a base URL adds before ``/images/…`` (``""`` for none)."""
    try:
        return urlsplit(url).path.rstrip("/")
    except ValueError:
        return ""


def _normalised(host: str) -> str:
    host = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    address = _address(host)
    return str(address) if address is not None else host  # one spelling per address (::0001 → ::1)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
