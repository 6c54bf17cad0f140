"""simages_core: the Similar Images API (simages.info) as typed Python, shared by every integration.

Public API; implementation modules are private (``_client``, ``_models``, ...);
``protocol`` (the wire contract shared with the local server), ``boxes``, ``coco``, ``fetch`` (the
one guarded way to download a URL) and ``identity`` (is an image a copy of one we have?) are public modules.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

try:
    # One version for every package of the distribution: the one in pyproject.toml.
    __version__ = _distribution_version("simages-plugins")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from ._budget import FREE_REQUESTS_PER_DAY, RequestBudget, budget_for
from ._cache import ResponseCache
from ._client import SimilarImagesClient
from ._config import HOW_TO_SET_KEY, RetryPolicy, Timeouts, resolve_api_key, resolve_base_url
from ._encoding import EncodedImage, encode_image, open_image
from ._exceptions import (
    ApiError,
    ConnectError,
    DecodingError,
    ImageEncodingError,
    InvalidApiKey,
    InvalidRequest,
    MissingApiKey,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    ServerError,
    SharedStoreUnavailable,
    SimilarImagesError,
    TransportError,
)
from ._models import Box, Detection, SearchResult, SimilarImage
from ._query import BatchItem, Query
from ._usage import DailyUsage, UsageLedger
from .fetch import FetchError, FetchPolicy, redact_url
from .identity import (
    COPY_DISTANCE,
    CopyIndex,
    CopyMatch,
    Fingerprint,
    FingerprintCache,
    FingerprintError,
    ThumbnailFingerprints,
    fingerprint,
    fingerprint_results,
)
from .protocol import DEFAULT_API_URL, LABELS_COCO_YOLOV7, MAX_NUM_SIMILAR, SearchRequest

__all__ = [
    "COPY_DISTANCE",
    "DEFAULT_API_URL",
    "FREE_REQUESTS_PER_DAY",
    "HOW_TO_SET_KEY",
    "LABELS_COCO_YOLOV7",
    "MAX_NUM_SIMILAR",
    "ApiError",
    "BatchItem",
    "Box",
    "ConnectError",
    "CopyIndex",
    "CopyMatch",
    "DailyUsage",
    "DecodingError",
    "Detection",
    "EncodedImage",
    "FetchError",
    "FetchPolicy",
    "Fingerprint",
    "FingerprintCache",
    "FingerprintError",
    "ImageEncodingError",
    "InvalidApiKey",
    "InvalidRequest",
    "MissingApiKey",
    "Query",
    "QuotaExceeded",
    "RateLimited",
    "RequestBudget",
    "RequestTimeout",
    "ResponseCache",
    "RetryPolicy",
    "SearchRequest",
    "SearchResult",
    "ServerError",
    "SharedStoreUnavailable",
    "SimilarImage",
    "SimilarImagesClient",
    "SimilarImagesError",
    "ThumbnailFingerprints",
    "Timeouts",
    "TransportError",
    "UsageLedger",
    "__version__",
    "budget_for",
    "encode_image",
    "fingerprint",
    "fingerprint_results",
    "open_image",
    "redact_url",
    "resolve_api_key",
    "resolve_base_url",
]
