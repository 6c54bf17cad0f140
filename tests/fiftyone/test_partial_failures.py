"""Downloads that fail part-way: counted and reported, and no file or sample left behind.

A loopback proxy in front of the local server (``fo_proxy``, fixture ``proxy_factory``) forwards
searches and breaks some image downloads: a 404, an HTML page, and a body cut short. A host
that dies mid-import, and a failure while adding samples, are in ``test_nothing_half_written``.
"""

from __future__ import annotations

import os

import fiftyone as fo
import pytest
from fo_helpers import IMPORT_URI

import simages_fiftyone
from simages_fiftyone import DownloadPolicy

pytestmark = pytest.mark.integration


def test_failed_downloads_are_counted_and_leave_nothing_behind(
    api_env, make_dataset, proxy_factory, tmp_path
):
    from simages_core import SimilarImagesClient

    dataset = make_dataset("chelsea.jpg")
    with SimilarImagesClient(api_key=api_env.api_key, base_url=api_env.base_url, cache=False) as client:
        ids = [i.id for i in client.search(text="cat", num_similar=6).images]
    broken = {ids[1]: "404", ids[3]: "html", ids[4]: "truncated"}
    proxy = proxy_factory(broken)
    media = tmp_path / "media"
    policy = DownloadPolicy(attempts=2, backoff=0.01)
    result = simages_fiftyone.import_similar(
        dataset,
        text="cat",
        num_similar=6,
        media_dir=str(media),
        api_url=proxy.url,
        policy=policy,
        screen_copies=False,
    )
    assert (result.found, result.imported, result.failed_downloads) == (6, 3, 3)
    reasons = {f.simages_id: f.reason for f in result.failed}
    assert reasons[ids[1]] == "HTTP 404"
    assert reasons[ids[3]].startswith("not an image (content-type 'text/html')")
    assert reasons[ids[4]].startswith("not a decodable image")
    assert proxy.image_requests.count(ids[1]) == 1  # a 404 is final, not retried

    imported = dataset.match_tags(result.tag)
    assert sorted(imported.values("simages_id")) == sorted(set(ids) - set(broken))
    on_disk = sorted(os.listdir(media))
    assert on_disk == sorted(os.path.basename(p) for p in imported.values("filepath"))  # no temp files either
    assert all(os.path.isfile(p) for p in imported.values("filepath"))

    # once the images are back, a re-run imports exactly the three that failed
    proxy.broken.clear()
    again = simages_fiftyone.import_similar(
        dataset,
        text="cat",
        num_similar=6,
        media_dir=str(media),
        api_url=proxy.url,
        policy=policy,
        screen_copies=False,
    )
    assert (again.imported, again.skipped_duplicates, again.failed_downloads) == (3, 3, 0)
    assert len(dataset) == 1 + 6 and len(os.listdir(media)) == 6


def test_operator_reports_failures_in_its_run_record(
    api_env, make_dataset, proxy_factory, tmp_path, monkeypatch
):
    from simages_core import SimilarImagesClient

    dataset = make_dataset("horse.jpg")
    with SimilarImagesClient(api_key=api_env.api_key, base_url=api_env.base_url, cache=False) as client:
        ids = [i.id for i in client.search(text="horse", num_similar=3).images]
    proxy = proxy_factory({ids[0]: "404"})
    monkeypatch.setenv("SIMAGES_API_URL", proxy.url)
    fo_ctx = {
        "dataset": dataset.name,
        "params": {
            "source": "text",
            "text": "horse",
            "num_similar": 3,
            "media_dir": str(tmp_path),
            "screen_copies": False,
        },
    }
    import fiftyone.operators as foo

    foo.execute_operator(IMPORT_URI, ctx=fo_ctx)
    dataset.reload()
    key = next(k for k in dataset.list_runs() if k.startswith("simages_"))
    counts = dataset.load_run_results(key).serialize()
    assert counts["imported"] == 2 and counts["failed_downloads"] == 1
    assert counts["failures"] == [f"{ids[0]} ({proxy.url}/images/{ids[0]}): HTTP 404"]
    assert dataset.get_run_info(key).config.text == "horse"
    assert len(fo.load_dataset(dataset.name)) == 3


def test_failure_while_adding_samples_removes_the_downloaded_files(api_env, make_dataset, tmp_path):
    dataset = make_dataset("chelsea.jpg")
    sample = dataset.first()
    sample["found"] = "not detections"
    sample.save()  # `found` is now a string field, so Detections cannot be stored in it
    media = tmp_path / "media"
    with pytest.raises(Exception, match="found"):
        simages_fiftyone.import_similar(
            dataset, text="cat", num_similar=3, media_dir=str(media), label_field="found", screen_copies=False
        )
    assert len(dataset) == 1
    assert os.listdir(media) == []


def test_a_cancelled_import_leaves_no_file_and_no_sample(api_env, make_dataset, tmp_path):
    from simages_fiftyone._importing import iter_import
    from simages_fiftyone._outcomes import Progress
    from simages_fiftyone._params import build_import_options, build_params
    from simages_fiftyone._search import make_client

    dataset = make_dataset("chelsea.jpg")
    media = tmp_path / "media"
    params = build_params(text="cat", num_similar=6, labels=True)
    options = build_import_options(media_dir=str(media), screen_copies=False)
    with make_client() as client:
        run = iter_import(client, dataset, params, options)
        for event in run:
            if isinstance(event, Progress) and event.label.startswith("Downloaded"):
                break  # the user cancels after the first file arrived
        run.close()
    assert len(dataset) == 1
    assert os.listdir(media) == []


def test_a_new_dataset_that_receives_nothing_is_not_left_behind(
    api_env, make_dataset, proxy_factory, cleanup_datasets, tmp_path
):
    from simages_core import SimilarImagesClient

    dataset = make_dataset("horse.jpg")
    with SimilarImagesClient(api_key=api_env.api_key, base_url=api_env.base_url, cache=False) as client:
        ids = [i.id for i in client.search(text="horse", num_similar=2).images]
    proxy = proxy_factory({image_id: "404" for image_id in ids})
    new_name = dataset.name + "-grown"
    cleanup_datasets.append(new_name)
    media = tmp_path / "media"
    policy = DownloadPolicy(attempts=1, backoff=0.01)
    result = simages_fiftyone.import_similar(
        dataset, text="horse", num_similar=2, new_dataset_name=new_name, media_dir=str(media),
        api_url=proxy.url, policy=policy, screen_copies=False,  # the two are copies of one photo
    )  # fmt: skip
    assert (result.imported, result.failed_downloads, result.new_dataset) == (0, 2, False)
    assert not fo.dataset_exists(new_name) and not os.listdir(media)

    # the images are back: now the dataset is created, with both
    proxy.broken.clear()
    again = simages_fiftyone.import_similar(
        dataset, text="horse", num_similar=2, new_dataset_name=new_name, media_dir=str(media),
        api_url=proxy.url, policy=policy, screen_copies=False,  # the two are copies of one photo
    )  # fmt: skip
    assert (again.imported, again.new_dataset) == (2, True)
    assert sorted(fo.load_dataset(new_name).values("simages_id")) == sorted(ids)
    assert len(dataset) == 1
