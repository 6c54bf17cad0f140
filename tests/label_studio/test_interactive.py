"""Interactive pre-annotation over real HTTP: ``/predict`` with the drawn regions Label Studio 1.23 sent.

The payloads in ``data/interactive_*.json`` were recorded from a real labelling session
(``test_interactive_browser.py`` records the rectangles again with ``SIMAGES_UPDATE_SCREENSHOTS=1``):
an annotator drew a box on the coffee cup with "Person" selected, then one on a brick wall with
"Cat" selected, and clicked a smart keypoint on the cup. They are replayed here against the
backend process and the local server, the task image on a loopback server that counts downloads.
"""

from __future__ import annotations

import copy
import functools
import http.server
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from PIL import Image

from .conftest import start_backend

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"
IMAGE_PLACEHOLDER = "{IMAGE_URL}"


def team_photo(images_dir: Path, out: Path) -> Path:
    """A photo no index holds (1351x400): the cat, the coffee cup and a brick wall side by side."""
    with (
        Image.open(images_dir / "chelsea.jpg") as cat,
        Image.open(images_dir / "coffee.jpg") as coffee,
        Image.open(images_dir / "brick.jpg") as brick,
    ):
        canvas = Image.new("RGB", (cat.width + coffee.width + 300, max(cat.height, coffee.height)), "white")
        canvas.paste(cat, (0, 0))
        canvas.paste(coffee, (cat.width, 0))
        canvas.paste(brick.convert("RGB").crop((0, 0, 300, canvas.height)), (cat.width + coffee.width, 0))
    canvas.save(out, quality=90)
    return out


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves task images to Label Studio's page (with CORS) and to the backend, counting GETs per path."""

    counts: ClassVar[Counter[str]]

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def do_GET(self) -> None:
        self.counts[self.path] += 1
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class ImageServer:
    url: str
    folder: Path
    counts: Counter[str]


def serve_images(folder: Path) -> tuple[ImageServer, http.server.ThreadingHTTPServer]:
    counts: Counter[str] = Counter()
    handler = type("Handler", (_CountingHandler,), {"counts": counts})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return ImageServer(f"http://127.0.0.1:{server.server_address[1]}", folder, counts), server


def scrub(body: dict[str, Any], image_url: str) -> dict[str, Any]:
    """A recorded ``/predict`` body fit to commit: no credentials, the task image URL a placeholder."""
    body = copy.deepcopy(body)
    params = body.get("params") or {}
    for key in ("login", "password"):
        if params.get(key) is not None:
            params[key] = "***"
    text = json.dumps(body).replace(image_url, IMAGE_PLACEHOLDER)
    return json.loads(text)


def replayed(name: str, image_url: str, task_id: int | None = None) -> list[dict[str, Any]]:
    """The recorded bodies of ``data/<name>.json``, pointing at ``image_url`` (and ``task_id``)."""
    bodies = json.loads((DATA / f"{name}.json").read_text().replace(IMAGE_PLACEHOLDER, image_url))
    for body in bodies:
        for task in body["tasks"]:
            task["id"] = task_id if task_id is not None else task["id"]
    return bodies


@pytest.fixture(scope="module")
def images(local_api, tmp_path_factory) -> Iterator[ImageServer]:
    folder = tmp_path_factory.mktemp("task-images")
    photo = team_photo(local_api.images_dir, folder / "team.jpg")
    for n in range(3):  # more tasks with the same picture, for the once-per-task count
        (folder / f"team{n}.jpg").write_bytes(photo.read_bytes())
    server, http_server = serve_images(folder)
    yield server
    http_server.shutdown()


@pytest.fixture(scope="module")
def backend(local_api, tmp_path_factory) -> Iterator:
    process = start_backend(
        tmp_path_factory.mktemp("backend"),
        local_api.base_url,
        local_api.api_key,
        SIMAGES_ALLOW_URL_NETWORKS="127.0.0.0/8",
    )
    yield process
    process.stop()


def api_requests(backend) -> int:
    return requests.get(f"{backend.url}/metrics", timeout=5).json()["api_requests_today"]


