"""Learned labels: accuracy of predicted Choices on held-out photos after 0, 5, 10, 20, 40 annotations.

The demo collection (plugins/simages_server/demo.py) on the local server, as a project whose Choices
are not COCO names: Animal / Breakfast / Space / People. Ground truth is assigned per photo by its
subject (below, ``CATEGORY``): chelsea and horse are Animal, coffee is Breakfast, rocket, moon and
hubble_deep_field are Space, astronaut and camera are People (a person, whatever the suit); the other
demo photos have none of these subjects and are not in the project. All copies of a photo (resized,
recompressed, cropped, flipped, warmer) stay on one side of the split, so a held-out task never has
its own copies among the annotated ones: ``HELD_OUT`` is one photo of every category that has two
(horse, astronaut, moon; Breakfast has one photo, it is only learned from). 25 training tasks, 13
held-out tasks.

Annotations are fed as Label Studio sends them: webhook bodies of the recorded shape
(tests/label_studio/data/webhook_annotation_created.json), POSTed to the real backend over loopback,
in a fixed shuffled order; beyond the 25 training tasks a second annotator's annotations of the same
tasks (new annotation ids). After each step the held-out tasks are predicted through ``/predict``.
The baseline is the same backend before any annotation (no mapping: nothing to predict). Target:
accuracy >= 0.8 after 20 annotations.

Run: .venv/bin/python bench/bench_ls_learning.py
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import requests

from simages_label_studio.testing import BackendProcess
from simages_server.demo import VARIANTS, build_demo_index
from simages_server.index import ImageIndex
from simages_server.testing import ServerProcess

CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="scene" toName="image"><Choice value="Animal"/><Choice value="Breakfast"/>
<Choice value="Space"/><Choice value="People"/></Choices></View>"""
CATEGORY = {
    "chelsea": "Animal", "horse": "Animal", "coffee": "Breakfast", "rocket": "Space", "moon": "Space",
    "hubble_deep_field": "Space", "astronaut": "People", "camera": "People",
}  # fmt: skip
HELD_OUT = ("horse", "astronaut", "moon")
STEPS = (0, 5, 10, 20, 40)
TARGET_AFTER, TARGET = 20, 0.8
PROJECT = 1
TEMPLATE = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "label_studio"
    / "data"
    / "webhook_annotation_created.json"
)


def photo_of(file_name: str) -> str:
    stem = file_name.removesuffix(".jpg")
    for variant in VARIANTS:
        stem = stem.removesuffix(f"_{variant.suffix}")
    return stem


def webhook_body(template: dict, annotation_id: int, task: dict, choice: str) -> dict:
    """An ANNOTATION_CREATED body of the shape Label Studio 1.23.2 sends."""
    body = json.loads(json.dumps(template))
    body["annotation"].update(
        id=annotation_id,
        task=task["id"],
        result=[
            {"from_name": "scene", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}
        ],
    )
    body["task"].update(id=task["id"], data=task["data"])
    body["project"].update(id=PROJECT, label_config=CONFIG)
    return body


def project_uid(template: dict) -> str:
    """The ``project`` Label Studio sends to ``/predict``: ``<id>.<created_at in whole seconds>``,
    made from the same project the webhook bodies carry (the backend keys what it learns by it)."""
    created = datetime.fromisoformat(template["project"]["created_at"].replace("Z", "+00:00"))
    return f"{PROJECT}.{int(created.timestamp())}"


def accuracy(
    backend: BackendProcess, tasks: list[dict], truth: dict[int, str], uid: str
) -> tuple[float, str]:
    response = requests.post(
        f"{backend.url}/predict",
        json={"tasks": tasks, "label_config": CONFIG, "project": uid},
        timeout=300,
    )
    response.raise_for_status()
    right = 0
    for task, result in zip(tasks, response.json()["results"], strict=True):
        chosen = [
            c for r in result.get("result", []) if r["type"] == "choices" for c in r["value"]["choices"]
        ]
        right += chosen == [truth[task["id"]]]
    version = response.json()["results"][0].get("model_version", "")
    return right / len(tasks), version.rsplit("/", 1)[-1]


def main() -> int:
    template = json.loads(TEMPLATE.read_text())
    with tempfile.TemporaryDirectory(prefix="bench-learn-") as tmp_name:
        tmp = Path(tmp_name)
        index_dir = build_demo_index(tmp / "demo")
        records = [r for r in ImageIndex.load(index_dir).records if photo_of(r.file) in CATEGORY]
        with ServerProcess(index_dir, api_keys=("bench",), state=tmp, log_path=tmp / "s.log") as server:
            tasks = [
                {"id": n, "project": PROJECT, "data": {"image": f"{server.url}/images/{r.id}"}}
                for n, r in enumerate(records, start=1)
            ]
            photo = {task["id"]: photo_of(r.file) for task, r in zip(tasks, records, strict=True)}
            truth = {task_id: CATEGORY[name] for task_id, name in photo.items()}
            held_out = [t for t in tasks if photo[t["id"]] in HELD_OUT]
            training = [t for t in tasks if photo[t["id"]] not in HELD_OUT]
            random.Random(19).shuffle(training)
            order = (training * 2)[: max(STEPS)]  # beyond one each: a second annotator, new annotation ids
            env = {
                "SIMAGES_API_URL": server.url,
                "SIMAGES_API_KEY": "bench",
                "SIMAGES_HOME": str(tmp / "home"),
                "LOG_LEVEL": "WARNING",
            }
            print(
                f"project: {len(tasks)} tasks from {len(CATEGORY)} photos; held out {len(held_out)} tasks "
                f"({', '.join(HELD_OUT)}), learned from {len(training)} tasks"
            )
            curve: dict[int, float] = {}
            fed = 0
            webhook_seconds: list[float] = []
            with BackendProcess(env, log_path=tmp / "backend.log") as backend:
                for step in STEPS:
                    while fed < step:
                        task = order[fed]
                        body = webhook_body(template, 1000 + fed, task, truth[task["id"]])
                        started = time.perf_counter()
                        answer = requests.post(f"{backend.url}/webhook", json=body, timeout=60)
                        webhook_seconds.append(time.perf_counter() - started)
                        answer.raise_for_status()
                        fed += 1
                    curve[step], version = accuracy(backend, held_out, truth, project_uid(template))
                    seen = sorted({truth[t["id"]] for t in order[:step]})
                    print(
                        f"  {step:>3} annotations: accuracy {curve[step]:.2f}  ({version}; labels seen: {', '.join(seen) or '-'})"
                    )
    baseline = curve[0]
    mean_ms = 1000 * sum(webhook_seconds) / max(len(webhook_seconds), 1)
    print(f"baseline (no annotation, no mapping): {baseline:.2f}; after {TARGET_AFTER}: {curve[TARGET_AFTER]:.2f} "
          f"(+{curve[TARGET_AFTER] - baseline:.2f}); webhook {mean_ms:.0f} ms per annotation")  # fmt: skip
    ok = curve[TARGET_AFTER] >= TARGET
    print(f"target: >= {TARGET} after {TARGET_AFTER} annotations: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
