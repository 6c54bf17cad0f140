"""Expanding a dataset (``expand_dataset`` and its operator) against a real local server and real FiftyOne.

Requests are counted in the server's own log (one ``POST /`` line per search), so "nothing
sent twice" and "exactly N requests" are what the server saw, not what the client believes.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fiftyone.operators.executor import resolve_type
from fiftyone.operators.registry import OperatorRegistry

import simages_fiftyone
from simages_core import SimilarImagesClient
from simages_core.identity import COPY_DISTANCE
from simages_fiftyone import ExpandResult, ParamError, Progress
from simages_fiftyone._importing import default_media_dir

pytestmark = pytest.mark.integration

EXPAND_URI = "@simages/similar-images/expand_dataset"
FILES = (
    "astronaut.jpg",
    "chelsea.jpg",
    "coffee.jpg",
    "horse.jpg",
    "motorcycle_left.jpg",
    "clock.jpg",
    "camera.jpg",
    "rocket.jpg",
)


class Interrupted(Exception):
    """Raised by a test's progress callback: the run is stopped between two batches."""


def searches(log_path: Path) -> int:
    """Search requests the server has answered so far (its log has one line per request)."""
    if not log_path.exists():
        return 0
    return sum(1 for line in log_path.read_text(encoding="utf-8").splitlines() if " POST / " in line)


@pytest.fixture
def server(api_env, tmp_path, monkeypatch):
    """A server of our own over the demo index, so its log holds only this test's requests."""
    with api_env.start_server(tmp_path / "server") as own:
        monkeypatch.setenv("SIMAGES_API_URL", own.url)
        yield own


@pytest.fixture
def files(api_env) -> tuple[str, ...]:
    names = set(os.listdir(api_env.images_dir))
    missing = [f for f in FILES if f not in names]
    assert not missing, f"demo collection changed: {missing}"
    return FILES


def expected_images(server, api_env, names, per_sample: int) -> set[str]:
    """The API ids the expansion must add: every answer of every query sample (what the server gives)."""
    with SimilarImagesClient(api_key=api_env.api_key, base_url=server.url, cache=False, usage=None) as client:
        items = client.search_many(
            [
                simages_fiftyone._params.ExpandParams(per_sample).query(str(api_env.images_dir / n))
                for n in names
            ]
        )
    return {image.id for item in items for image in item.result.images}


def imported_ids(dataset: fo.Dataset, tag: str) -> list[str]:
    dataset.reload()
    return dataset.match_tags(tag).values("simages_id")


def test_expand_adds_every_answer_once_with_labels_and_provenance(
    server, api_env, make_dataset, files, tmp_path
):
    dataset = make_dataset(*files)
    query_ids = set(dataset.values("id"))
    want = expected_images(server, api_env, files, 3)
    before = searches(server.log_path)
    result = simages_fiftyone.expand_dataset(
        dataset, 3, media_dir=str(tmp_path / "media"), batch_size=3, screen_copies=False
    )
    assert isinstance(result, ExpandResult) and result.complete and result.stopped is None
    assert searches(server.log_path) - before == len(files) == result.requests_this_run
    got = imported_ids(dataset, result.tag)
    assert sorted(got) == sorted(want)  # every answer, each once, merged across batches
    assert result.found == 3 * len(files) and result.imported == len(want)
    assert result.skipped_duplicates == result.found - len(want)
    imported = dataset.match_tags(result.tag)
    records = {r.id: r for r in api_env.records()}
    for sample in imported:
        assert sample.simages_query.startswith("sample:") and sample.simages_query[7:] in query_ids
        assert 1 <= sample.simages_rank <= 3
        assert os.path.isfile(sample.filepath) and Path(sample.filepath).parent == tmp_path / "media"
        assert sample.metadata.width == records[sample.simages_id].width
    with_boxes = [s for s in imported if s.detections is not None and s.detections.detections]
    assert with_boxes, "labels are on by default"
    assert sorted(os.listdir(tmp_path / "media")) == sorted(
        os.path.basename(p) for p in imported.values("filepath")
    )

    # The same call again: the run is complete, nothing is searched or imported.
    again = simages_fiftyone.expand_dataset(
        dataset, 3, media_dir=str(tmp_path / "media"), screen_copies=False
    )
    assert (
        again.resumed
        and again.complete
        and again.requests_this_run == 0
        and again.imported == result.imported
    )
    assert searches(server.log_path) - before == len(files)
    assert len(dataset) == len(files) + len(want)


