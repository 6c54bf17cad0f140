"""A watch on every ``socket.connect`` of the test process, for tests of address guards.

While armed, a connect to anything but loopback raises before the packet is sent (the network
rule: tests reach loopback only), and the log lets a test assert that a refusal made no
connection, and no name lookup, at all. Shared by the core's fetch tests and the backend's.
``stub_resolver`` maps test host names to the addresses a guard must refuse, so no lookup is real.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ConnectLog:
    armed: bool = False
    connects: list[str] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)
    """Host names handed to the system resolver."""


_LOG = ConnectLog()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _LOG.armed:
        return
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple):
            host = str(address[0])
            _LOG.connects.append(host)
            if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
                raise RuntimeError(f"test tried to connect to a non-loopback address: {host}")
    elif event == "socket.getaddrinfo":
        try:  # urllib3 passes the vetted address itself through getaddrinfo: not a name lookup
            ipaddress.ip_address(str(args[0]).strip("[]"))
        except ValueError:
            _LOG.lookups.append(str(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed; it is inert unless armed


@contextmanager
def watching_connections() -> Iterator[ConnectLog]:
    """Arm the watch for the block; the log starts empty."""
    _LOG.connects.clear()
    _LOG.lookups.clear()
    _LOG.armed = True
    try:
        yield _LOG
    finally:
        _LOG.armed = False


def stub_resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    """A resolver for ``FetchPolicy(resolver=...)`` that knows only ``table``'s names."""

    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"stub resolver does not know {host}")
        return table[host]

    return resolve
