"""Where the key and URL come from, in the documented order."""

from __future__ import annotations

import json

from simages_core import SimilarImagesClient, resolve_api_key, resolve_base_url


def test_key_order_argument_env_ternaus_file(monkeypatch, tmp_path):
    token_file = tmp_path / "home" / ".ternaus" / "ternaus.json"
    assert resolve_api_key() is None
    token_file.parent.mkdir(parents=True)
    token_file.write_text(json.dumps({"token": "from-file"}))
    assert resolve_api_key() == "from-file"
    monkeypatch.setenv("TERNAUS_TOKEN", "from-ternaus-env")
    assert resolve_api_key() == "from-ternaus-env"
    monkeypatch.setenv("SIMAGES_API_KEY", "from-simages-env")
    assert resolve_api_key() == "from-simages-env"
    assert resolve_api_key("explicit") == "explicit"


def test_broken_token_file_is_ignored(tmp_path):
    token_file = tmp_path / "home" / ".ternaus" / "ternaus.json"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("{not json")
    assert resolve_api_key() is None


def test_base_url_default_and_override(monkeypatch):
    assert resolve_base_url() == "https://simages.info"
    monkeypatch.setenv("SIMAGES_API_URL", "http://127.0.0.1:8080/")
    assert resolve_base_url() == "http://127.0.0.1:8080"
    assert resolve_base_url("http://other") == "http://other"


def test_repr_never_shows_the_key():
    client = SimilarImagesClient(api_key="super-secret-key", cache=False, usage=None)
    assert "super-secret-key" not in repr(client)
    assert client.has_api_key
