"""Helpers shared by the FiftyOne tests (a plain module: ``conftest`` cannot be imported by name)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGIN_SRC = REPO / "fiftyone_plugin"
FO_ROOT = Path(tempfile.mkdtemp(prefix="simages-fo-tests-"))
PLUGINS_DIR = FO_ROOT / "plugins"
PLUGINS_DIR.mkdir()
(PLUGINS_DIR / "similar-images").symlink_to(PLUGIN_SRC, target_is_directory=True)

FO_ENV = {
    "FIFTYONE_PLUGINS_DIR": str(PLUGINS_DIR),
    "FIFTYONE_DATABASE_DIR": str(FO_ROOT / "db"),
    "FIFTYONE_DEFAULT_DATASET_DIR": str(FO_ROOT / "datasets"),
    "FIFTYONE_DATABASE_VALIDATION": "false",
    "FIFTYONE_DO_NOT_TRACK": "true",
    "FIFTYONE_SHOW_PROGRESS_BARS": "false",
}
os.environ.update(FO_ENV)  # before anything imports fiftyone

# The throwaway database is ~300 MB; remove it once this process and the mongod FiftyOne started
# for it have exited (a detached watcher, since mongod outlives every hook of this process).
_CLEANUP = """
import os, shutil, sys, time
parent, root = int(sys.argv[1]), sys.argv[2]
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
def users():
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and root.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                yield pid
        except OSError:
            pass
while alive(parent):
    time.sleep(1)
deadline = time.time() + 60
while time.time() < deadline and any(p != str(os.getpid()) for p in users()):
    time.sleep(1)
shutil.rmtree(root, ignore_errors=True)
"""
if sys.platform.startswith("linux"):
    subprocess.Popen(
        [sys.executable, "-c", _CLEANUP, str(os.getpid()), str(FO_ROOT)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

FIND_URI = "@simages/similar-images/find_similar"
IMPORT_URI = "@simages/similar-images/import_similar"


def unique_name(prefix: str = "simages-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def coco_boxes(local_api) -> dict[str, list[tuple[str, tuple[float, float, float, float], int, int]]]:
    """file name -> [(class, (x0, y0, x1, y1) pixels, width, height)] from the demo's COCO file."""
    coco = json.loads((local_api.demo_dir / "annotations.json").read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    images = {i["id"]: i for i in coco["images"]}
    out: dict[str, list] = {i["file_name"]: [] for i in coco["images"]}
    for a in coco["annotations"]:
        img = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        out[img["file_name"]].append(
            (names[a["category_id"]], (x, y, x + w, y + h), img["width"], img["height"])
        )
    return out
