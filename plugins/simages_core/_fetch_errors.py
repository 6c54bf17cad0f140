"""Every way a guarded fetch (``simages_core.fetch``) can fail, one class per failure mode.

``FetchError`` sits under ``SimilarImagesError`` so a caller that already handles the core's
errors handles these too, but it is not an ``ApiError``: no API answered. ``str(error)`` is
the detail for logs and trusted callers; ``public_message`` is all an untrusted caller gets.
Messages never hold a fetched body or URL credentials.
"""

from __future__ import annotations

from ._addresses import redact_text
from ._exceptions import SimilarImagesError

COULD_NOT_FETCH = "could not be fetched"


class FetchError(SimilarImagesError):
    """Root of the fetch errors; the message completes "the URL ..." (e.g. "answered HTTP 404")."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(redact_text(message), status=status)

    @property
    def public_message(self) -> str:
        """What an untrusted caller may be told: nothing about what the target answered."""
        return COULD_NOT_FETCH


class FetchRefused(FetchError):
    """Refused before any connection: scheme, host form, an address outside the policy, no DNS answer."""

    @property
    def public_message(self) -> str:
        return self.message  # our own validation of the caller's input, no target was contacted


class FetchConnectError(FetchError):
    """The vetted address could not be connected to (refused, reset, TLS failure), after retries."""


class FetchTimeout(FetchError):
    """A connect or read took longer than ``timeout``, or the whole fetch longer than ``deadline``."""


class FetchHTTPError(FetchError):
    """The final answer was not 200 (after retries for 429/5xx); ``status`` is that answer's."""


class FetchTooManyRedirects(FetchError):
    """More than ``max_redirects`` redirects."""


class FetchContentTypeError(FetchError):
    """The ``Content-Type`` is not one the policy accepts (``image/*`` by default)."""

    def __init__(self, message: str, *, content_type: str = "") -> None:
        super().__init__(message)
        self.content_type = content_type
        """What the target declared (``""`` when it declared nothing)."""


class FetchTooLarge(FetchError):
    """The body (declared or streamed) is larger than ``max_bytes``."""


class FetchInterrupted(FetchError):
    """The body broke off mid-transfer, also on the second attempt."""