def test_an_interrupted_run_resumes_and_adds_every_item_exactly_once(
    server, api_env, make_dataset, files, tmp_path
):
    dataset = make_dataset(*files)
    want = expected_images(server, api_env, files, 4)
    before = searches(server.log_path)
    media = str(tmp_path / "media")
    updates: list[Progress] = []

    def stop_after_two_batches(event: Progress) -> None:
        updates.append(event)
        if len(updates) == 3:  # the start, then two batches
            raise Interrupted

    with pytest.raises(Interrupted):
        simages_fiftyone.expand_dataset(
            dataset,
            4,
            media_dir=media,
            batch_size=2,
            max_workers=2,
            progress=stop_after_two_batches,
            screen_copies=False,
        )
    run_keys = [k for k in dataset.list_runs() if k.startswith("simages_expand_")]
    assert len(run_keys) == 1
    record = dataset.load_run_results(run_keys[0], cache=False).serialize()
    assert len(record["done"]) == 4  # two batches of two were committed and recorded
    tag = record["tag"]
    first = imported_ids(dataset, tag)
    assert 0 < len(first) < len(want) and len(first) == len(set(first))
    # The third batch was already screened and downloading when the run stopped: none of its
    # files is left behind, only those of the samples that went in.
    assert sorted(os.listdir(media)) == sorted(
        os.path.basename(p) for p in dataset.match_tags(tag).values("filepath")
    )
    sent_first = searches(server.log_path) - before

    result = simages_fiftyone.expand_dataset(
        dataset, 4, media_dir=media, batch_size=2, max_workers=2, screen_copies=False
    )
    assert result.resumed and result.complete and result.tag == tag
    assert result.requests_this_run == len(files) - 4  # only the samples not recorded as done
    assert searches(server.log_path) - before == sent_first + result.requests_this_run
    got = imported_ids(dataset, tag)
    assert Counter(got) == Counter(want)  # every expected item, exactly once
    assert result.imported == len(want)
    assert sorted(os.listdir(media)) == sorted(
        os.path.basename(p) for p in dataset.match_tags(tag).values("filepath")
    )


def test_the_cap_stops_at_exactly_n_requests_and_a_higher_cap_continues(
    server, api_env, make_dataset, files, tmp_path
):
    dataset = make_dataset(*files)
    media = str(tmp_path / "media")
    before = searches(server.log_path)
    capped = simages_fiftyone.expand_dataset(
        dataset, 2, media_dir=media, max_requests=5, batch_size=3, screen_copies=False
    )
    assert searches(server.log_path) - before == 5
    assert capped.stopped == "cap" and not capped.complete
    assert (capped.queries_done, capped.queries_total, capped.requests_this_run) == (5, len(files), 5)
    assert "stopped at the request cap" in capped.summary() and "5/8" in capped.summary()

    rest = simages_fiftyone.expand_dataset(
        dataset, 2, media_dir=media, max_requests=100, batch_size=3, screen_copies=False
    )
    assert rest.complete and rest.requests_this_run == len(files) - 5
    assert searches(server.log_path) - before == len(files)
    got = imported_ids(dataset, capped.tag)
    assert len(got) == len(set(got)) == rest.imported