def post(backend, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{backend.url}/predict", json=body, timeout=60)


def only_region(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    (answer,) = response.json()["results"]
    (region,) = answer["result"]
    assert answer["score"] == region["score"]
    return region


def drawn(body: dict[str, Any]) -> dict[str, Any]:
    (region,) = body["params"]["context"]["result"]
    return region


def test_a_drawn_box_gets_the_label_its_similar_images_vote_for(backend, images):
    url = f"{images.url}/team.jpg"
    cup, brick = replayed("interactive_rectangle", url)
    before = api_requests(backend)

    region = only_region(post(backend, cup))
    sent = drawn(cup)
    # The same rectangle comes back (Label Studio replaces the drawn one by its id), relabelled.
    assert sent["value"]["rectanglelabels"] == ["Person"]
    assert region["id"] == sent["id"] and region["type"] == "rectanglelabels"
    assert (region["from_name"], region["to_name"]) == (sent["from_name"], sent["to_name"])
    assert (region["original_width"], region["original_height"]) == (
        sent["original_width"],
        sent["original_height"],
    )
    for key in ("x", "y", "width", "height", "rotation"):
        assert region["value"][key] == sent["value"][key], key
    assert region["value"]["rectanglelabels"] == ["Mug"]
    # The coffee photos' cup covers more of them than their spoon: about 0.72 of the vote.
    assert 0.6 < region["score"] < 0.8

    # The brick wall: nothing the project labels. The box stays, unlabelled, with the reason.
    region = only_region(post(backend, brick))
    assert region["id"] == drawn(brick)["id"]
    assert region["value"]["rectanglelabels"] == []
    assert region["score"] == 0.0
    assert region["meta"]["text"] == ["Similar Images: no similar image shows an object this project labels"]

    assert api_requests(backend) - before == 2  # one search per drawn box
    assert images.counts["/team.jpg"] == 1  # one download for the task, kept for its next box


def test_each_task_image_is_downloaded_once_and_a_resent_box_is_not_searched_again(backend, images):
    before = api_requests(backend)
    for n in range(3):
        cup, brick = replayed("interactive_rectangle", f"{images.url}/team{n}.jpg", task_id=100 + n)
        assert only_region(post(backend, cup))["value"]["rectanglelabels"] == ["Mug"]
        # Label Studio sends every unaccepted region of a label with the next one: the cup again.
        both = copy.deepcopy(brick)
        both["params"]["context"]["result"].insert(0, drawn(cup))
        answer = post(backend, both).json()["results"][0]
        assert [r["value"]["rectanglelabels"] for r in answer["result"]] == [["Mug"], []]
    assert api_requests(backend) - before == 6
    assert [images.counts[f"/team{n}.jpg"] for n in range(3)] == [1, 1, 1]


def test_a_smart_keypoint_labels_the_object_under_it(backend, images):
    (body,) = replayed("interactive_keypoint", f"{images.url}/team.jpg")
    sent = drawn(body)
    assert sent["type"] == "keypointlabels" and sent["value"]["keypointlabels"] == ["Cat"]
    region = only_region(post(backend, body))
    assert region["id"] == sent["id"] and region["type"] == "keypointlabels"
    assert (region["value"]["x"], region["value"]["y"]) == (sent["value"]["x"], sent["value"]["y"])
    assert region["value"]["keypointlabels"] == ["Mug"]
    assert "labels" not in region["value"]  # the generic key it came with is not left saying "Cat"
    # The answer is not an error about the config: KeyPointLabels is served interactively.
    assert "warnings" not in post(backend, body).json()


def test_no_label_reaching_the_threshold_says_which_came_closest(local_api, images, tmp_path):
    strict = start_backend(
        tmp_path / "strict",
        local_api.base_url,
        local_api.api_key,
        SIMAGES_ALLOW_URL_NETWORKS="127.0.0.0/8",
        SIMAGES_REGION_THRESHOLD="0.9",
    )
    try:
        cup, _ = replayed("interactive_rectangle", f"{images.url}/team.jpg")
        region = only_region(post(strict, cup))
    finally:
        strict.stop()
    assert region["value"]["rectanglelabels"] == []
    assert 0.6 < region["score"] < 0.8
    (note,) = region["meta"]["text"]
    assert note.startswith("Similar Images: no label reached 90% of the vote (closest: Mug at 7"), note


def _with_region(body: dict[str, Any], change) -> dict[str, Any]:
    body = copy.deepcopy(body)
    change(body["params"]["context"]["result"][0])
    return body


def _set(path: str, value: Any):
    def change(region: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = region
        for key in parents:
            target = target[key]
        if value is _MISSING:
            del target[last]
        else:
            target[last] = value

    return change


_MISSING = object()
BAD_REGIONS = {
    "x is a string": (_set("value.x", "10"), "value.x must be a number"),
    "x is a boolean": (_set("value.x", True), "value.x must be a number"),
    "x is huge": (_set("value.x", 1e300), "value.x must be a finite percentage"),
    "box right of the image": (_set("value.x", 150.0), "lies outside the image"),
    "box above the image": (_set("value.y", -90.0), "lies outside the image"),
    "negative width": (_set("value.width", -5.0), "positive width and height"),
    "no original size": (_set("original_width", _MISSING), "original_width must be the image's pixel size"),
    "huge original size": (_set("original_height", 10**12), "original_height must be the image's pixel size"),
    "unknown type": (_set("type", "polygonlabels"), ".type must be one of"),
    "value not an object": (
        _set("value", [1, 2]),
        "coordinates in params.context.result[0].value, got a JSON array",
    ),
    "id not a string": (_set("id", 7), ".id must be a non-empty string"),
}


@pytest.mark.parametrize("case", BAD_REGIONS, ids=list(BAD_REGIONS))
def test_a_malformed_drawn_region_is_a_clear_400(backend, images, case):
    change, message = BAD_REGIONS[case]
    cup, _ = replayed("interactive_rectangle", f"{images.url}/team.jpg")
    response = post(backend, _with_region(cup, change))
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    "context, message",
    [
        ({"result": "a box"}, "'params.context.result' must be a list"),
        ({"result": [1]}, "expected a JSON object with a drawn region"),
        ("drawn", "expected a JSON object with the drawn regions"),
        ({"result": [{}] * 101}, "at most 100"),
    ],
)
def test_a_malformed_context_is_a_clear_400(backend, images, context, message):
    cup, _ = replayed("interactive_rectangle", f"{images.url}/team.jpg")
    cup["params"]["context"] = context
    response = post(backend, cup)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_regions_that_cannot_be_searched_get_an_error_entry(backend, images):
    cup, _ = replayed("interactive_rectangle", f"{images.url}/team.jpg")
    tiny = _with_region(cup, _set("value.width", 0.1))  # 1 pixel wide: nothing to search with
    (answer,) = post(backend, tiny).json()["results"]
    assert "result" not in answer and "too small to search with" in answer["error"]
    other = _with_region(cup, _set("from_name", "nothing"))
    (answer,) = post(backend, other).json()["results"]
    assert "'nothing' is not a RectangleLabels or KeyPointLabels" in answer["error"]
    gone = copy.deepcopy(cup)
    gone["tasks"][0]["data"]["image"] = f"{images.url}/missing.jpg"
    (answer,) = post(backend, gone).json()["results"]
    assert answer["error"].endswith(f"could not fetch '{images.url}/missing.jpg'"), answer


def test_a_refused_api_key_is_said_once_for_the_request(local_api, images, tmp_path):
    refused = start_backend(
        tmp_path / "refused", local_api.base_url, "not-a-key", SIMAGES_ALLOW_URL_NETWORKS="127.0.0.0/8"
    )
    try:
        cup, _ = replayed("interactive_rectangle", f"{images.url}/team.jpg")
        response = post(refused, cup)
    finally:
        refused.stop()
    assert response.status_code in (401, 403), response.text
    assert "InvalidApiKey" in response.json()["error"] and "not-a-key" not in response.text
