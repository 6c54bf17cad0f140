"""FiftyOne panel benchmark: the Similar images panel's answer to a sample change, new and seen before.

A local server over a generated collection (``bench/photos.py``) adds a fixed latency (default
100 ms) to every request, thumbnails included. A dataset holds one query photo per cluster. The
panel is driven as the App drives it: each event is the panel's callback run through FiftyOne's
operator execution (``execute_operator`` with ``__method__``, the panel's id and state, and the
open sample), its state patches applied as the App applies them. Measured in the same run:

- the baseline: one bare ``client.search`` of a sample's photo (encode, the API's latency, parse),
  the floor of any answer;
- stepping forward through ``--samples`` samples, each a sample the panel has not seen: the wall
  time of ``on_change_current_sample`` (search, thumbnails fetched and fingerprinted to collapse
  copies and mark the dataset's own, the result rendered). Target: every step within the API
  latency + 200 ms (median and 90th percentile printed too). Two round trips are inherent: the
  search, then the results' thumbnails, fetched to fingerprint them;
- stepping back through the same samples: each answer comes from the panel's cache. Target: every
  step under 100 ms, and no request reaches the server (counted in the server's log).

Run: .venv/bin/python bench/bench_fo_panel.py [--samples 20] [--latency-ms 100] [--num-similar 10]
FiftyOne's database is the one FiftyOne is configured with (``FIFTYONE_DATABASE_DIR`` etc.); the
plugin is loaded from this checkout through a temporary ``FIFTYONE_PLUGINS_DIR``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repo, for `fiftyone_plugin` before it is installed

API_KEY = "bench-key"
PANEL_URI = "@simages/similar-images/similar_images_panel"
PHOTO_SIZE = (256, 192)


def drive(dataset: Any, method: str, state: dict[str, Any], sample_id: str) -> float:
    """Run one panel event as the App does; apply its state patches; returns its wall time (s)."""
    import pydash
    from fiftyone.operators import execute_operator

    started = time.perf_counter()
    result = execute_operator(
        PANEL_URI,
        dataset=dataset,
        current_sample=sample_id,
        params={
            "__method__": method,
            "panel_id": "bench",
            "panel_state": copy.deepcopy(state),
            "event_args": {},
        },
    )
    elapsed = time.perf_counter() - started
    for request in result.executor.to_json()["requests"]:
        if request["operator_uri"] == "patch_panel_state":
            for key, value in request["params"]["state"].items():
                pydash.set_(state, key, value)
    if state.get("error"):
        raise RuntimeError(f"the panel reports an error: {state['error']}")
    return elapsed


def searches(log_path: Path) -> int:
    return sum(1 for line in log_path.read_text().splitlines() if "POST / " in line)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--num-similar", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-fo-panel-") as tmp:
        root = Path(tmp)
        plugins = root / "plugins"
        plugins.mkdir()
        (plugins / "similar-images").symlink_to(REPO / "fiftyone_plugin", target_is_directory=True)
        # Before fiftyone is imported: it reads its configuration once.
        os.environ["FIFTYONE_PLUGINS_DIR"] = str(plugins)
        os.environ["SIMAGES_HOME"] = str(root / "home")
        os.environ["SIMAGES_CACHE"] = "0"  # the panel's own cache is measured, not the core's response cache

        from photos import write_clustered_photos

        from simages_core import SimilarImagesClient
        from simages_server.indexing import build_index
        from simages_server.testing import ServerProcess

        files = write_clustered_photos(
            root / "collection", root / "queries", args.samples, 4, size=PHOTO_SIZE
        )
        build_index(root / "collection", root / "index", progress=False)
        log_path = root / "server.log"
        with ServerProcess(
            root / "index",
            api_keys=(API_KEY,),
            latency_ms=args.latency_ms,
            state=root / "state",
            log_path=log_path,
        ) as server:
            os.environ["SIMAGES_API_URL"] = server.url
            os.environ["SIMAGES_API_KEY"] = API_KEY
            import fiftyone as fo

            with SimilarImagesClient(api_key=API_KEY, base_url=server.url, cache=False, usage=None) as client:
                client.search(text="warm up", num_similar=1)
                bare = []
                for path in files[: min(5, len(files))]:
                    started = time.perf_counter()
                    client.search(image=path, num_similar=args.num_similar, labels=True)
                    bare.append(time.perf_counter() - started)
            baseline = statistics.median(bare)

            dataset = fo.Dataset(f"bench-panel-{uuid.uuid4().hex[:8]}")
            try:
                ids = dataset.add_samples([fo.Sample(filepath=str(f)) for f in files], progress=False)
                state: dict[str, Any] = {"num_similar": args.num_similar}
                drive(dataset, "on_load", state, ids[0])  # the panel opens: its first answer (and imports)
                before = searches(log_path)
                forward = [drive(dataset, "on_change_current_sample", state, i) for i in ids[1:]]
                sent_forward = searches(log_path) - before
                before = searches(log_path)
                back = [drive(dataset, "on_change_current_sample", state, i) for i in reversed(ids[:-1])]
                sent_back = searches(log_path) - before
            finally:
                fo.delete_dataset(dataset.name)

    latency = args.latency_ms / 1000
    new_median = statistics.median(forward)
    new_p90 = sorted(forward)[int(0.9 * (len(forward) - 1))]
    seen_max = max(back)
    new_ok = max(forward) <= latency + 0.2 and sent_forward == len(forward)
    seen_ok = seen_max < 0.1 and sent_back == 0
    print(
        f"{args.samples} samples, {args.num_similar} results per search, {args.latency_ms:.0f} ms added per request; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"baseline: bare client.search of a sample's photo {baseline * 1000:.0f} ms (median of {len(bare)})"
    )
    print(
        f"new sample: median {new_median * 1000:.0f} ms, p90 {new_p90 * 1000:.0f} ms, max {max(forward) * 1000:.0f} ms "
        f"-> {new_median / baseline:.2f}x the bare search; target every step <= latency + 200 ms = "
        f"{(latency + 0.2) * 1000:.0f} ms; {sent_forward} searches for {len(forward)} steps"
    )
    print(
        f"sample seen before: median {statistics.median(back) * 1000:.1f} ms, max {seen_max * 1000:.1f} ms "
        f"-> {statistics.median(back) / baseline:.2f}x the bare search; target every step < 100 ms; "
        f"{sent_back} searches reached the server (target 0)"
    )
    ok = new_ok and seen_ok
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
