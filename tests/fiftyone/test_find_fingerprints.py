"""The dataset fingerprints a search compares with: read once, and read again as soon as the dataset changes."""

from __future__ import annotations

import shutil

import fiftyone as fo

from simages_fiftyone._find_fingerprints import FINGERPRINT_FIELD, dataset_fingerprints


def test_the_index_is_kept_while_the_dataset_is_unchanged(make_dataset) -> None:
    dataset = make_dataset("astronaut.jpg", "coffee.jpg")
    first, unscreened = dataset_fingerprints(dataset, 12)
    assert (len(first), unscreened) == (2, 0)
    again, _ = dataset_fingerprints(dataset, 12)
    assert again is first  # nothing read or hashed again
    assert dataset_fingerprints(dataset, 8)[0] is not first  # another threshold, another index
    assert not dataset.has_sample_field(FINGERPRINT_FIELD)  # a search writes nothing


def test_added_edited_and_deleted_samples_are_seen_at_once(make_dataset, local_api, tmp_path) -> None:
    dataset = make_dataset("astronaut.jpg", "coffee.jpg")
    before, _ = dataset_fingerprints(dataset, 12)
    copy = tmp_path / "chelsea-copy.jpg"
    shutil.copy(local_api.images_dir / "chelsea.jpg", copy)
    dataset.add_sample(fo.Sample(filepath=str(copy)))
    added, _ = dataset_fingerprints(dataset, 12)
    assert added is not before and len(added) == 3
    sample = dataset.first()
    sample["note"] = "edited"  # any edit moves the samples' last_modified_at
    sample.save()
    edited, _ = dataset_fingerprints(dataset, 12)
    assert edited is not added and len(edited) == 3
    dataset.delete_samples(sample)
    assert len(dataset_fingerprints(dataset, 12)[0]) == 2
    dataset.clear()
    assert dataset_fingerprints(dataset, 12) == (dataset_fingerprints(dataset, 12)[0], 0)
    assert len(dataset_fingerprints(dataset, 12)[0]) == 0