def test_a_failing_batch_is_rolled_back_alone_and_the_rerun_completes(
    server, api_env, make_dataset, files, tmp_path
):
    """Adding batch 2 fails (another writer took one of its images): batch 1 stays, batch 2 leaves nothing."""
    dataset = make_dataset(*files[:4])
    media = tmp_path / "media"
    dataset.add_sample_field("simages_id", fo.StringField)
    dataset.create_index("simages_id", unique=True, sparse=True)
    with SimilarImagesClient(api_key=api_env.api_key, base_url=server.url, cache=False, usage=None) as client:
        answers = [
            {i.id for i in client.search(image=api_env.images_dir / n, num_similar=3).images}
            for n in files[:4]
        ]
    second_only = sorted((answers[2] | answers[3]) - answers[0] - answers[1])
    assert second_only, "the demo queries should find different images"
    other = str(api_env.images_dir / "rocket.jpg")
    updates: list[Progress] = []

    def concurrent_writer(event: Progress) -> None:
        updates.append(event)
        if len(updates) == 2:  # batch 1 is in: another import adds one of batch 2's images
            dataset.add_sample(fo.Sample(filepath=other, simages_id=second_only[0], tags=["other-run"]))

    # The other writer's sample is no query sample of this expansion: the view leaves it out.
    view = dataset.match_tags("other-run", bool=False)
    with pytest.raises(ValueError, match="duplicate key"):
        simages_fiftyone.expand_dataset(
            view,
            3,
            media_dir=str(media),
            batch_size=2,
            max_workers=2,
            progress=concurrent_writer,
            screen_copies=False,
        )
    key = next(k for k in dataset.list_runs() if k.startswith("simages_expand_"))
    record = dataset.load_run_results(key, cache=False).serialize()
    first = imported_ids(dataset, record["tag"])
    assert sorted(first) == sorted(answers[0] | answers[1])  # batch 1 whole, nothing of batch 2
    assert len(record["done"]) == 2
    assert sorted(os.listdir(media)) == sorted(
        os.path.basename(p) for p in dataset.match_tags(record["tag"]).values("filepath")
    )

    result = simages_fiftyone.expand_dataset(
        view, 3, media_dir=str(media), batch_size=2, max_workers=2, screen_copies=False
    )
    assert result.resumed and result.complete and result.requests_this_run == 2
    got = imported_ids(dataset, record["tag"])
    assert Counter(got) == Counter(set().union(*answers) - {second_only[0]})
    assert dataset.match_tags("other-run").values("simages_id") == [second_only[0]]


def test_an_exhausted_quota_stops_the_run_and_says_why(api_env, make_dataset, files, tmp_path, monkeypatch):
    dataset = make_dataset(*files)
    with api_env.start_server(tmp_path / "server", daily_limit=3) as limited:
        monkeypatch.setenv("SIMAGES_API_URL", limited.url)
        result = simages_fiftyone.expand_dataset(dataset, 2, media_dir=str(tmp_path / "m"), batch_size=4)
        # the first batch met the quota; the second was already in flight, nothing after it was sent
        assert searches(limited.log_path) <= 8
    assert result.stopped and "quota" in result.stopped.lower()
    assert result.queries_done == 3 and result.failed_queries >= 1
    assert "stopped:" in result.summary()


def test_samples_imported_by_the_run_are_never_queries(server, api_env, make_dataset, files, tmp_path):
    dataset = make_dataset(*files[:3])
    first = simages_fiftyone.expand_dataset(dataset, 2, media_dir=str(tmp_path / "m"), screen_copies=False)
    assert first.queries_total == 3 and first.imported > 0
    new_sample = fo.Sample(filepath=str(api_env.images_dir / files[3]))
    dataset.add_sample(new_sample)  # the dataset grows: a re-run searches only the new sample
    before = searches(server.log_path)
    more = simages_fiftyone.expand_dataset(dataset, 2, media_dir=str(tmp_path / "m"), screen_copies=False)
    assert more.queries_total == 4 and more.requests_this_run == 1 == searches(server.log_path) - before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_sample": 0}, "per_sample: similar images per sample"),
        ({"per_sample": 51}, "per_sample"),
        ({"max_requests": -1}, "max_requests must be a whole number 0 or more"),
        ({"max_requests": 2.5}, "max_requests"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_workers": 1000}, "max_workers must be a whole number from 1 to 64"),
        ({"label_field": "simages_id"}, "reserved"),
        (
            {"copy_threshold": 65},
            "copy_threshold: copy threshold must be a whole number of bits from 0 to 64",
        ),
        ({"copy_threshold": -1}, "copy_threshold"),
        ({"copy_threshold": 2.5}, "copy_threshold"),
    ],
)
def test_bad_arguments_name_what_is_wrong(api_env, make_dataset, kwargs, message):
    dataset = make_dataset("chelsea.jpg")
    with pytest.raises(ParamError, match=message):
        simages_fiftyone.expand_dataset(dataset, **kwargs)
    assert len(dataset) == 1 and not dataset.list_runs()


