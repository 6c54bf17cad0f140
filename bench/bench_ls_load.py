"""Label Studio backend under load: 200 concurrent ``/predict`` calls of 8 tasks each, five rounds.

The local server answers with 50 ms added latency. The backend shares one bounded
worker pool and one connection pool per process, so its thread count must not grow
with the number of requests, and its memory must settle: the RSS after round 5 is
compared with the RSS after round 1 (target: within 10%). Every round must have 0
errors. The baseline, measured in the same run, is one ``/predict`` of 8 tasks alone;
each round's wall time is also compared with the pool-bound ideal
``ceil(calls * tasks / workers) * latency``.

Run: .venv/bin/python bench/bench_ls_load.py [--calls 200] [--tasks 8] [--rounds 5] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from simages_label_studio.testing import BackendProcess
from simages_server.demo import build_demo_index
from simages_server.index import ImageIndex
from simages_server.testing import ServerProcess

CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="label" toName="image"><Label value="person"/><Label value="cat"/><Label value="cup"/>
<Label value="horse"/><Label value="motorcycle"/><Label value="clock"/></RectangleLabels>
<Choices name="scene" toName="image" choice="multiple"><Choice value="person"/><Choice value="cat"/></Choices></View>"""


def _status(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as a dict (Linux): ``Threads``, ``VmRSS``, ..."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _rss_mb(pid: int) -> float:
    return int(_status(pid)["VmRSS"].split()[0]) / 1024


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="concurrent /predict calls per round")
    parser.add_argument("--tasks", type=int, default=8, help="tasks per call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=16, help="SIMAGES_MAX_WORKERS of the backend")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads of the backend")
    args = parser.parse_args()
    latency = args.latency_ms / 1000

    with tempfile.TemporaryDirectory(prefix="bench-ls-load-") as tmp_name:
        tmp = Path(tmp_name)
        index_dir = build_demo_index(tmp / "demo")
        records = ImageIndex.load(index_dir).records
        server = ServerProcess(
            index_dir, api_keys=("bench",), latency_ms=args.latency_ms, state=tmp, log_path=tmp / "s.log"
        )
        env = {
            "SIMAGES_API_KEY": "bench",
            "SIMAGES_CACHE": "0",  # every task a real request: the load is the point
            "SIMAGES_HOME": str(tmp / "home"),
            "SIMAGES_MAX_WORKERS": str(args.workers),
            "LOG_LEVEL": "WARNING",
        }
        with server:
            env["SIMAGES_API_URL"] = server.url

            def batch(call: int) -> list[dict]:
                return [
                    {
                        "id": call * args.tasks + i,
                        "data": {"image": f"{server.url}/images/{records[(call + i) % len(records)].id}"},
                    }
                    for i in range(args.tasks)
                ]

            with BackendProcess(env, threads=args.threads, log_path=tmp / "b.log") as backend:
                local = threading.local()

                def predict(call: int) -> tuple[float, str | None]:
                    session = getattr(local, "session", None)
                    if session is None:
                        session = local.session = requests.Session()
                    started = time.perf_counter()
                    try:
                        # A new connection per call, as from many separate clients: 200 idle keep-alive
                        # connections would hold waitress's 100 connection slots until its 120 s timeout.
                        response = session.post(
                            f"{backend.url}/predict",
                            json={"tasks": batch(call), "label_config": CONFIG},
                            headers={"connection": "close"},
                            timeout=600,
                        )
                        results = response.json().get("results", []) if response.ok else []
                        failed = [r["error"] for r in results if "error" in r]
                        error = (
                            None if response.ok and not failed else (failed[:1] or [response.text[:200]])[0]
                        )
                    except requests.RequestException as exc:
                        error = type(exc).__name__
                    return time.perf_counter() - started, error

                predict(0)  # warm up: the model for this config, connections
                baseline = statistics.median(predict(i)[0] for i in range(3))
                rounds = []
                with ThreadPoolExecutor(max_workers=args.calls) as clients:
                    for round_no in range(1, args.rounds + 1):
                        started = time.perf_counter()
                        outcomes = list(clients.map(predict, range(args.calls)))
                        wall = time.perf_counter() - started
                        status = _status(backend.pid)
                        rounds.append(
                            {
                                "round": round_no,
                                "wall": wall,
                                "p99": _p99([t for t, _ in outcomes]),
                                "errors": [e for _, e in outcomes if e is not None],
                                "threads": int(status["Threads"]),
                                "rss": _rss_mb(backend.pid),
                            }
                        )

    ideal = math.ceil(args.calls * args.tasks / args.workers) * latency
    print(
        f"{args.rounds} rounds of {args.calls} concurrent /predict x {args.tasks} tasks, "
        f"{args.latency_ms:.0f} ms added latency, {args.workers} workers, {args.threads} waitress threads"
    )
    print(
        f"baseline: one /predict of {args.tasks} tasks alone: {baseline * 1000:.0f} ms; pool-bound ideal round {ideal:.2f} s"
    )
    for r in rounds:
        print(
            f"round {r['round']}: {len(r['errors'])} errors, wall {r['wall']:.2f} s ({r['wall'] / ideal:.2f}x ideal), "
            f"p99 {r['p99']:.2f} s ({r['p99'] / baseline:.1f}x baseline), threads {r['threads']}, RSS {r['rss']:.1f} MB"
        )
        for error in r["errors"][:3]:
            print(f"    {error}")
    growth = rounds[-1]["rss"] / rounds[0]["rss"]
    threads = {r["threads"] for r in rounds}
    errors = sum(len(r["errors"]) for r in rounds)
    print(f"RSS round {args.rounds} / round 1: {growth:.3f}   (target <= 1.10)")
    print(f"thread counts across rounds: {sorted(threads)}   (target: one value)")
    print(f"errors: {errors}   (target 0)")
    ok = errors == 0 and growth <= 1.10 and len(threads) == 1
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
