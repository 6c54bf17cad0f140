"""Slow-header clients against the local server: a normal client's latency with and without the attack.

An attacker holds up to ``--connections`` (300) connections to the server on loopback for
``--seconds`` (30), each sending a request's headers one short line every ``--line-interval`` s
(1) and never finishing them; a connection the server closes is reopened at once, as a real
attacker's would be, so the attack keeps its count for the whole time. Meanwhile a normal client
sends text queries, each on a new connection (as a CLI run or a fresh worker does), one every
``--query-interval`` s. Its p50/p99 are printed beside the same client's without the attack,
measured first in the same run against the same server process.

Target: p99 under attack below ``--target-p99`` (1 s) and no failed query; exit 1 on a miss.
``--before`` also runs the attack against ``serve`` on waitress with its own limits (100
connections, no request deadline, 120 s idle, no room made), as before ``serve`` bounded them, for comparison
(not part of the verdict). Everything stops by itself: the attack after ``--seconds``, each query
after ``--query-timeout`` s (counted as a failure), the server at the end.

Run: .venv/bin/python bench/bench_slow_clients.py [--connections 300] [--seconds 30] [--before]
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from simages_server.demo import build_demo_index
from simages_server.testing import ServerProcess

# `serve` as it was before it bounded connections: waitress with its own defaults (100 connections,
# no request deadline, 120 s idle, one accept per loop pass, nobody closed to make room).
PLAIN_WAITRESS = """
import sys, waitress
from simages_server import cli, http_server

def plain(app, *, host, port, threads, limits):
    return waitress.create_server(app, host=host, port=port, threads=threads, ident="simages-server")