def form(dataset, params: dict) -> dict:
    prop = asyncio.run(
        resolve_type(OperatorRegistry(), EXPAND_URI, {"dataset_name": dataset.name, "params": params})
    )
    return prop.to_json()["type"]["properties"]


def test_form_shows_the_budget_before_running(server, api_env, make_dataset, files, tmp_path):
    dataset = make_dataset(*files)
    props = form(dataset, {"per_sample": 3})
    assert props["per_sample"]["default"] == 5 and props["labels"]["default"] is True
    assert {
        "max_requests",
        "label_field",
        "target",
        "media_dir",
        "delegate",
        "screen_copies",
        "copy_threshold",
    } <= set(props)
    assert props["screen_copies"]["default"] is True and props["copy_threshold"]["default"] == COPY_DISTANCE
    assert default_media_dir(dataset.name) in props["media_dir"]["view"]["description"]
    notice = props["budget"]["view"]["label"]
    assert f"{len(files)} request(s)" in notice and "beyond today's 100 free" in notice
    capped = form(dataset, {"per_sample": 3, "max_requests": 2})["budget"]["view"]["label"]
    assert "capped at 2 of 8" in capped
    bad = form(dataset, {"per_sample": 60})
    assert bad["per_sample"]["invalid"] and "1 to 50" in bad["per_sample"]["error_message"]
    assert searches(server.log_path) == 0  # the form sends nothing


def test_operator_runs_immediately_and_delegated(server, api_env, make_dataset, files, tmp_path):
    from fiftyone.operators.delegated import DelegatedOperationService

    dataset = make_dataset(*files[:2])
    params = {"per_sample": 2, "media_dir": str(tmp_path / "m"), "screen_copies": False}
    foo.execute_operator(EXPAND_URI, ctx={"dataset": dataset.name, "params": params})
    dataset.reload()
    key = next(k for k in dataset.list_runs() if k.startswith("simages_expand_"))
    record = dataset.load_run_results(key, cache=False).serialize()
    assert len(record["done"]) == 2 and record["imported"] == len(dataset) - 2 > 0

    other = make_dataset(*files[2:4])
    queued = foo.execute_operator(
        EXPAND_URI,
        ctx={"dataset": other.name, "params": {**params, "delegate": True}, "request_delegation": True},
    )
    assert queued.delegated and len(other) == 2
    service = DelegatedOperationService()
    service.execute_queued_operations(operator=EXPAND_URI, dataset_name=other.name)
    other.reload()
    ops = service.list_operations(operator=EXPAND_URI, dataset_name=other.name)
    assert [op.run_state for op in ops] == ["completed"]
    assert len(other) > 2 and all(
        q.startswith("sample:") for q in other.exists("simages_id").values("simages_query")
    )


def test_the_record_round_trips_and_the_result_says_how_far_it_got():
    from simages_fiftyone._expand_record import ExpandRecord

    record = ExpandRecord(
        tag="simages-x", done={"b", "a"}, requests=3, imported=2, errors=["sample:c: no file"]
    )
    assert record.to_results()["done"] == ["a", "b"]
    assert ExpandRecord.from_results(record.to_results()) == record
    base = {
        "dataset_name": "d",
        "tag": "t",
        "run_key": "k",
        "media_dir": "m",
        "found": 9,
        "skipped_duplicates": 1,
    }
    capped = ExpandResult(
        **base, queries_total=10, queries_done=4, requests_this_run=4, imported=8, stopped="cap"
    )
    assert not capped.complete and capped.summary() == (
        "4/10 samples searched, 8 imported; stopped at the request cap after 4 request(s): run again to continue"
    )
    done = ExpandResult(**base, queries_total=4, queries_done=4, requests_this_run=0, imported=8)
    assert done.complete and done.to_dict()["summary"] == "4/4 samples searched, 8 imported"
    failed = ExpandResult(
        **base, queries_total=4, queries_done=3, requests_this_run=4, imported=8, failed_queries=1
    )
    assert not failed.complete and "run again to retry them" in failed.summary()
