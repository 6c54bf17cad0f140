"""``url`` queries to forbidden addresses are refused by the server before any lookup or connection.

The server's app runs in this process with a stub resolver that maps test names to the
forbidden addresses (no query names a private or link-local address itself), and the
connection watch fails any non-loopback connect and proves that each refusal connected
nowhere and asked no real resolver. The subprocess catalogue (``test_bad_input_catalogue``)
covers the loopback forms.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from connection_watch import stub_resolver as resolver_for
from connection_watch import watching_connections
from werkzeug.test import Client

from simages_server.app import ServerSettings, SimilarImagesApp
from simages_server.fetch import FetchPolicy
from simages_server.index import ImageIndex
from simages_server.keys import digests

KEY = "url-guard-key"
STUB_ADDRESSES = {
    "metadata.test": ["169.254.169.254"],
    "private.test": ["10.1.2.3"],
    "cgnat.test": ["100.64.0.1"],
    "mapped.test": ["::ffff:169.254.169.254"],
    "sixtofour.test": ["2002:a00:1::"],
    "mixed.test": ["127.0.0.1", "10.1.2.3"],  # one forbidden record refuses the name
}


stub_resolver = resolver_for(STUB_ADDRESSES)


@pytest.fixture
def app(demo_collection, tmp_path: Path) -> Client:
    _, index_dir = demo_collection
    settings = ServerSettings(
        key_digests=digests([KEY]),
        quota_path=tmp_path / "quota.sqlite",
        daily_limit=0,
        fetch=FetchPolicy(resolver=stub_resolver),
    )
    return Client(SimilarImagesApp(ImageIndex.load(index_dir), settings))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://metadata.test/latest/meta-data/", "non-public address"),
        ("http://private.test/cat.jpg", "non-public address"),
        ("http://cgnat.test/cat.jpg", "carrier-grade NAT"),
        ("http://mapped.test/", "non-public address"),
        ("http://sixtofour.test/", "6to4"),
        ("http://mixed.test/cat.jpg", "non-public address"),
        ("http://no-such-host.test/cat.jpg", "cannot be resolved"),
        ("http://[fe80::1%25lo]/", "zone id"),
    ],
)
def test_forbidden_url_is_a_400_before_any_connection(app: Client, url: str, expected: str):
    with watching_connections() as watch:
        response = app.post("/", data=json.dumps({"url": url}), headers={"x-api-key": KEY})
    assert response.status_code == 400, response.get_data(as_text=True)
    envelope = response.get_json()
    assert envelope["statusCode"] == 400
    assert expected in envelope["error"], envelope["error"]
    assert watch.connects == [] and watch.lookups == []
