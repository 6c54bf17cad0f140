"""Planning and running a search: a client for the user's key, one core query per input, merged answers.

The dataset is only read (the selected samples' files); nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import fiftyone.core.collections as foc

from simages_core import (
    HOW_TO_SET_KEY,
    Query,
    SimilarImagesClient,
    SimilarImagesError,
    redact_url,
    resolve_api_key,
)
from simages_core.fetch import Fetcher

from ._downloads import DownloadPolicy
from ._label_queries import crop_queries, find_detections
from ._outcomes import FindSimilarResult, QueryLabel
from ._param_errors import ParamError
from ._params import CopyOptions, SearchParams
from ._ranking import merge_results
from ._screening import mark_copies

FIND_THUMBNAIL_WORKERS = 16
SECRET_API_KEY = "SIMAGES_API_KEY"
SECRET_API_URL = "SIMAGES_API_URL"
HOW_TO_SET_PLUGIN_KEY = (
    f"Set the plugin secret {SECRET_API_KEY} (e.g. `export {SECRET_API_KEY}=...` before "
    f"`fiftyone app launch`), or {HOW_TO_SET_KEY}"
)


def check_api_key(api_key: str | None = None) -> str:
    """The key to use (given, else the core's resolution); no key is a ``ParamError``."""
    key = resolve_api_key(api_key)
    if key is None:
        raise ParamError("api_key", f"No Similar Images API key. {HOW_TO_SET_PLUGIN_KEY}")
    return key


def make_client(api_key: str | None = None, api_url: str | None = None) -> SimilarImagesClient:
    """A client for the given key/URL, else the core's resolution; no key is a ``ParamError``."""
    return SimilarImagesClient(api_key=check_api_key(api_key), base_url=api_url or None)


def plan_queries(collection: foc.SampleCollection, params: SearchParams) -> list[tuple[QueryLabel, Query]]:
    """One core ``Query`` per thing to search with, labelled for provenance.

    A selected detection's query is its box cropped from its sample's image (``_label_queries``).
    """
    if params.source == "text":
        return [(QueryLabel("text", params.text or ""), params.query())]
    if params.source == "url":
        # the label is provenance stored on every sample: never a URL's credentials
        return [(QueryLabel("url", redact_url(params.url or "")), params.query())]
    if params.source == "upload":
        return [(QueryLabel("upload", params.image_name or "upload"), params.query())]
    dataset = collection._dataset
    if params.source == "selected_labels":
        detections = find_detections(dataset, params.label_ids, params.label_samples)
        return crop_queries(detections, num_similar=params.num_similar, labels=params.labels)
    ids, paths = dataset.select(list(params.sample_ids)).values(["id", "filepath"])
    by_id = dict(zip(ids, paths, strict=True))
    missing = [i for i in params.sample_ids if i not in by_id]
    if missing:
        raise ParamError(params.source, f"sample(s) not in dataset {dataset.name!r}: {', '.join(missing)}")
    planned = []
    for sample_id in params.sample_ids:
        path = by_id[sample_id]
        if not os.path.isfile(path):
            raise ParamError(params.source, f"sample {sample_id} has no local image file ({path})")
        planned.append((QueryLabel("sample", sample_id), params.query(image=path)))
    return planned


def run_search(client: SimilarImagesClient, planned: Sequence[tuple[QueryLabel, Query]]) -> FindSimilarResult:
    """Run every query concurrently and merge; raises the first error only if all of them failed."""
    items = client.search_many([q for _, q in planned])
    answers, errors = [], []
    first_error: SimilarImagesError | None = None
    for (label, _), item in zip(planned, items, strict=True):
        if item.ok and item.result is not None:
            answers.append((label, item.result))
        else:
            first_error = first_error or item.error
            errors.append(f"{label}: {item.error}")
    if not answers and first_error is not None:
        raise first_error
    return FindSimilarResult(
        images=tuple(merge_results(answers)),
        queries=tuple(str(label) for label, _ in planned),
        errors=tuple(errors),
        labels=any(q.labels for _, q in planned),
    )


def find_similar_with(
    client: SimilarImagesClient,
    collection: foc.SampleCollection,
    params: SearchParams,
    copies: CopyOptions | None = None,
) -> FindSimilarResult:
    """Search and merge; then, unless ``copies`` turns it off, collapse near-duplicate results and
    mark the copies of the dataset's samples (thumbnails fetched through the guarded fetch)."""
    result = run_search(client, plan_queries(collection, params))
    copies = copies or CopyOptions()
    if not result.images or not (copies.collapse or copies.mark):
        return result
    with Fetcher(DownloadPolicy().fetch_policy(), pool_size=FIND_THUMBNAIL_WORKERS) as fetcher:
        return mark_copies(
            result,
            collection._dataset if copies.mark else None,
            fetcher,
            collapse=copies.collapse,
            threshold=copies.threshold,
        )
