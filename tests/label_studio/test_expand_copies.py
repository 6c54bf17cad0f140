"""``simages-ls expand`` screens copies, in a real Label Studio 1.23 against a local server of our own.

The project's tasks are the server's own photos: two by URL (the server's ``/images/{id}``),
two uploaded into Label Studio (same bytes, another URL, so API id and URL cannot tell), and
one URL that answers 404. Expanded with the server, no task's photo comes back, nor a variant
of it, while distinct photos are added; run again, it adds nothing and downloads no task image
(the server's log, one line per request, and the local store's contents say so);
``--no-screen-copies`` brings back today's behaviour (the uploaded photo imported as new).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import diskcache
import pytest

from simages_core.identity import COPY_DISTANCE, Fingerprint, fingerprint
from simages_label_studio.expand import SOURCE_TASK_KEY, expand_project
from simages_label_studio.settings import BackendSettings
from simages_label_studio.task_fingerprints import FINGERPRINT_KEY, STORE_FOLDER
from simages_server.demo import VARIANTS
from simages_server.index import ImageIndex

from .conftest import CONFIG, backend_env

pytestmark = [pytest.mark.integration, pytest.mark.label_studio, pytest.mark.slow]

URL_PHOTOS = ["chelsea.jpg", "coffee.jpg"]
UPLOADED_PHOTOS = ["astronaut.jpg", "horse.jpg"]
PER_TASK = 8  # a photo's five variants and itself, then distinct photos
SIMPLE_VARIANTS = ("resized", "recompressed", "flipped", "warmer")


def photo_of(file_name: str) -> str:
    """The photo a demo file shows: ``coffee_resized.jpg`` -> ``coffee``."""
    stem = file_name.removesuffix(".jpg")
    for variant in VARIANTS:
        stem = stem.removesuffix(f"_{variant.suffix}")
    return stem


@pytest.fixture(scope="module")
def api(local_api, tmp_path_factory) -> Iterator:
    """A local server of this module's own: its log counts this module's downloads."""
    with local_api.start_server(tmp_path_factory.mktemp("copies-api")) as server:
        yield server


def requests_for(server, path: str) -> int:
    """GET requests the server has logged for ``path`` (or, ending in ``/``, for any path under it)."""
    pattern = f" GET {path}" if path.endswith("/") else f" GET {path} "
    return sum(pattern in line for line in server.log_path.read_text().splitlines())


def make_project(label_studio, server, local_api, title: str, uploads: list[str]) -> dict[str, int]:
    """Image file (or ``"broken"``) -> task id, for a new project of the server's own photos."""
    ls = label_studio.sdk()
    project = ls.projects.create(title=title, label_config=CONFIG)
    urls = {f"{server.url}/images/{local_api.record(f).id}": f for f in URL_PHOTOS}
    urls[f"{server.url}/images/ffffffffffffffff"] = "broken"  # answers 404
    ls.projects.import_tasks(id=project.id, request=[{"data": {"image": url}} for url in urls])
    for name in uploads:  # the very file the server indexes, copied into Label Studio
        with (local_api.images_dir / name).open("rb") as fh:
            response = label_studio.post(
                f"/api/projects/{project.id}/import", files={"file": (name, fh, "image/jpeg")}
            )
        assert response.status_code == 201, response.text
    tasks = {}
    for task in ls.tasks.list(project=project.id):
        ref = task.data["image"]
        tasks[urls.get(ref) or next(n for n in uploads if ref.endswith(n))] = task.id
    tasks["project"] = project.id
    return tasks