http_server.create_server = plain
sys.exit(cli.main(sys.argv[1:]))
"""


@dataclass(frozen=True)
class Latencies:
    seconds: list[float]
    failures: int

    def percentile(self, q: float) -> float:
        if not self.seconds:
            return float("inf")
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def line(self, label: str) -> str:
        return (
            f"{label:<22} {len(self.seconds):>4} queries, {self.failures} failed: "
            f"p50 {self.percentile(0.5) * 1000:8.1f} ms, p99 {self.percentile(0.99) * 1000:8.1f} ms"
        )


@dataclass
class AttackStats:
    opened: int = 0
    closed_by_server: int = 0
    refused: int = 0
    held_max: int = 0


class SlowHeaderAttack:
    """Up to ``count`` connections sending a header line every ``interval`` s; reopened when closed."""

    def __init__(self, port: int, count: int, seconds: float, interval: float) -> None:
        self.port, self.count, self.seconds, self.interval = port, count, seconds, interval
        self.stats = AttackStats()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-header-attack", daemon=True)

    def __enter__(self) -> SlowHeaderAttack:
        self._thread.start()
        self.ready.wait(timeout=60)  # every connection opened (the attack is on)
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=self.seconds + 30)

    def _open(self, selector: selectors.BaseSelector) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
        except OSError:
            self.stats.refused += 1
            return
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, 0)
        self.stats.opened += 1

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        deadline = time.monotonic() + self.seconds
        try:
            while len(selector.get_map()) < self.count and time.monotonic() < deadline:
                self._open(selector)
            self.ready.set()
            next_line = time.monotonic() + self.interval
            while (now := time.monotonic()) < deadline:
                for key, _ in selector.select(timeout=max(0.0, min(next_line, deadline) - now)):
                    self._drop(selector, key.fileobj)  # readable: the server answered or closed it
                if time.monotonic() >= next_line:
                    for key in list(selector.get_map().values()):
                        n = key.data + 1
                        selector.modify(key.fileobj, selectors.EVENT_READ, n)
                        try:
                            key.fileobj.send(f"X-Slow-{n}: {'a' * 8}\r\n".encode())  # type: ignore[union-attr]
                        except OSError:
                            self._drop(selector, key.fileobj)
                    next_line += self.interval
                while len(selector.get_map()) < self.count and time.monotonic() < deadline:
                    self._open(selector)
                self.stats.held_max = max(self.stats.held_max, len(selector.get_map()))
        finally:
            self.ready.set()
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            selector.close()

    def _drop(self, selector: selectors.BaseSelector, sock: object) -> None:
        selector.unregister(sock)
        sock.close()  # type: ignore[attr-defined]
        self.stats.closed_by_server += 1


def query_once(http: requests.Session, url: str, key: str, timeout: float) -> float | None:
    """One text query on a new connection; its seconds, or ``None`` if it failed or timed out."""
    started = time.perf_counter()
    try:
        response = http.post(
            url,
            json={"text": "cat", "num_similar": 5},
            headers={"x-api-key": key, "Connection": "close"},  # a new connection for every query
            timeout=timeout,
        )
        ok = response.status_code == 200 and response.json().get("statusCode") == 200
    except requests.RequestException:
        ok = False
    return time.perf_counter() - started if ok else None


def run_queries(
    server: ServerProcess, *, count: int | None, until: float | None, interval: float, timeout: float
) -> Latencies:
    seconds: list[float] = []
    failures = 0
    with requests.Session() as http:
        http.trust_env = False  # no proxy from the environment between us and loopback
        done = 0
        while (count is None or done < count) and (until is None or time.monotonic() < until):
            started = time.monotonic()
            took = query_once(http, server.url + "/", server.api_key, timeout)
            if took is None:
                failures += 1
            else:
                seconds.append(took)
            done += 1
            time.sleep(max(0.0, interval - (time.monotonic() - started)))  # pacing, not waiting on state
    return Latencies(seconds, failures)


def measure(
    index_dir: Path,
    log: Path,
    args: argparse.Namespace,
    extra: tuple[str, ...],
    *,
    plain_waitress: bool = False,
) -> tuple[Latencies, Latencies, AttackStats]:
    server = ServerProcess(index_dir, extra_args=extra, log_path=log)
    if plain_waitress:
        assert server.args[1:3] == ["-m", "simages_server"]
        server.args[1:3] = ["-c", PLAIN_WAITRESS]
    with server:
        run_queries(server, count=10, until=None, interval=0, timeout=args.query_timeout)  # warm-up
        quiet = run_queries(
            server, count=args.baseline_queries, until=None, interval=0, timeout=args.query_timeout
        )
        with SlowHeaderAttack(server.port, args.connections, args.seconds, args.line_interval) as attack:
            attacked = run_queries(
                server, count=None, until=time.monotonic() + args.seconds - 1,
                interval=args.query_interval, timeout=args.query_timeout,
            )  # fmt: skip
        return quiet, attacked, attack.stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--line-interval", type=float, default=1.0, help="seconds between an attacker's header lines"
    )
    parser.add_argument("--query-interval", type=float, default=0.1, help="seconds between normal queries")
    parser.add_argument("--query-timeout", type=float, default=10.0)
    parser.add_argument("--baseline-queries", type=int, default=200)
    parser.add_argument("--target-p99", type=float, default=1.0, help="seconds")
    parser.add_argument(
        "--server-args", default="", help="extra `serve` options, e.g. '--connection-limit 500'"
    )
    parser.add_argument(
        "--before", action="store_true", help="also attack a server with waitress's own limits"
    )
    args = parser.parse_args()
    if not 1 <= args.connections <= 2000 or not 1 <= args.seconds <= 300:
        parser.error("--connections must be 1..2000 and --seconds 1..300 (the attack is bounded)")
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = build_demo_index(Path(tmp) / "demo")
        print(f"attack: {args.connections} slow-header connections over loopback for {args.seconds:g} s, "
              f"one header line each every {args.line_interval:g} s; normal client: a text query on a new "
              f"connection every {args.query_interval:g} s")  # fmt: skip
        quiet, attacked, stats = measure(
            index_dir, Path(tmp) / "server.log", args, tuple(args.server_args.split())
        )
        print(f"serve {args.server_args or '(default limits)'}")
        print(quiet.line("  without attack"))
        print(attacked.line("  under attack"))
        print(f"  attack: {stats.opened} connections opened, {stats.closed_by_server} closed by the server, "
              f"at most {stats.held_max} held at once, {stats.refused} refused")  # fmt: skip
        ratio = attacked.percentile(0.99) / quiet.percentile(0.99)
        print(f"  p99 under attack / without: {ratio:.2f}x")
        if args.before:
            before_quiet, before_attacked, before_stats = measure(
                index_dir, Path(tmp) / "server-before.log", args, (), plain_waitress=True
            )
            print("serve on waitress with its own limits, as before (for comparison):")
            print(before_quiet.line("  without attack"))
            print(before_attacked.line("  under attack"))
            print(f"  attack: {before_stats.opened} connections opened, {before_stats.closed_by_server} closed "
                  f"by the server, at most {before_stats.held_max} held at once")  # fmt: skip
    p99 = attacked.percentile(0.99)
    if attacked.failures or p99 >= args.target_p99:
        print(f"MISS: p99 under attack {p99 * 1000:.0f} ms (target < {args.target_p99 * 1000:.0f} ms), "
              f"{attacked.failures} failed queries")  # fmt: skip
        return 1
    print(f"OK: p99 under attack {p99 * 1000:.0f} ms < {args.target_p99 * 1000:.0f} ms, no failed query")
    return 0


if __name__ == "__main__":
    sys.exit(main())
