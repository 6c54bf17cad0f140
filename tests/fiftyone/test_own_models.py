"""The FiftyOne plugin imports Detections from a local server that runs the user's own models."""

from __future__ import annotations

import fiftyone as fo
import pytest
from fo_helpers import unique_name
from model_fixtures import SCENES, index_with_own_models, scene

import simages_fiftyone
from simages_core.boxes import to_fiftyone
from simages_server.testing import ServerProcess

pytestmark = pytest.mark.integration


def test_import_similar_brings_the_detectors_boxes(tmp_path, monkeypatch, cleanup_datasets):
    own = index_with_own_models(tmp_path / "own")
    query = tmp_path / "query.png"
    scene("cyan_cat.png").resize((240, 320)).save(query)
    dataset = fo.Dataset(unique_name("simages-own"))
    cleanup_datasets.append(dataset.name)
    dataset.add_sample(fo.Sample(filepath=str(query)))
    monkeypatch.setenv("SIMAGES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIMAGES_CACHE", "0")
    with ServerProcess(own.index_dir, state=tmp_path, log_path=tmp_path / "server.log") as server:
        result = simages_fiftyone.import_similar(
            dataset,
            sample_ids=dataset.values("id"),
            num_similar=2,
            media_dir=str(tmp_path / "media"),
            api_key=server.api_key,
            api_url=server.url,
            screen_copies=False,  # the query's own scene comes first: its boxes are what is checked
        )
    assert result.imported == 2 and not result.failed
    first = dataset.match_tags(result.tag).sort_by("simages_rank").first()
    (width, height), _, objects = SCENES["cyan_cat.png"]
    (name, box) = objects[0]
    (detection,) = first.detections.detections
    assert detection.label == name == "cat"
    assert detection.bounding_box == pytest.approx(to_fiftyone(box, width, height), abs=2.0 / 480)
