"""Every failure the Similar Images core can raise, one class per failure mode.

Callers catch ``SimilarImagesError`` (or a subclass) and never see a transport
library's exception types: ``_client`` maps them here in one place. No
exception ever carries the API key; messages come from the server or from our
own validation.
"""

from __future__ import annotations


class SimilarImagesError(Exception):
    """Root of every error raised by ``simages_core``."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"[{self.status}] {self.message}"


# --- errors the API answers with (documented status codes) -----------------


class ApiError(SimilarImagesError):
    """The API answered with an error status; ``status`` and ``message`` are the server's."""


class InvalidRequest(ApiError):
    """400: the request is malformed. Also raised before any network call by local validation.

    ``field`` names what was wrong, so an integration can point at its own input:

    - ``"url"``, ``"image"``, ``"text"``: that query value (``image`` covers a missing
      file, an unreadable or undecodable image and an unsupported type);
    - ``"url/image/text"``: not exactly one of the three was given;
    - ``"num_similar"``: not an integer from 1 to 50;
    - ``"get_labels"``: not ``"coco_yolov7"`` (``Query.labels`` not a bool);
    - ``None``: the server's 400 did not say which.
    """

    def __init__(self, message: str, *, status: int | None = 400, field: str | None = None) -> None:
        super().__init__(message, status=status)
        self.field = field


class MissingApiKey(ApiError):
    """401: no API key was sent (or none could be found locally)."""


class QuotaExceeded(ApiError):
    """402: the free daily limit is used up and the account has no balance."""


class InvalidApiKey(ApiError):
    """403: the API key is not valid."""


class RateLimited(ApiError):
    """429: too many requests; raised only once retries are exhausted."""


class ServerError(ApiError):
    """5xx, or any other status the protocol does not document; raised once retries are exhausted."""


# --- errors on our side of the wire ------------------------------------------


class TransportError(SimilarImagesError):
    """The request never got an HTTP answer (after retries)."""


class ConnectError(TransportError):
    """The API host could not be reached."""


class RequestTimeout(TransportError):
    """Connecting or reading took longer than the configured timeout."""


class DecodingError(SimilarImagesError):
    """The API answered, but the body is not the documented shape; the message says what was wrong."""


class ImageEncodingError(InvalidRequest):
    """An input image could not be read or encoded (not an image, truncated, a decompression bomb)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None, field="image")


_ERROR_FOR_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: MissingApiKey,
    402: QuotaExceeded,
    403: InvalidApiKey,
    429: RateLimited,
}


def error_for_status(status: int, message: str) -> ApiError:
    """The exception for an API error status, carrying the server's message."""
    cls = _ERROR_FOR_STATUS.get(status, ServerError)
    return cls(message, status=status)


class SharedStoreUnavailable(SimilarImagesError):
    """``SIMAGES_CACHE_URL`` is set but its Redis did not answer when the client was made."""


class SharedStoreError(SimilarImagesError):
    """A Redis call of the shared cache or ledger failed (the client logs it and carries on)."""
