"""The HTTP server under the app: waitress, with bounds so slow or idle connections cannot lock clients out.

waitress parses requests on one event-loop thread and hands only *complete* requests to its worker
threads, so a connection that sends its headers slowly costs a socket, not a thread. What it lacks
is a bound on how long that may take: out of the box it stops accepting at 100 open connections and
drops a connection only after 120 s *without a byte*, so 100 clients sending one header byte a
second hold every slot for as long as they like (measured: 300 such connections kept every other
client out for 30 s). Here

- each connection must deliver a whole request within ``request_timeout`` of opening (or of
  starting a later request on a kept-alive connection), and an idle kept-alive connection is closed
  after ``idle_timeout``;
- near the connection limit, a new connection is not left waiting in the backlog: the open
  connection that has waited longest for its request (or sat idle longest) is closed to make room.
  A real client's request arrives within milliseconds of connecting, so it is never the oldest;
  an attacker holding more connections than the limit only recycles its own.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import waitress
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer

logger = logging.getLogger("simages_server")

# Sockets the process needs besides its connections: the listening sockets, the trigger pipe, the
# index and quota files, url-query fetches, and waitress's overflow temp files for large bodies.
_SPARE_FILES = 256
# Entries of waitress's socket map that are not connections: listening sockets (one per address of
# the host name) and the wake-up pipe.
_NON_CONNECTIONS = 8
# Connections accepted at most per pass of the event loop (each a non-blocking accept()).
_ACCEPTS_PER_PASS = 64
# How often a summary of closed slow connections is logged at most (an attack would otherwise
# write one line per connection).
_CLOSED_LOG_INTERVAL = 60.0


class PortInUse(OSError):
    """The address and port to serve on are taken: the one line ``serve`` prints, exit status 1."""


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may hold, and how many may be open (``serve`` options of these names)."""

    connection_limit: int = 1000
    """Open connections at most (waitress's default: 100). From 95% of it on, each new connection
    closes the open one that has waited longest without a whole request (or idled longest), so new
    clients are served at once instead of waiting in the listen backlog."""
    request_timeout: float = 10.0
    """Seconds a connection may take to send a whole request (headers and body) from opening, or from
    the first byte of a later request on a kept-alive connection; then it is closed (0: no bound)."""
    idle_timeout: float = 30.0
    """Seconds a kept-alive connection may sit idle between requests (waitress's default: 120)."""
    backlog: int = 1024
    """Connections the operating system queues for accepting (``listen()``'s backlog)."""

    def __post_init__(self) -> None:
        if self.connection_limit < 1:
            raise ValueError(f"--connection-limit must be at least 1, not {self.connection_limit}")
        if self.request_timeout < 0:
            raise ValueError(f"--request-timeout must be ≥ 0 seconds, not {self.request_timeout:g}")
        if self.idle_timeout <= 0:
            raise ValueError(f"--idle-timeout must be > 0 seconds, not {self.idle_timeout:g}")
        if self.backlog < 1:
            raise ValueError(f"--backlog must be at least 1, not {self.backlog}")


class _ClosedCounter:
    """Counts connections closed for sending too slowly; logs a summary at most once a minute."""

    def __init__(self, request_timeout: float) -> None:
        self.request_timeout = request_timeout
        self.total = 0
        self._unlogged = 0
        self._next_log = 0.0
        self._lock = threading.Lock()

    def add(self, now: float) -> None:
        with self._lock:
            self.total += 1
            self._unlogged += 1
            if now < self._next_log:
                return
            count, self._unlogged, self._next_log = self._unlogged, 0, now + _CLOSED_LOG_INTERVAL
        logger.warning(
            "closed %d connection(s) that did not send a whole request within %g s (--request-timeout) or "
            "waited longest for one with the connections near --connection-limit",
            count, self.request_timeout,
        )  # fmt: skip


class BoundedChannel(HTTPChannel):
    """A waitress connection with a deadline: a whole request within ``request_timeout``, or closed.

    ``_deadline`` is when the connection is closed unless a request has completed by then: set at
    opening, at the first byte of a request after an idle spell, and (idle) after each response;
    ``None`` while a complete request is being served. It is checked on the event loop, which asks
    every connection ``readable()`` at least once a second (waitress's loop timeout), so the bound
    holds to about a second without a timer per connection.
    """

    request_timeout: float = ConnectionLimits.request_timeout
    idle_timeout: float = ConnectionLimits.idle_timeout
    evict_from: int = 0
    """Open connections from which a new one closes the longest-waiting one (0: never)."""
    closed_counter: _ClosedCounter | None = None
    will_close: bool  # waitress's flag: the loop closes the socket once it is set

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: float | None = self._request_deadline(self.creation_time)
        self._waiting_since = self.creation_time
        """When this connection started waiting for a request (opened, started one, or went idle)."""
        self._between_requests = False
        if self.evict_from and len(self.server.active_channels) > self.evict_from:
            self._make_room()

    def _waiting(self) -> bool:
        """Holding a slot without a request being served or an answer being sent: may be closed for room."""
        return not (self.will_close or self.close_when_flushed or self.requests or self.total_outbufs_len)

    def _make_room(self) -> None:
        """Close the connection that has waited longest for its request (idle ones count as waiting)."""
        waiting = [
            channel
            for channel in self.server.active_channels.values()
            if channel is not self and isinstance(channel, BoundedChannel) and channel._waiting()
        ]
        if not waiting:
            return  # every connection is being served: waitress's own limit applies
        oldest = min(waiting, key=lambda channel: channel._waiting_since)
        if not oldest._between_requests and self.closed_counter is not None:
            self.closed_counter.add(time.time())
        oldest.will_close = True  # closed by the loop on its next pass

    def _request_deadline(self, now: float) -> float | None:
        return now + self.request_timeout if self.request_timeout > 0 else None

    def received(self, data: bytes) -> bool:
        done = bool(super().received(data))
        if self.requests:  # a whole request arrived: being served, no deadline until it is answered
            self._deadline = None
        elif self.request is not None and self._between_requests:  # a later request starts arriving
            self._waiting_since = time.time()
            self._deadline = self._request_deadline(self._waiting_since)
            self._between_requests = False
        return done

    def service(self) -> None:
        super().service()
        now = time.time()
        with self.requests_lock:
            if self.requests:
                return  # the next pipelined request is queued and will be served
            self._waiting_since = now
            if self.request is not None:  # part of the next request arrived while this one was served
                self._deadline = self._request_deadline(now)
            else:
                self._deadline, self._between_requests = now + self.idle_timeout, True

    def readable(self) -> bool:
        deadline = self._deadline
        if (
            deadline is not None
            and not self.will_close
            and not self.requests
            and not self.total_outbufs_len
            and time.time() > deadline
        ):
            if not self._between_requests and self.closed_counter is not None:
                self.closed_counter.add(time.time())
            self.will_close = True  # writable() is now true: the loop closes the socket next
            return False
        return bool(super().readable())