def cli(project_id: int, server, label_studio, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **backend_env(server.url, server.api_key, home),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
    }
    command = [sys.executable, "-m", "simages_label_studio", "expand", "--project", str(project_id), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def new_tasks(label_studio, project_id: int) -> list:
    return [t for t in label_studio.sdk().tasks.list(project=project_id) if SOURCE_TASK_KEY in t.data]


def test_expand_adds_no_copy_of_a_task_image_and_a_rerun_downloads_nothing(
    api, label_studio, local_api, tmp_path
):
    tasks = make_project(label_studio, api, local_api, "copies", UPLOADED_PHOTOS)
    project_id = tasks.pop("project")
    home = tmp_path / "home"
    settings = BackendSettings(
        **backend_env(api.url, api.api_key, home),
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
    )
    report = expand_project(project_id, per_task=PER_TASK, settings=settings)

    index = ImageIndex.load(local_api.index_dir)
    file_of = {r.id: r.file for r in index.records}
    thumbnail_fp = {r.id: fingerprint(index.thumbnail_path(r.id)) for r in index.records}
    task_fp = {tasks[f]: fingerprint(local_api.images_dir / f) for f in URL_PHOTOS + UPLOADED_PHOTOS}
    task_photos = {photo_of(f) for f in URL_PHOTOS + UPLOADED_PHOTOS}
    added = new_tasks(label_studio, project_id)
    added_files = [file_of[t.data["simages_id"]] for t in added]

    # Distinct photos were added; none is a task's photo or a variant of one.
    assert report.added == len(added) > 0 and report.copy_threshold == COPY_DISTANCE
    assert not set(added_files) & set(URL_PHOTOS + UPLOADED_PHOTOS)
    simple_variants = {f"{p}_{v}.jpg" for p in task_photos for v in SIMPLE_VARIANTS}
    assert not set(added_files) & simple_variants, added_files
    # What the screen promises, exactly: nothing added is within the threshold of a task's image or of
    # another image added, and each new task carries the fingerprint it was screened with.
    for task in added:
        fp = thumbnail_fp[task.data["simages_id"]]
        assert Fingerprint.from_hex(task.data[FINGERPRINT_KEY]) == fp
        assert min(fp.distance(other) for other in task_fp.values()) > COPY_DISTANCE
    fps = [thumbnail_fp[t.data["simages_id"]] for t in added]
    assert all(b.distance(a) > COPY_DISTANCE for i, a in enumerate(fps) for b in fps[i + 1 :])

    # Every copy is counted with the task whose image it copies: the same photo.
    assert report.skipped_copies == len(report.copies) >= 2 * len(UPLOADED_PHOTOS)
    photo_of_task = {task_id: photo_of(f) for f, task_id in tasks.items() if f != "broken"}
    photo_of_task |= {t.id: photo_of(f) for t, f in zip(added, added_files, strict=True)}
    for copy in report.copies:
        assert copy.distance <= COPY_DISTANCE and copy.copy_of_task is not None
        assert photo_of(file_of[copy.image_id]) == photo_of_task[copy.copy_of_task], copy
    # The uploaded files themselves, found by their own search (another URL, same bytes), are copies.
    for name in UPLOADED_PHOTOS:
        assert any(
            c.image_id == local_api.record(name).id and c.copy_of_task == tasks[name] for c in report.copies
        )

    # Each readable task image was downloaded once; the broken one is counted and failed nothing else.
    assert report.task_images_fingerprinted == 4 and report.task_images_from_store == 0
    assert list(report.task_images_unreadable) == [tasks["broken"]]
    assert "404" in report.task_images_unreadable[tasks["broken"]]
    assert requests_for(api, "/thumbnails/") > 0  # candidates are fingerprinted from their thumbnails
    url_ids = [local_api.record(f).id for f in URL_PHOTOS]
    downloads = {i: requests_for(api, f"/images/{i}") for i in url_ids}
    ls_url = label_studio.url.rstrip("/")
    with diskcache.Cache(str(home / STORE_FOLDER)) as store:
        stored = {key: store[key] for key in store.iterkeys()}
    assert {key[2] for key in stored} == {tasks[f] for f in URL_PHOTOS + UPLOADED_PHOTOS}
    assert all(key[:2] == (ls_url, project_id) for key in stored)
    assert {key[2]: Fingerprint.from_hex(v) for key, v in stored.items()} == task_fp

    # Run again, from the command line: nothing new. The sources that added nothing are remembered as
    # searched; only the broken one (it failed) is tried again, and it fails again: exit 3.
    again = cli(project_id, api, label_studio, home, "--per-task", str(PER_TASK))
    assert again.returncode == 3, again.stderr
    assert again.stdout.startswith(f"project {project_id}: searched 1 of 1 source tasks, added 0 tasks\n")
    assert f"{len(report.landed)} source tasks expanded and " in again.stdout, again.stdout
    assert "task images: 0 fingerprinted, 4 from the local store, 1 unreadable" in again.stdout, again.stdout
    assert {i: requests_for(api, f"/images/{i}") for i in url_ids} == downloads
    assert len(new_tasks(label_studio, project_id)) == len(added)

    # The project grows by one task: only its image is downloaded. Tasks expand made carry their
    # fingerprint, the others come from the store, and the new source's copies are still caught.
    ls = label_studio.sdk()
    ls.projects.import_tasks(
        id=project_id,
        request=[{"data": {"image": f"{api.url}/images/{local_api.record('chelsea_resized.jpg').id}"}}],
    )
    grown = cli(project_id, api, label_studio, home, "--per-task", str(PER_TASK))
    assert grown.returncode == 3, grown.stderr  # the broken task fails again
    assert "task images: 1 fingerprinted, 4 from the local store, 1 unreadable" in grown.stdout, grown.stdout
    match = re.search(r"copies skipped: (\d+) \(within (\d+) bits", grown.stdout)
    assert match and int(match[1]) > 0 and int(match[2]) == COPY_DISTANCE, grown.stdout
    assert {i: requests_for(api, f"/images/{i}") for i in url_ids} == downloads
    assert label_studio.token not in again.stdout + again.stderr + grown.stdout + grown.stderr


def test_no_screen_copies_restores_id_and_url_dedup_only(api, label_studio, local_api, tmp_path):
    tasks = make_project(label_studio, api, local_api, "no screening", UPLOADED_PHOTOS[:1])
    project_id = tasks.pop("project")
    thumbnails_before = requests_for(api, "/thumbnails/")
    args = ("--per-task", str(PER_TASK), "--no-screen-copies", "--json")
    run = cli(project_id, api, label_studio, tmp_path / "home", *args)
    assert run.returncode == 3, run.stderr  # the broken task's search fails: exit 3, the others went through
    report = json.loads(run.stdout)
    assert list(report["failed_tasks"]) == [str(tasks["broken"])]
    assert report["copy_threshold"] is None and report["skipped_copies"] == 0 and report["copies"] == []
    assert report["task_images_fingerprinted"] == 0 and report["task_images_unreadable"] == {}
    added = new_tasks(label_studio, project_id)
    # Today's behaviour: the uploaded photo's own file comes back as a "similar" image.
    assert local_api.record(UPLOADED_PHOTOS[0]).id in {t.data["simages_id"] for t in added}
    assert all(FINGERPRINT_KEY not in t.data for t in added)
    assert requests_for(api, "/thumbnails/") == thumbnails_before  # nothing was fingerprinted
    assert not (tmp_path / "home" / STORE_FOLDER).exists()


def test_copy_options_are_documented_and_checked(api, label_studio, tmp_path):
    help_text = cli(1, api, label_studio, tmp_path, "--help").stdout
    assert "--copy-threshold BITS" in help_text and "--no-screen-copies" in help_text
    too_far = cli(1, api, label_studio, tmp_path, "--copy-threshold", "65")
    assert too_far.returncode == 2
    assert "copy threshold must be a whole number of bits from 0 to 64" in too_far.stderr
    both = cli(1, api, label_studio, tmp_path, "--copy-threshold", "3", "--no-screen-copies")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert "Traceback" not in too_far.stderr + both.stderr
