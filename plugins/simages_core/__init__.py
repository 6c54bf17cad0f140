"""simages_core: the Similar Images API (simages.info) as typed Python, shared by every integration.

Public API; implementation modules are private (``_client``, ``_protocol``, ...).
"""

__version__ = "0.1.0"

from ._cache import ResponseCache
from ._client import BatchItem, Query, SimilarImagesClient
from ._config import RetryPolicy, Timeouts, resolve_api_key, resolve_base_url
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
    SimilarImagesError,
    TransportError,
)
from ._models import Box, Detection, SearchResult, SimilarImage
from ._protocol import DEFAULT_API_URL, LABELS_COCO_YOLOV7, MAX_NUM_SIMILAR, SearchRequest
from ._usage import DailyUsage, UsageLedger

__all__ = [
    "DEFAULT_API_URL",
    "LABELS_COCO_YOLOV7",
    "MAX_NUM_SIMILAR",
    "ApiError",
    "BatchItem",
    "Box",
    "ConnectError",
    "DailyUsage",
    "DecodingError",
    "Detection",
    "EncodedImage",
    "ImageEncodingError",
    "InvalidApiKey",
    "InvalidRequest",
    "MissingApiKey",
    "Query",
    "QuotaExceeded",
    "RateLimited",
    "RequestTimeout",
    "ResponseCache",
    "RetryPolicy",
    "SearchRequest",
    "SearchResult",
    "ServerError",
    "SimilarImage",
    "SimilarImagesClient",
    "SimilarImagesError",
    "Timeouts",
    "TransportError",
    "UsageLedger",
    "__version__",
    "encode_image",
    "open_image",
    "resolve_api_key",
    "resolve_base_url",
]
