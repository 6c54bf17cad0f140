"""Batch benchmark: ``search_many`` against a sequential loop, on a server that adds latency.

A loopback HTTP server answers every POST with a documented success envelope
after a fixed delay (default 100 ms), the latency a distant API adds. Both
runs send the same queries through the same client (cache off). The ideal for
``max_workers=W`` is ``ceil(N / W) * latency``. Targets: throughput within
1.3x of that ideal, and the ratio to the sequential loop is printed.

Run: .venv/bin/python bench/bench_search_many.py [--queries 64] [--workers 8] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from simages_core import Query, SimilarImagesClient
from simages_core._models import SearchResult, SimilarImage
from simages_core.protocol import success_envelope

RESULT = SearchResult(
    images=tuple(
        SimilarImage(
            f"http://127.0.0.1/images/{i}", 1 - i / 10, f"http://127.0.0.1/thumbnails/{i}.webp", str(i)
        )
        for i in range(5)
    )
)


def start_latency_server(latency_s: float) -> ThreadingHTTPServer:
    payload = json.dumps(success_envelope(RESULT)).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real API gateway
        # Headers and body are separate writes; with Nagle on, the body waits for the
        # client's delayed ACK (~40 ms), which would measure the socket, not the client.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            time.sleep(latency_s)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    server = start_latency_server(latency)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    queries = [Query(text=f"query {i}", num_similar=5) for i in range(args.queries)]
    with SimilarImagesClient(api_key="bench", base_url=url, cache=False, usage=None) as client:
        client.search(text="warm up")
        started = time.perf_counter()
        for query in queries:
            client.search(text=query.text, num_similar=query.num_similar)
        sequential = time.perf_counter() - started
        started = time.perf_counter()
        items = client.search_many(queries, max_workers=args.workers)
        batched = time.perf_counter() - started
    server.shutdown()
    assert all(item.ok for item in items), [item.error for item in items if not item.ok]
    ideal = math.ceil(args.queries / args.workers) * latency
    print(f"{args.queries} queries, {args.latency_ms:.0f} ms added latency, max_workers={args.workers}")
    print(f"sequential loop:        {sequential:6.2f} s")
    print(f"search_many:            {batched:6.2f} s")
    print(f"latency-bound ideal:    {ideal:6.2f} s")
    print(f"speed-up vs sequential: {sequential / batched:5.1f}x")
    print(f"search_many / ideal:    {batched / ideal:5.2f}   (target <= 1.3)")
    ok = batched / ideal <= 1.3
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
