"""The plugin's Python entry points, ``find_similar(...)``, ``import_similar(...)`` and ``expand_dataset(...)``.

They run the same code as the operators (``_params`` → ``_search`` / ``_importing`` /
``_expanding``), with typed results instead of App output. A ``ParamError`` names the Python parameter
(``image``, ``sample_ids``, ``label_ids``), not the form's input (``python_names``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from typing import Any

import fiftyone.core.collections as foc

from simages_core import SimilarImagesClient
from simages_core.identity import COPY_DISTANCE

from ._downloads import DownloadPolicy
from ._expanding import iter_expand
from ._importing import drain, iter_import
from ._outcomes import ExpandResult, FindSimilarResult, ImportSimilarResult, Progress
from ._param_errors import python_names
from ._params import build_copy_options, build_expand_params, build_import_options, build_params
from ._search import find_similar_with, make_client


@contextmanager
def _client_for(
    client: SimilarImagesClient | None, api_key: str | None, api_url: str | None
) -> Iterator[SimilarImagesClient]:
    """The caller's client as it is, or one made for this call and closed after it."""
    if client is not None:
        yield client
        return
    with make_client(api_key, api_url) as own:
        yield own


def find_similar(
    dataset_or_view: foc.SampleCollection,
    *,
    text: str | None = None,
    url: str | None = None,
    image: bytes | str | os.PathLike[str] | None = None,
    sample_ids: Sequence[str] | str | None = None,
    label_ids: Sequence[str] | str | None = None,
    num_similar: int = 10,
    labels: bool = False,
    collapse_copies: bool = True,
    mark_copies: bool = True,
    copy_threshold: int = COPY_DISTANCE,
    api_key: str | None = None,
    api_url: str | None = None,
    client: SimilarImagesClient | None = None,
) -> FindSimilarResult:
    """Find images similar to a text, an image URL, an image (path or bytes), samples of the dataset
    or detections of the dataset.

    Exactly one of ``text``, ``url``, ``image``, ``sample_ids``, ``label_ids`` is given. With
    ``label_ids``, each detection's box (with a small margin) is cut from its sample's image and
    searched; ``RankedImage.query.region`` says which detection found a result. Several samples
    or detections are searched concurrently and their results merged by API image id. The
    dataset is not changed.
    Results are compared by fingerprint (from their thumbnails): ``collapse_copies`` keeps one
    per group of near-duplicates (``RankedImage.copies`` lists the others), ``mark_copies`` sets
    ``RankedImage.copy_of`` to the id of a dataset sample the result is a copy of.
    """
    with python_names():
        params = build_params(
            text=text,
            url=url,
            image=image,
            sample_ids=sample_ids,
            label_ids=label_ids,
            num_similar=num_similar,
            labels=labels,
        )
        copies = build_copy_options(collapse=collapse_copies, mark=mark_copies, threshold=copy_threshold)
        with _client_for(client, api_key, api_url) as search_client:
            return find_similar_with(search_client, dataset_or_view, params, copies)


def import_similar(
    dataset_or_view: foc.SampleCollection,
    *,
    text: str | None = None,
    url: str | None = None,
    image: bytes | str | os.PathLike[str] | None = None,
    sample_ids: Sequence[str] | str | None = None,
    label_ids: Sequence[str] | str | None = None,
    num_similar: int = 10,
    labels: bool = True,
    media_dir: str | None = None,
    new_dataset_name: str | None = None,
    label_field: str = "detections",
    classes: Sequence[str] | None = None,
    min_confidence: float = 0.0,
    screen_copies: bool = True,
    copy_threshold: int = COPY_DISTANCE,
    api_key: str | None = None,
    api_url: str | None = None,
    client: SimilarImagesClient | None = None,
    policy: DownloadPolicy | None = None,
    progress: Callable[[Progress], Any] | None = None,
) -> ImportSimilarResult:
    """Find similar images and add them as new samples (into this dataset or ``new_dataset_name``).

    The query is one of ``text``, ``url``, ``image``, ``sample_ids`` or ``label_ids`` (detections,
    each box cut from its sample's image; the new samples' ``simages_query_*`` fields and the run
    record say which detection found them).

    Files go to ``media_dir`` (default: ``<fo.config.default_dataset_dir>/<dataset>/simages``,
    never beside the dataset's own media). Images already imported (same API id or source URL)
    are skipped and counted; with ``screen_copies`` (default) so are copies of the target's
    samples and of each other (fingerprints within ``copy_threshold`` bits), the target's
    samples being fingerprinted once into ``simages_fingerprint``. The run is recorded on the
    target (``result.run_key``), as the operator records it.
    """
    with python_names():
        params = build_params(
            text=text,
            url=url,
            image=image,
            sample_ids=sample_ids,
            label_ids=label_ids,
            num_similar=num_similar,
            labels=labels,
        )
        options = build_import_options(
            media_dir=media_dir,
            new_dataset_name=new_dataset_name,
            label_field=label_field,
            classes=classes,
            min_confidence=min_confidence,
            policy=policy,
            screen_copies=screen_copies,
            copy_threshold=copy_threshold,
        )
        with _client_for(client, api_key, api_url) as search_client:
            return drain(iter_import(search_client, dataset_or_view, params, options), progress)


def expand_dataset(
    view_or_dataset: foc.SampleCollection,
    per_sample: int = 5,
    *,
    labels: bool = True,
    max_requests: int | None = None,
    media_dir: str | None = None,
    new_dataset_name: str | None = None,
    label_field: str = "detections",
    classes: Sequence[str] | None = None,
    min_confidence: float = 0.0,
    screen_copies: bool = True,
    copy_threshold: int = COPY_DISTANCE,
    batch_size: int = 128,
    max_workers: int = 16,
    api_key: str | None = None,
    api_url: str | None = None,
    client: SimilarImagesClient | None = None,
    policy: DownloadPolicy | None = None,
    progress: Callable[[Progress], Any] | None = None,
) -> ExpandResult:
    """Search with every sample of the view (or dataset) and add up to ``per_sample`` similar images each.

    New images are deduplicated across the run and against the target (this dataset, or
    ``new_dataset_name``) by API id and source URL and, with ``screen_copies``, by fingerprint
    (copies of the target's samples or of each other are skipped), and added batch by batch with their files,
    detections and provenance. The run is recorded on the dataset: called again with the same
    arguments (``max_requests``, ``batch_size`` and ``max_workers`` aside), it continues where an
    interrupted or capped run stopped. ``max_requests`` caps the requests this call sends.
    """
    with python_names():
        params = build_expand_params(
            per_sample=per_sample,
            labels=labels,
            max_requests=max_requests,
            batch_size=batch_size,
            max_workers=max_workers,
        )
        options = build_import_options(
            media_dir=media_dir,
            new_dataset_name=new_dataset_name,
            label_field=label_field,
            classes=classes,
            min_confidence=min_confidence,
            policy=policy,
            screen_copies=screen_copies,
            copy_threshold=copy_threshold,
        )
        with (
            _client_for(client, api_key, api_url) as search_client,
            closing(iter_expand(search_client, view_or_dataset, params, options)) as events,
        ):
            return drain(events, progress)
