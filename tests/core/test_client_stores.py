"""Response cache and usage ledger around a real client: failures never fail a search, answers stay per account."""

from __future__ import annotations

import base64
import logging
import sqlite3
from pathlib import Path

import pytest

import simages_core as sc
from simages_core._usage import UsageEvent

from .conftest import SAMPLE_BODY, make_client


class _FullDiskCache(sc.ResponseCache):
    """A real cache whose storage fails the way SQLite does on a full disk or a held lock."""

    def get(self, scope, request):
        raise sqlite3.OperationalError("database is locked")

    def put(self, scope, request, result):
        raise sqlite3.OperationalError("database or disk is full")


class _BrokenLedger(sc.UsageLedger):
    def record(self, event: UsageEvent, day=None) -> None:
        raise sqlite3.OperationalError("database or disk is full")


def _warnings(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def test_cache_failures_are_logged_once_and_never_fail_a_search(scripted_api, tmp_path, caplog):
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    caplog.set_level(logging.DEBUG, logger="simages_core")
    with make_client(scripted_api, cache=_FullDiskCache(tmp_path / "cache")) as client:
        results = [client.search(text="cat") for _ in range(3)]
        today = client.usage_today()
    assert all(len(r) == 2 and not r.from_cache for r in results)  # a failed read is a miss
    assert len(scripted_api.received) == 3 and today.sent == 3
    (read_warning,) = _warnings(caplog, "response cache read failed")
    (write_warning,) = _warnings(caplog, "response cache write failed")
    assert "database is locked" in read_warning.getMessage()
    assert "disk is full" in write_warning.getMessage()


def test_ledger_failure_never_fails_a_billed_search(scripted_api, tmp_path, caplog):
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    caplog.set_level(logging.WARNING, logger="simages_core")
    with make_client(scripted_api, usage=_BrokenLedger(tmp_path / "usage")) as client:
        assert len(client.search(text="cat")) == 2
        assert len(client.search(text="dog")) == 2
    (warning,) = _warnings(caplog, "usage ledger write failed")
    assert "disk is full" in warning.getMessage()


def test_corrupt_cache_file_means_no_cache_not_a_broken_client(scripted_api, tmp_path, caplog):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "cache.db").write_bytes(b"this is not an SQLite database" * 100)
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    caplog.set_level(logging.WARNING, logger="simages_core")
    with make_client(scripted_api, cache=folder) as client:
        assert client.cache is None
        assert len(client.search(text="cat")) == 2 and len(client.search(text="cat")) == 2
    assert len(scripted_api.received) == 2
    (warning,) = _warnings(caplog, "response cache (open) failed")
    assert "DatabaseError" in warning.getMessage()


def test_corrupt_ledger_file_falls_back_to_counting_in_memory(scripted_api, tmp_path):
    folder = tmp_path / "usage"
    folder.mkdir()
    (folder / "cache.db").write_bytes(b"garbage" * 1000)
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    with make_client(scripted_api, usage=folder) as client:
        client.search(text="cat")
        assert client.usage_today().sent == 1


def _files_contain(folder: Path, needle: str) -> bool:
    return any(needle.encode() in path.read_bytes() for path in folder.rglob("*") if path.is_file())


def test_cached_answers_are_not_shared_between_api_keys(local_api, tmp_path):
    keys = ("first-account-key", "second-account-key")
    cache_dir = tmp_path / "cache"
    server = local_api.start_server(tmp_path / "server", api_keys=keys)  # already started
    try:

        def client(key: str) -> sc.SimilarImagesClient:
            return sc.SimilarImagesClient(api_key=key, base_url=server.url, cache=cache_dir, usage=None)

        with client(keys[0]) as first, client(keys[1]) as second:
            assert not first.search(text="cat", num_similar=3).from_cache
            assert not second.search(text="cat", num_similar=3).from_cache  # another account: sent
            assert first.search(text="cat", num_similar=3).from_cache
            assert second.search(text="cat", num_similar=3).from_cache
            assert (first.usage_today().sent, second.usage_today().sent) == (1, 1)
    finally:
        server.stop()
    assert len(sc.ResponseCache(cache_dir)) == 2
    assert not any(_files_contain(cache_dir, key) for key in keys)  # a digest, never the key


def test_url_credentials_become_basic_auth_and_are_never_shown_or_stored(scripted_api, tmp_path, caplog):
    scripted_api.script(scripted_api.success(SAMPLE_BODY))
    caplog.set_level(logging.DEBUG)
    host = scripted_api.url.removeprefix("http://")
    url = f"http://gate-user:gate-s3cret@{host}"
    with make_client(scripted_api, base_url=url, cache=tmp_path / "cache") as client:
        assert client.base_url == scripted_api.url
        assert "gate-s3cret" not in repr(client)
        client.search(text="cat")
        assert client.search(text="cat").from_cache
    expected = "Basic " + base64.b64encode(b"gate-user:gate-s3cret").decode()
    assert scripted_api.received[0].headers["authorization"] == expected
    assert not _files_contain(tmp_path / "cache", "gate-s3cret")
    assert "gate-s3cret" not in caplog.text


def test_url_credentials_stay_out_of_error_messages(tmp_path):
    client = sc.SimilarImagesClient(
        api_key="k", base_url="http://user:pw-s3cret@127.0.0.1:9", cache=False, usage=None,
        retry=sc.RetryPolicy(attempts=0),
    )  # fmt: skip
    with client, pytest.raises(sc.ConnectError) as info:
        client.search(text="cat")
    assert "pw-s3cret" not in str(info.value) and "127.0.0.1:9" in str(info.value)
    with pytest.raises(ValueError, match="http") as bad:
        sc.SimilarImagesClient(api_key="k", base_url="ftp://user:pw-s3cret@host/")
    assert "pw-s3cret" not in str(bad.value)
