"""Backend settings come from the environment and fail loudly, naming the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from simages_label_studio.settings import BackendSettings


def test_defaults(monkeypatch):
    for name in ("SIMAGES_LABEL_MAP", "SIMAGES_TOP_K", "LABEL_STUDIO_URL", "BASIC_AUTH_USER"):
        monkeypatch.delenv(name, raising=False)
    s = BackendSettings()
    assert (s.near_duplicate_score, s.top_k, s.max_workers, s.cache) == (0.9, 5, 16, True)
    assert s.label_map == {} and s.basic_auth is None


def test_values_and_label_map_from_the_environment(monkeypatch):
    monkeypatch.setenv("SIMAGES_TOP_K", "7")
    monkeypatch.setenv("SIMAGES_CACHE", "false")
    monkeypatch.setenv("SIMAGES_LABEL_MAP", '{"Vehicle": "Car, truck", "Animal": ["cat", "dog"]}')
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://ls.example:8080/")
    monkeypatch.setenv("BASIC_AUTH_USER", "u")
    monkeypatch.setenv("BASIC_AUTH_PASS", "p")
    s = BackendSettings()
    assert s.top_k == 7 and s.cache is False
    assert s.label_map == {"Vehicle": ["car", "truck"], "Animal": ["cat", "dog"]}
    assert s.label_studio_url == "http://ls.example:8080" and s.basic_auth == ("u", "p")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SIMAGES_TOP_K", "0", "SIMAGES_TOP_K"),
        ("SIMAGES_NEAR_DUPLICATE_SCORE", "1.5", "SIMAGES_NEAR_DUPLICATE_SCORE"),
        ("SIMAGES_LABEL_MAP", "{not json", "not valid JSON"),
        ("SIMAGES_LABEL_MAP", '["car"]', "must be a JSON object"),
        ("SIMAGES_LABEL_MAP", '{"Vehicle": ["car", "spaceship"]}', "not COCO classes: ['spaceship']"),
        ("LABEL_STUDIO_URL", "ls.example:8080", "must start with http"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        BackendSettings()
    assert message in str(info.value)


def test_secrets_are_not_shown(monkeypatch):
    monkeypatch.setenv("SIMAGES_API_KEY", "sk-very-secret")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "ls-very-secret")
    monkeypatch.setenv("BASIC_AUTH_USER", "u")
    monkeypatch.setenv("BASIC_AUTH_PASS", "pw-very-secret")
    shown = repr(BackendSettings()) + str(BackendSettings())
    assert "very-secret" not in shown
