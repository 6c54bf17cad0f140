"""Label Studio "Retrieve predictions" on 64 tasks: the backend's batch against a sequential loop.

The local server serves the demo collection with 100 ms added to every answer
(a distant API). Label Studio sends a batch of tasks in one ``/predict`` request;
the backend runs its queries concurrently through the core's ``search_many``.
The baseline is the same tasks predicted one at a time, one request each, as a
backend without batching makes Label Studio do. Both runs go through real HTTP
to the real backend process (cache off). The latency-bound ideal for ``W``
workers is ``ceil(N / W) * latency``. Targets: at least 8x faster than the
loop, and within 1.3x of the ideal.

Run: .venv/bin/python bench/bench_ls_predictions.py [--tasks 64] [--workers 16] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    args = parser.parse_args()
    latency = args.latency_ms / 1000

    with tempfile.TemporaryDirectory(prefix="bench-ls-") as tmp_name:
        tmp = Path(tmp_name)
        index_dir = build_demo_index(tmp / "demo")
        records = ImageIndex.load(index_dir).records
        server = ServerProcess(
            index_dir, api_keys=("bench",), latency_ms=args.latency_ms, state=tmp, log_path=tmp / "s.log"
        )
        with server:
            env = {
                "SIMAGES_API_URL": server.url,
                "SIMAGES_API_KEY": "bench",
                "SIMAGES_CACHE": "0",
                "SIMAGES_HOME": str(tmp / "home"),
                "SIMAGES_MAX_WORKERS": str(args.workers),
                "LOG_LEVEL": "WARNING",
            }
            tasks = [
                {"id": i, "data": {"image": f"{server.url}/images/{records[i % len(records)].id}"}}
                for i in range(args.tasks)
            ]
            with BackendProcess(env, log_path=tmp / "b.log") as backend, requests.Session() as http:

                def predict(batch: list[dict]) -> list[dict]:
                    response = http.post(
                        f"{backend.url}/predict", json={"tasks": batch, "label_config": CONFIG}, timeout=600
                    )
                    response.raise_for_status()
                    return response.json()["results"]

                predict(tasks[:1])  # warm up: model for this config, connections
                started = time.perf_counter()
                one_by_one = [predict([task])[0] for task in tasks]
                sequential = time.perf_counter() - started
                started = time.perf_counter()
                batch = predict(tasks)
                batched = time.perf_counter() - started

    failed = [r for r in batch + one_by_one if "result" not in r]
    assert not failed, failed[:3]
    assert batch == one_by_one, "the batch must predict exactly what the loop predicts"
    with_boxes = sum(any(r["type"] == "rectanglelabels" for r in p["result"]) for p in batch)
    ideal = math.ceil(args.tasks / args.workers) * latency
    print(
        f"{args.tasks} tasks ({with_boxes} with boxes), {args.latency_ms:.0f} ms added latency, {args.workers} workers"
    )
    print(f"sequential loop (1 task per /predict): {sequential:6.2f} s")
    print(f"one batched /predict:                  {batched:6.2f} s")
    print(f"latency-bound ideal:                   {ideal:6.2f} s")
    print(f"speed-up vs sequential: {sequential / batched:5.1f}x   (target >= 8)")
    print(f"batch / ideal:          {batched / ideal:5.2f}    (target <= 1.3)")
    ok = sequential / batched >= 8 and batched / ideal <= 1.3
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
