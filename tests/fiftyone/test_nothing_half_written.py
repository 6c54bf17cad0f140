"""An import is all or nothing for what it writes, and never writes over what others wrote.

- adding the samples fails after FiftyOne inserted a first batch: the run's samples (found by
  its tag) and its files are removed, a concurrent writer's sample stays;
- a file name that is taken gets a new name, the existing file is left as it was;
- the image host dies mid-import: the images it served are imported, the rest are failed
  downloads, and no temp file, orphan file or half sample is left.
"""

from __future__ import annotations

import os
from pathlib import Path

import fiftyone as fo
import pytest
from PIL import Image
from pymongo.errors import BulkWriteError

import simages_fiftyone
from simages_core import SimilarImagesClient
from simages_fiftyone import DownloadPolicy, Progress
from simages_fiftyone._downloads import safe_stem

pytestmark = pytest.mark.integration


def api_ids(api_env, text: str, n: int) -> list[str]:
    """The ids the local server answers for ``text``, in rank order (what the import will find)."""
    with SimilarImagesClient(api_key=api_env.api_key, base_url=api_env.base_url, cache=False) as client:
        return [i.id for i in client.search(text=text, num_similar=n).images]


def test_failure_after_the_first_batch_removes_the_runs_samples_and_files(
    api_env, make_dataset, tmp_path, monkeypatch
):
    dataset = make_dataset("chelsea.jpg")
    ids = api_ids(api_env, "cat", 5)
    # Batches of 2: ranks 1-2, then 3-4 (rank 4 collides), then 5.
    monkeypatch.setattr(fo.config, "default_batcher", "static")
    monkeypatch.setattr(fo.config, "batcher_static_size", 2)
    dataset.add_sample_field("simages_id", fo.StringField)
    dataset.create_index("simages_id", unique=True, sparse=True)
    other = str(api_env.images_dir / "horse.jpg")
    media = tmp_path / "media"

    def concurrent_writer(event: Progress) -> None:
        # Another import adds rank 4's image after this run checked for duplicates, before it adds.
        if event.label == "Downloaded 5/5":
            dataset.add_sample(fo.Sample(filepath=other, simages_id=ids[3], tags=["other-run"]))

    with pytest.raises(ValueError, match="duplicate key") as info:
        simages_fiftyone.import_similar(
            dataset,
            text="cat",
            num_similar=5,
            media_dir=str(media),
            progress=concurrent_writer,
            screen_copies=False,
        )
    cause = info.value.__cause__
    assert isinstance(cause, BulkWriteError)  # FiftyOne re-raises the database's error
    assert cause.details["nInserted"] == 1  # rank 3 went in with the failing batch, ranks 1-2 before
    dataset.reload()
    assert sorted(dataset.values("filepath")) == sorted([str(api_env.images_dir / "chelsea.jpg"), other])
    assert dataset.match_tags("other-run").values("simages_id") == [ids[3]]
    assert not [t for t in dataset.distinct("tags") if t.startswith("simages-")]
    assert sorted(os.listdir(media)) == []  # none of the run's files, no temp file
    assert os.path.isfile(other)


def test_a_taken_file_name_gets_a_new_name_and_the_old_file_is_kept(
    api_env, make_dataset, cleanup_datasets, tmp_path
):
    dataset = make_dataset("horse.jpg")
    ids = api_ids(api_env, "horse", 2)
    media = tmp_path / "media"
    media.mkdir()
    taken = media / f"{safe_stem(ids[0])}.jpg"
    Image.new("RGB", (3, 2), "blue").save(taken, format="JPEG")
    before = taken.read_bytes()
    elsewhere = fo.Dataset(dataset.name + "-elsewhere")
    cleanup_datasets.append(elsewhere.name)
    elsewhere.add_sample(fo.Sample(filepath=str(taken)))  # another dataset's sample points at it

    result = simages_fiftyone.import_similar(
        dataset, text="horse", num_similar=2, media_dir=str(media), screen_copies=False
    )
    assert result.imported == 2
    assert taken.read_bytes() == before
    paths = dict(zip(*dataset.match_tags(result.tag).values(["simages_id", "filepath"]), strict=True))
    assert Path(paths[ids[0]]).name == f"{safe_stem(ids[0])}-1.jpg"
    with Image.open(paths[ids[0]]) as image:
        assert image.size != (3, 2)  # the downloaded image, not the blue square
    assert Path(paths[ids[1]]).name == f"{safe_stem(ids[1])}.jpg"
    assert sorted(os.listdir(media)) == sorted([taken.name, *(Path(p).name for p in paths.values())])


def test_an_image_host_dying_mid_import_fails_the_rest_and_keeps_what_it_served(
    api_env, make_dataset, proxy_factory, tmp_path
):
    dataset = make_dataset("chelsea.jpg")
    proxy = proxy_factory({}, die_after=2)
    media = tmp_path / "media"
    policy = DownloadPolicy(attempts=2, backoff=0.01, connect_timeout=2, read_timeout=5)
    result = simages_fiftyone.import_similar(
        dataset,
        text="cat",
        num_similar=6,
        media_dir=str(media),
        api_url=proxy.url,
        policy=policy,
        screen_copies=False,
    )
    assert proxy.dead.is_set() and proxy.served_images == 2
    assert (result.found, result.imported, result.failed_downloads) == (6, 2, 4)
    assert all(f.reason.startswith(("connection failed", "transfer failed")) for f in result.failed), (
        result.failed
    )
    imported = dataset.match_tags(result.tag)
    assert len(imported) == 2 and len(dataset) == 3
    assert sorted(os.listdir(media)) == sorted(os.path.basename(p) for p in imported.values("filepath"))
    for path in imported.values("filepath"):
        with Image.open(path) as image:
            image.verify()  # complete files only
