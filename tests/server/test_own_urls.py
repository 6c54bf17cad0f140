"""The server's own image and thumbnail URLs are looked up under every name it is reached by (issue 18),
and every other URL still meets the guard: another port, another address, a name that merely
resolves to loopback. Names are never resolved to decide; the stub resolver maps test names to the
addresses a guard must refuse, so no query names a forbidden address itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from connection_watch import stub_resolver as resolver_for
from connection_watch import watching_connections
from werkzeug.test import Client

import simages_core as sc
from simages_server.app import ServerSettings, SimilarImagesApp
from simages_server.fetch import FetchPolicy
from simages_server.index import ImageIndex
from simages_server.keys import digests
from simages_server.own_urls import OwnOrigins, own_image_id

KEY = "own-urls-key"
ID = "0123456789abcdef"
PORT = 8765


def test_image_and_thumbnail_paths_name_an_id():
    assert own_image_id(f"/images/{ID}") == ID
    assert own_image_id(f"/thumbnails/{ID}.webp") == ID
    for other in (f"/images/{ID}/x", f"/thumbnails/{ID}", f"/thumbnails/{ID}.jpg", "/images/xyz", "/"):
        assert own_image_id(other) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""])
@pytest.mark.parametrize(
    "url",
    [
        f"http://localhost:{PORT}/images/{ID}",
        f"http://LOCALHOST:{PORT}/thumbnails/{ID}.webp",
        f"http://localhost.:{PORT}/images/{ID}",
        f"http://127.0.0.1:{PORT}/images/{ID}",
        f"http://[::1]:{PORT}/thumbnails/{ID}.webp",
        f"http://[0:0:0:0:0:0:0:1]:{PORT}/images/{ID}",
    ],
)
def test_loopback_names_are_ours_when_bound_to_loopback_or_all_addresses(host, url):
    origins = OwnOrigins.for_server(host, PORT, names_of_machine=lambda: ["box"])
    assert origins.image_id(url) == ID


@pytest.mark.parametrize(
    "url",
    [
        f"http://localhost:{PORT + 1}/images/{ID}",  # another port: another service
        f"http://localhost/images/{ID}",  # port 80
        f"http://127.0.0.2:{PORT}/images/{ID}",  # another loopback address is not a name we bound
        f"http://2130706433:{PORT}/images/{ID}",  # numeric forms are the guard's business
        f"http://user:pw@localhost:{PORT}/images/{ID}",
        f"http://other.example:{PORT}/images/{ID}",
        f"ftp://localhost:{PORT}/images/{ID}",
        f"http://localhost:{PORT}/other/{ID}",
        f"http://localhost:99999/images/{ID}",
    ],
)
def test_other_urls_are_not_ours(url):
    assert OwnOrigins.for_server("0.0.0.0", PORT, names_of_machine=lambda: ["box"]).image_id(url) is None


def test_all_addresses_add_the_machines_names_and_a_specific_address_only_itself():
    everywhere = OwnOrigins.for_server(
        "0.0.0.0", PORT, names_of_machine=lambda: ["Box", "box.lan.", "192.0.2.7"]
    )
    for host in ("box", "box.lan", "192.0.2.7", "localhost"):
        assert everywhere.image_id(f"http://{host}:{PORT}/images/{ID}") == ID
    one = OwnOrigins.for_server("192.0.2.7", PORT, names_of_machine=lambda: ["box"])
    assert one.image_id(f"http://192.0.2.7:{PORT}/images/{ID}") == ID
    for host in ("localhost", "127.0.0.1", "box"):  # bound to one interface: loopback does not reach it
        assert one.image_id(f"http://{host}:{PORT}/images/{ID}") is None


def test_the_public_url_is_ours_with_its_own_port():
    origins = OwnOrigins.for_server("127.0.0.1", PORT, "https://images.example.org/")
    assert origins.image_id(f"https://images.example.org/images/{ID}") == ID
    assert origins.image_id(f"https://images.example.org:443/thumbnails/{ID}.webp") == ID
    assert origins.image_id(f"http://images.example.org:{PORT}/images/{ID}") is None
    behind = OwnOrigins.for_server("127.0.0.1", PORT, "https://example.org/simages/")
    assert behind.image_id(f"https://example.org/simages/images/{ID}") == ID
    assert behind.image_id(f"https://example.org/simages/thumbnails/{ID}.webp") == ID
    assert behind.image_id(f"https://example.org/images/{ID}") is None
    assert behind.image_id(f"https://example.org/other/images/{ID}") is None
    assert behind.image_id(f"http://localhost:{PORT}/images/{ID}") == ID  # the bind names stay
    with pytest.raises(ValueError, match="--public-url"):
        OwnOrigins.for_server("127.0.0.1", PORT, "not a url")


# --- through the app: looked up, or refused before any connection --------------------------------

STUB_ADDRESSES = {
    "localhost": ["127.0.0.1", "::1"],
    "alias.test": ["127.0.0.1"],  # resolves to us, but is not a name we were given
    "elsewhere.test": ["10.1.2.3"],
}


stub_resolver = resolver_for(STUB_ADDRESSES)


@pytest.fixture
def app(demo_collection, tmp_path: Path) -> Client:
    _, index_dir = demo_collection
    settings = ServerSettings(
        key_digests=digests([KEY]),
        quota_path=tmp_path / "quota.sqlite",
        fetch=FetchPolicy(resolver=stub_resolver),
        own_origins=OwnOrigins.for_server("127.0.0.1", PORT),
    )
    return Client(SimilarImagesApp(ImageIndex.load(index_dir), settings))


def _post(app: Client, url: str):
    # The client reached the server as 127.0.0.1:8765; the URL may name it otherwise.
    return app.post(
        "/", data=json.dumps({"url": url, "num_similar": 3}), headers={"x-api-key": KEY},
        base_url=f"http://127.0.0.1:{PORT}",
    )  # fmt: skip


def _first_id(response) -> str:
    return json.loads(response.get_json()["body"])["images"][0]["id"]


def test_own_urls_under_other_names_are_looked_up_without_any_connection(app: Client, demo_collection):
    _, index_dir = demo_collection
    record = ImageIndex.load(index_dir).records[0]
    with watching_connections() as watch:
        for url in (
            f"http://localhost:{PORT}/images/{record.id}",
            f"http://[::1]:{PORT}/thumbnails/{record.id}.webp",
            f"http://127.0.0.1:{PORT}/thumbnails/{record.id}.webp",
        ):
            response = _post(app, url)
            assert response.status_code == 200, response.get_data(as_text=True)
            assert _first_id(response) == record.id
    assert watch.connects == [] and watch.lookups == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (f"127.0.0.1:{PORT + 1}", "non-public address"),  # our address, another port
        (f"localhost:{PORT + 1}", "non-public address"),
        (f"127.0.0.2:{PORT}", "non-public address"),  # our port, another address
        (f"alias.test:{PORT}", "non-public address"),  # a name resolving to us is still refused
        (f"elsewhere.test:{PORT}", "non-public address"),
    ],
)
def test_every_other_url_still_meets_the_guard(app: Client, demo_collection, host: str, expected: str):
    _, index_dir = demo_collection
    record = ImageIndex.load(index_dir).records[0]
    with watching_connections() as watch:
        response = _post(app, f"http://{host}/images/{record.id}")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert expected in response.get_json()["error"]
    assert watch.connects == []  # refused before any connection: not fetched, and not looked up


@pytest.mark.integration
def test_a_client_on_127_0_0_1_searches_by_localhost_urls_and_thumbnails(local_api):
    """The reported case: client on http://127.0.0.1:PORT, ``--url http://localhost:PORT/images/<id>``."""
    port = local_api.base_url.rsplit(":", 1)[1]
    record = local_api.record("coffee.jpg")
    with sc.SimilarImagesClient(
        api_key=local_api.api_key, base_url=local_api.base_url, cache=False, usage=None
    ) as c:
        by_name = c.search(url=f"http://localhost:{port}/images/{record.id}", num_similar=3)
        assert by_name.images[0].id == record.id
        thumbnail = by_name.images[0].thumbnail_url
        assert thumbnail is not None and thumbnail.startswith(local_api.base_url)
        by_thumbnail = c.search(url=thumbnail.replace("127.0.0.1", "localhost"), num_similar=3)
        assert by_thumbnail.images[0].id == record.id
        assert c.search(url=thumbnail, num_similar=3).images[0].id == record.id
