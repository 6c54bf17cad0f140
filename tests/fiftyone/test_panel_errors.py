"""The Similar Images panel says what went wrong, in the panel, and keeps nothing half done.

No key, a server that is down, the free requests used up, a sample that cannot be read, an import
that fails part-way: each is a message in the panel (never a traceback, never the key), and the
panel goes on working. Driven as the App drives it (``PanelDriver``), against real servers.
"""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo
import pytest
from test_panel_state import PanelDriver, server_searches

from simages_server.testing import free_port

pytestmark = [pytest.mark.integration]


@pytest.fixture
def two_photos(make_dataset) -> fo.Dataset:
    return make_dataset("chelsea.jpg", "horse.jpg")


def test_no_key_is_said_in_the_panel(api_env, two_photos, monkeypatch, tmp_path):
    monkeypatch.delenv("SIMAGES_API_KEY")
    monkeypatch.delenv("TERNAUS_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ternaus/ternaus.json either
    panel = PanelDriver(two_photos)
    before = server_searches(api_env)
    panel.call("on_load", current_sample=two_photos.first().id)
    assert panel.error is not None and panel.error.startswith(
        "No Similar Images API key. Set the plugin secret"
    )
    assert not panel.state["rows"] and server_searches(api_env) == before
    assert panel.usage == "Requests sent by this panel: 0"


def test_a_server_that_is_down_is_said_in_the_panel(api_env, two_photos, monkeypatch):
    monkeypatch.setenv("SIMAGES_API_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    panel = PanelDriver(two_photos)
    panel.call("on_load", current_sample=two_photos.first().id)
    assert panel.error is not None and panel.error.startswith("The Similar Images API cannot be reached")
    assert api_env.api_key not in panel.error and not panel.state["rows"]


def test_quota_used_up_is_said_and_answers_seen_before_stay_available(
    api_env, two_photos, monkeypatch, tmp_path
):
    first, second = two_photos.values("id")
    with api_env.start_server(tmp_path / "limited", daily_limit=1) as limited:
        monkeypatch.setenv("SIMAGES_API_URL", limited.url)
        panel = PanelDriver(two_photos)
        panel.call("on_load", current_sample=first)
        assert panel.error is None and panel.ids
        shown = panel.ids

        panel.call("on_change_current_sample", current_sample=second)
        assert panel.error is not None and panel.error.startswith("Today's free requests are used up")
        assert not panel.state["rows"]  # never the previous sample's neighbours under this one

        panel.call("on_change_current_sample", current_sample=first)
        assert panel.error is None and panel.ids == shown


def test_an_unreadable_sample_is_said_in_the_panel(api_env, make_dataset, tmp_path):
    dataset = make_dataset("chelsea.jpg")
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not an image", encoding="utf-8")
    missing = tmp_path / "gone.jpg"
    broken, gone = dataset.add_samples(
        [fo.Sample(filepath=str(not_an_image)), fo.Sample(filepath=str(missing))]
    )
    panel = PanelDriver(dataset)
    panel.call("on_load", current_sample=broken)
    assert panel.error is not None and panel.error.startswith("The search failed:"), panel.error
    assert not panel.state["rows"]
    panel.call("on_change_current_sample", current_sample=gone)
    assert panel.error == f"sample {gone} has no local image file ({missing})"
    panel.call("on_change_current_sample", current_sample=dataset.first().id)
    assert panel.error is None and panel.ids


def test_an_import_that_fails_part_way_leaves_nothing(api_env, two_photos, monkeypatch, tmp_path):
    cat_sample = two_photos.first()
    panel = PanelDriver(two_photos)
    panel.state["num_similar"] = 20
    panel.call("on_load", current_sample=cat_sample.id)
    rows = [r for r in panel.state["rows"] if "copy of sample" not in r["notes"]][:3]
    assert len(rows) == 3
    # One sample per insert; the third ticked image's thumbnail URL is taken under a unique index
    # (a constraint of the user's own, which the import does not check), so the third insert fails
    # after two went in.
    monkeypatch.setattr(fo.config, "default_batcher", "static")
    monkeypatch.setattr(fo.config, "batcher_static_size", 1)
    two_photos.add_sample_field("simages_thumbnail_url", fo.StringField)
    two_photos.create_index("simages_thumbnail_url", unique=True, sparse=True)
    taken = fo.Sample(filepath=str(api_env.images_dir / "coins.jpg"))
    thumbs = {k[2:]: v["thumb"] for k, v in panel.state["cards"].items()}
    taken["simages_thumbnail_url"] = thumbs[rows[2]["id"]]
    two_photos.add_sample(taken)
    before = set(two_photos.values("id"))
    media = Path(fo.config.default_dataset_dir)
    files_before = {p for p in media.rglob("*") if p.is_file()}
    for row in rows:
        panel.tick(row["id"], current_sample=cat_sample.id)

    panel.call("import_selected", current_sample=cat_sample.id)

    assert panel.error is not None
    assert panel.error.startswith("The import failed and nothing of it was kept: Unexpected error ("), (
        panel.error
    )
    assert api_env.api_key not in panel.error
    two_photos.reload()
    assert set(two_photos.values("id")) == before  # the two samples that went in were taken back
    assert {p for p in media.rglob("*") if p.is_file()} == files_before  # and their files
    assert panel.ops == [] and not panel.state.get("imported")
