"""Interactive pre-annotation: how long an annotator waits for a drawn box to get its label.

The local server serves the demo collection with 100 ms added to every answer (a distant API).
Ten tasks (a 1351x400 photo no index holds, a different exposure each) get five boxes each, one
``/predict`` per box as Label Studio sends them, through real HTTP to the backend process (cache
off). The baseline, measured in the same run, is the API latency itself; the backend's own share
of each answer is the answer time minus that latency (crop, encode, vote, HTTP). Target: median
and p95 within 150 ms of the latency. Also counted: API searches (one per box) and task image
downloads (one per task), on a loopback image server that counts its GETs.

Run: .venv/bin/python bench/bench_ls_interactive.py [--tasks 10] [--boxes 5] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from PIL import Image, ImageEnhance

from simages_label_studio.testing import BackendProcess
from simages_server.demo import build_demo_index
from simages_server.testing import ServerProcess

CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="label" toName="image" smart="true"><Label value="Person"/><Label value="Cat"/>
<Label value="Mug" predicted_values="cup"/><Label value="Spoon"/><Label value="Horse"/></RectangleLabels></View>"""
WIDTH, HEIGHT = 1351, 400


def team_photos(images_dir: Path, out: Path, count: int) -> None:
    """``count`` exposures of the cat, the coffee cup and a brick wall side by side."""
    with (
        Image.open(images_dir / "chelsea.jpg") as cat,
        Image.open(images_dir / "coffee.jpg") as coffee,
        Image.open(images_dir / "brick.jpg") as brick,
    ):
        canvas = Image.new("RGB", (WIDTH, HEIGHT), "white")
        canvas.paste(cat, (0, 0))
        canvas.paste(coffee, (cat.width, 0))
        canvas.paste(brick.convert("RGB").crop((0, 0, 300, HEIGHT)), (cat.width + coffee.width, 0))
    for n in range(count):
        ImageEnhance.Brightness(canvas).enhance(0.8 + 0.04 * n).save(out / f"task{n}.jpg", quality=90)


def drawn_box(rng: random.Random, n: int) -> dict:
    """A rectangle as Label Studio sends it, in percent of the image."""
    w, h = rng.uniform(80, 450), rng.uniform(80, 380)
    x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
    value = {
        "x": x / WIDTH * 100,
        "y": y / HEIGHT * 100,
        "width": w / WIDTH * 100,
        "height": h / HEIGHT * 100,
    }
    return {
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "image_rotation": 0,
        "value": {**value, "rotation": 0, "rectanglelabels": ["Person"]},
        "id": f"box{n}",
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
    }


def serve(folder: Path) -> tuple[str, Counter[str], http.server.ThreadingHTTPServer]:
    counts: Counter[str] = Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            counts[self.path] += 1
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", counts, server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--boxes", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    rng = random.Random(19)

    with tempfile.TemporaryDirectory(prefix="bench-ls-interactive-") as tmp_name:
        tmp = Path(tmp_name)
        demo = tmp / "demo"
        index_dir = build_demo_index(demo)
        (tmp / "tasks").mkdir()
        team_photos(demo / "images", tmp / "tasks", args.tasks + 1)  # and one to warm up with
        images_url, downloads, image_server = serve(tmp / "tasks")
        server = ServerProcess(
            index_dir, api_keys=("bench",), latency_ms=args.latency_ms, state=tmp, log_path=tmp / "s.log"
        )
        env = {
            "SIMAGES_API_KEY": "bench",
            "SIMAGES_CACHE": "0",
            "SIMAGES_HOME": str(tmp / "home"),
            "SIMAGES_ALLOW_URL_NETWORKS": "127.0.0.0/8",
            "LOG_LEVEL": "WARNING",
        }
        try:
            with server, requests.Session() as http_session:
                env["SIMAGES_API_URL"] = server.url
                with BackendProcess(env, log_path=tmp / "b.log") as backend:

                    def predict(task_id: int, region: dict) -> tuple[float, dict]:
                        task = {
                            "id": task_id,
                            "data": {"image": f"{images_url}/task{task_id}.jpg"},
                        }
                        body = {
                            "tasks": [task],
                            "label_config": CONFIG,
                            # As Label Studio names the project: its learned labels are read and
                            # each answered box is remembered for the annotation (region_memos).
                            "project": "1.1796601402",
                            "params": {"context": {"result": [region]}},
                        }
                        started = time.perf_counter()
                        response = http_session.post(f"{backend.url}/predict", json=body, timeout=60)
                        elapsed = time.perf_counter() - started
                        response.raise_for_status()
                        return elapsed, response.json()["results"][0]

                    # Warm-up on an image outside the measured tasks: model for this config, connections.
                    predict(args.tasks, drawn_box(rng, -1))
                    searches_before = http_session.get(f"{backend.url}/metrics").json()["api_requests_today"]
                    downloads.clear()
                    times, answers = [], []
                    for n in range(args.tasks * args.boxes):
                        elapsed, answer = predict(n % args.tasks, drawn_box(rng, n))
                        times.append(elapsed)
                        answers.append(answer)
                    searches = (
                        http_session.get(f"{backend.url}/metrics").json()["api_requests_today"]
                        - searches_before
                    )
        finally:
            image_server.shutdown()

    failed = [a for a in answers if "result" not in a]
    assert not failed, failed[:3]
    labelled = sum(bool(a["result"][0]["value"]["rectanglelabels"]) for a in answers)
    boxes = len(times)
    overhead = sorted(t - latency for t in times)
    median = statistics.median(overhead)
    p95 = overhead[min(len(overhead) - 1, round(0.95 * (len(overhead) - 1)))]
    print(
        f"{boxes} boxes on {args.tasks} tasks ({labelled} labelled), {args.latency_ms:.0f} ms added API latency"
    )
    print(f"answer time, median:          {statistics.median(times) * 1000:7.1f} ms")
    print(f"answer - API latency, median: {median * 1000:7.1f} ms   (target <= 150)")
    print(f"answer - API latency, p95:    {p95 * 1000:7.1f} ms   (target <= 150)")
    print(f"API searches: {searches} for {boxes} boxes   (target: one per box)")
    task_downloads = sum(downloads.values())
    print(f"task image downloads: {task_downloads} for {args.tasks} tasks   (target: one per task)")
    ok = median <= 0.150 and p95 <= 0.150 and searches == boxes and task_downloads == args.tasks
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
