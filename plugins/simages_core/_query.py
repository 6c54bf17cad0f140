"""What one search asks for (``Query``) and what it got (``BatchItem``), validated when built.

``Query`` checks its fields with the same rule function as the wire ``SearchRequest``
(``protocol.check_request_fields``); only ``image`` differs, being any image source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ._encoding import ImageSource, check_image_source
from ._exceptions import InvalidRequest, SimilarImagesError
from ._models import SearchResult
from .protocol import LABELS_COCO_YOLOV7, check_request_fields


@dataclass(frozen=True)
class Query:
    """One search for ``search_many``: exactly one of ``url``, ``image`` or ``text``.

    ``image`` takes anything the encoder reads (path, bytes, PIL image, array);
    it is encoded in the worker thread, so encoding runs concurrently too.
    """

    url: str | None = None
    image: ImageSource | None = None
    text: str | None = None
    num_similar: int = 1
    labels: bool = False

    def __post_init__(self) -> None:
        # The same rules as SearchRequest (one function), except that ``image`` is an image
        # source here: its type is checked and a path must name a file; decoding comes later.
        if not isinstance(self.labels, bool):
            raise InvalidRequest(
                f"'labels' must be True or False, got a {type(self.labels).__name__}", field="get_labels"
            )
        check_request_fields(
            self.url,
            self.image,
            self.text,
            self.num_similar,
            LABELS_COCO_YOLOV7 if self.labels else None,
            check_image=check_image_source,
        )


QuerySpec = Query | Mapping[str, Any]
"""One item of ``search_many``: a ``Query``, or the keyword arguments of one (built when the item runs)."""

_QUERY_FIELDS = frozenset(f.name for f in fields(Query))


def query_from(spec: QuerySpec) -> Query:
    """The ``Query`` a ``search_many`` item stands for; raises ``InvalidRequest`` as building it would.

    A mapping is built here, when its item runs, not when the batch is made: one missing file
    (or any other bad field) is then that item's error and the rest of the batch runs.
    """
    if isinstance(spec, Query):
        return spec
    unknown = sorted(str(key) for key in spec if key not in _QUERY_FIELDS)
    if unknown:
        raise InvalidRequest(
            f"unknown query field(s) {', '.join(map(repr, unknown))}; a query takes "
            f"{', '.join(sorted(_QUERY_FIELDS))}"
        )
    return Query(**spec)


@dataclass(frozen=True)
class BatchItem:
    """The outcome of one ``search_many`` item: a result, or the error that item alone met."""

    query: QuerySpec
    """The ``Query`` that ran, or the item as given when no ``Query`` could be built from it."""
    result: SearchResult | None = None
    error: SimilarImagesError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