def check_port_free(host: str, port: int) -> None:
    """Raise ``PortInUse`` if ``host:port`` cannot be listened on because something else listens there.

    Bound the way waitress binds (``SO_REUSEADDR``, IPv6 sockets v6-only), so a port in TIME_WAIT
    is free here as it is for waitress; closed at once. Other bind errors are left to the real bind.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return  # a host that does not resolve: waitress says so in its own words
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise _port_in_use(host, port) from None
                return


def _port_in_use(host: str, port: int) -> PortInUse:
    return PortInUse(
        errno.EADDRINUSE,
        f"port {port} on {host or 'all addresses'} is already in use (another server?): "
        "stop it or choose another --port",
    )


def ensure_open_files(connection_limit: int) -> None:
    """Raise the soft open-files limit to fit ``connection_limit`` sockets, or say why it cannot."""
    if sys.platform == "win32":  # no RLIMIT_NOFILE; waitress uses select() there anyway
        return
    import resource

    needed = connection_limit + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ValueError(
            f"--connection-limit {connection_limit} needs {needed} open files, and this process may "
            f"open at most {hard} (ulimit -Hn): lower --connection-limit or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def create_server(app: Any, *, host: str, port: int, threads: int, limits: ConnectionLimits) -> Any:
    """A waitress server listening on ``host:port`` (not yet running: call ``.run()``) with ``limits``.

    Raises ``PortInUse`` if the port is taken.
    """
    ensure_open_files(limits.connection_limit)
    try:
        server = waitress.create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="simages-server",
            # waitress counts its listening sockets and wake-up pipe too: the limit is on connections.
            connection_limit=limits.connection_limit + _NON_CONNECTIONS,
            backlog=limits.backlog,
            # waitress's own sweep (every cleanup_interval) closes connections silent for
            # channel_timeout, which also covers a client that stopped reading its answer.
            channel_timeout=limits.idle_timeout,
            cleanup_interval=max(1.0, min(limits.idle_timeout / 2, 30.0)),
            # poll() has no FD_SETSIZE: select() fails once a socket's number passes 1023.
            asyncore_use_poll=True,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise _port_in_use(host, port) from None
        raise
    channel = type(
        "Channel",
        (BoundedChannel,),
        {
            "request_timeout": limits.request_timeout,
            "idle_timeout": limits.idle_timeout,
            "evict_from": max(1, limits.connection_limit - max(1, limits.connection_limit // 20)),
            "closed_counter": _ClosedCounter(limits.request_timeout),
        },
    )
    for listener in _listeners(server):
        listener.channel_class = channel  # waitress makes each accepted connection of this class
        listener.handle_accept = _accepting_several(listener)
    return server


def _accepting_several(listener: BaseWSGIServer) -> Any:
    """``handle_accept`` taking up to ``_ACCEPTS_PER_PASS`` waiting connections per loop pass, not one.

    One pass of waitress's loop visits every open connection, so with a thousand open it takes a few
    milliseconds; accepting one connection a pass, a client queued behind a few hundred reconnecting
    attackers waited most of a second (measured). Stops at the first pass with nothing to accept, and
    at waitress's own limit.
    """
    accept_one = listener.handle_accept
    socket_map = listener._map

    def handle_accept() -> None:
        for _ in range(_ACCEPTS_PER_PASS):
            before = len(socket_map)
            if before >= listener.adj.connection_limit:
                return
            accept_one()
            if len(socket_map) == before:  # nothing was waiting (or the client had gone already)
                return

    return handle_accept


def _listeners(server: Any) -> list[BaseWSGIServer]:
    """The listening dispatchers of what ``waitress.create_server`` returned (one, or one per address)."""
    socket_map = getattr(server, "map", None)
    if socket_map is None:
        socket_map = server._map  # a single TcpWSGIServer keeps its socket map here
    found = [item for item in set(socket_map.values()) if isinstance(item, BaseWSGIServer)]
    if not found:  # pragma: no cover - a waitress whose structure changed: better to fail loudly
        raise RuntimeError("waitress.create_server returned no listening server to configure")
    return found
