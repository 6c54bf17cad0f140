"""Where a task's image is, and how the API gets it.

- An http(s) URL outside Label Studio is sent to the API as ``url``; the API fetches it.
- Anything Label Studio hosts (uploads ``/data/upload/...``, local storage
  ``/data/local-files/?d=...``, cloud storage ``s3://``/``gs://``/``azure-blob://``, or a URL on
  ``LABEL_STUDIO_URL`` itself) is downloaded from Label Studio with its URL and key and sent as
  ``image``. label-studio-sdk's ``get_local_path`` does that resolution (it knows every storage
  kind and Label Studio's endpoints); the Label Studio key goes only to Label Studio's host.

Boxes need the task image's pixel size (to check the aspect ratio and to fill
``original_width``/``original_height``). For a URL, ``probe_size`` reads just the
header bytes, streaming, instead of the whole image, through the core's guarded
fetch: anyone who can create tasks names these URLs, so by default only public
addresses are reached (plus ``SIMAGES_ALLOW_URL_NETWORKS``; the API's own host is
trusted), and the caller learns "could not fetch", never what the target answered.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jwt
import requests
from label_studio_sdk._extensions.label_studio_tools.core.utils.io import get_local_path, http_session
from PIL import Image, ImageFile
from requests.adapters import HTTPAdapter

from simages_core.fetch import (
    FetchContentTypeError,
    Fetcher,
    FetchError,
    FetchHTTPError,
    FetchPolicy,
    FetchRefused,
    FetchTooLarge,
    Resolver,
    redact_url,
)

MAX_PROBE_BYTES = 16 * 1024 * 1024
_HOSTED_PREFIXES = ("/data/", "data/", "/upload/", "upload/", "/storage-data/", "storage-data/")
_CLOUD_SCHEMES = ("s3", "gs", "azure-blob", "azure-spi")
_EXIF_ORIENTATION = 0x0112


# Content types a probe accepts: object stores often serve images as octet-stream; Pillow decides.
_PROBE_TYPES = ("image/*", "application/octet-stream", "binary/octet-stream")


class TaskImageError(Exception):
    """A task's image cannot be found, fetched or read; the message says which and why.

    ``str(error)`` is the detail for the backend's log; ``public_message`` is what the task's
    error entry (seen by whoever made the task) may say: for a fetch, not what the target answered.
    """

    def __init__(self, message: str, *, public_message: str | None = None) -> None:
        super().__init__(message)
        self.public_message = public_message or message


@dataclass(frozen=True)
class TaskImage:
    """A task image, ready for a query: exactly one of ``url`` or ``data``."""

    url: str | None = None
    data: bytes | None = None
    size: tuple[int, int] | None = None


class _TimeoutSession(requests.Session):
    """A session whose requests cannot hang: the SDK's downloader passes no timeout of its own.

    One per resolver and purpose, with a connection pool as large as the worker pool, so
    concurrent tasks reuse connections instead of opening a session per download.
    """

    def __init__(self, timeout: float, pool_size: int = 10) -> None:
        super().__init__()
        self._timeout = timeout
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(*args, **kwargs)


class LabelStudioToken:
    """The credential for downloads from Label Studio.

    A legacy token is used as it is. A personal access token is a JWT *refresh* token, which
    Label Studio refuses as a bearer token: it is exchanged at ``/api/token/refresh/`` for an
    access token (valid for minutes), renewed shortly before it expires. Thread-safe.
    """

    _RENEW_BEFORE = 30.0  # seconds: a download started just before expiry still gets through

    def __init__(self, label_studio_url: str, key: str, timeout: float = 30.0) -> None:
        self._url = label_studio_url.rstrip("/")
        self._key = key
        self._timeout = timeout
        self._is_refresh_token = _jwt_claims(key).get("token_type") == "refresh"
        self._access: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the token
        return f"LabelStudioToken(url={self._url!r}, personal_access_token={self._is_refresh_token})"

    def current(self) -> str:
        if not self._is_refresh_token:
            return self._key
        with self._lock:
            if self._access is None or self._expires_at - time.time() < self._RENEW_BEFORE:
                self._access, self._expires_at = self._refresh()
            return self._access

    def _refresh(self) -> tuple[str, float]:
        try:
            response = requests.post(
                f"{self._url}/api/token/refresh/", json={"refresh": self._key}, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise TaskImageError(
                f"cannot reach Label Studio to refresh the token: {type(exc).__name__}"
            ) from None
        access = response.json().get("access") if response.status_code == 200 else None
        if not isinstance(access, str):
            raise TaskImageError(
                f"Label Studio refused the personal access token in LABEL_STUDIO_API_KEY ({response.status_code}); "
                "create a new one under Account & Settings"
            )
        return access, float(_jwt_claims(access).get("exp", time.time() + 60))


def _jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (only Label Studio verifies them); ``{}`` for a legacy token."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return {}
    return claims if isinstance(claims, dict) else {}


def image_ref(task: dict[str, Any], value_key: str) -> str:
    """The image reference in a task's data, or a ``TaskImageError`` naming the missing key."""
    data = task.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TaskImageError(f"the task's 'data' must be a JSON object, got {type(data).__name__}")
    ref = data.get(value_key)
    if ref is not None and not isinstance(ref, str):
        raise TaskImageError(
            f"no image in data[{value_key!r}]: expected a URL or a Label Studio path, got {type(ref).__name__}"
        )
    if not ref or not ref.strip():
        raise TaskImageError(f"no image in data[{value_key!r}]")
    return ref.strip()


class TaskImageResolver:
    """Resolves task image references; thread-safe (one pooled session for downloads, one for probes)."""

    def __init__(
        self,
        label_studio_url: str | None,
        label_studio_api_key: str | None,
        timeout: float = 30.0,
        *,
        pool_size: int = 10,
        allow_networks: tuple[str, ...] = (),
        trusted_hosts: tuple[str, ...] = (),
        resolver: Resolver | None = None,
    ) -> None:
        self.label_studio_url = label_studio_url.rstrip("/") if label_studio_url else None
        self._token = (
            LabelStudioToken(self.label_studio_url, label_studio_api_key, timeout)
            if self.label_studio_url and label_studio_api_key
            else None
        )
        self.timeout = timeout
        self._download_session = _TimeoutSession(timeout, pool_size)
        policy = FetchPolicy(
            allow_networks=allow_networks,
            timeout=timeout,
            deadline=timeout,
            max_bytes=MAX_PROBE_BYTES,
            content_types=_PROBE_TYPES,
            resolver=resolver,
        )
        self._guarded = Fetcher(policy, pool_size=pool_size)
        # The deployer's own hosts (Label Studio, the API) may live on a private network.
        self._trusted = Fetcher(policy.replace(untrusted_caller=False), pool_size=pool_size)
        self._trusted_hosts = frozenset(
            h.lower() for h in (*trusted_hosts, _netloc(self.label_studio_url)) if h
        )

    def close(self) -> None:
        self._download_session.close()
        self._guarded.close()
        self._trusted.close()

    def __enter__(self) -> TaskImageResolver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never show the Label Studio key
        return f"TaskImageResolver(label_studio_url={self.label_studio_url!r})"

    def is_hosted_by_label_studio(self, ref: str) -> bool:
        parsed = urlparse(ref)
        if parsed.scheme in _CLOUD_SCHEMES or ref.startswith(_HOSTED_PREFIXES):
            return True
        if parsed.scheme in ("http", "https") and self.label_studio_url:
            return parsed.netloc == urlparse(self.label_studio_url).netloc
        return False

    def resolve(self, ref: str, task_id: int | None, *, need_size: bool) -> TaskImage:
        """Download Label Studio-hosted images now; leave other URLs for the API (size probed separately)."""
        if self.is_hosted_by_label_studio(ref):
            data = self.download_from_label_studio(ref, task_id)
            return TaskImage(data=data, size=_size_of(data, ref) if need_size else None)
        scheme = urlparse(ref).scheme
        if scheme not in ("http", "https"):
            raise TaskImageError(f"image {ref[:200]!r} is neither an http(s) URL nor a Label Studio file")
        return TaskImage(url=ref)

    def download_from_label_studio(self, ref: str, task_id: int | None) -> bytes:
        if self._token is None:
            raise TaskImageError(
                f"image {ref[:200]!r} is stored in Label Studio; set LABEL_STUDIO_URL and "
                "LABEL_STUDIO_API_KEY so the backend can download it"
            )
        # A throwaway cache folder: the bytes are read at once, and nothing half-written outlives the call.
        with (
            tempfile.TemporaryDirectory(prefix="simages-ls-") as cache_dir,
            http_session(self._download_session),
        ):
            try:
                path = get_local_path(
                    ref,
                    cache_dir=cache_dir,
                    hostname=self.label_studio_url,
                    access_token=self._token.current(),
                    task_id=task_id,
                )
                return Path(path).read_bytes()
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else "?"
                raise TaskImageError(f"Label Studio answered {status} for {ref[:200]!r}") from None
            except requests.RequestException as exc:
                raise TaskImageError(f"cannot download {ref[:200]!r}: {type(exc).__name__}") from None
            except (OSError, ValueError) as exc:
                raise TaskImageError(f"cannot resolve {ref[:200]!r}: {exc}") from None

    @property
    def api_policy(self) -> FetchPolicy:
        """How the API's own URLs (its thumbnails and images) are fetched: the deployer chose that API."""
        return self._trusted.policy

    def fetch_image(self, ref: str, task_id: int | None) -> bytes:
        """A task image's bytes, fetched as the backend resolves task images (``expand`` fingerprints them).

        Label Studio-hosted files through the SDK; URLs through the guarded fetch (the API's and
        Label Studio's own hosts trusted), with the same "could not fetch" for whoever made the task.
        """
        if self.is_hosted_by_label_studio(ref):
            return self.download_from_label_studio(ref, task_id)
        if urlparse(ref).scheme not in ("http", "https"):
            raise TaskImageError(f"image {ref[:200]!r} is neither an http(s) URL nor a Label Studio file")
        try:
            return self._fetcher_for(ref).fetch_bytes(ref).data
        except FetchError as exc:
            raise _task_fetch_error(ref, exc) from None

    def _fetcher_for(self, url: str) -> Fetcher:
        return self._trusted if _netloc(url) in self._trusted_hosts else self._guarded

    def probe_size(self, url: str) -> tuple[int, int]:
        """The displayed pixel size of the image at ``url``, from its first bytes (guarded fetch)."""
        shown = redact_url(url)[:200]
        # Whoever made the task learns only this: no status, no body, no timing detail.
        public = f"could not fetch {shown!r}"
        fetcher = self._fetcher_for(url)
        parser = ImageFile.Parser()
        read = 0
        try:
            with fetcher.open(url) as response:
                for chunk in response.iter_chunks():
                    parser.feed(chunk)
                    read += len(chunk)
                    if parser.image is not None:
                        return displayed_size(parser.image)
        except FetchTooLarge:
            pass  # no size within the cap: reported below
        except FetchError as exc:
            raise _task_fetch_error(url, exc) from None
        except (OSError, SyntaxError, ValueError) as exc:  # PIL's parser raises these for non-images
            raise TaskImageError(f"{shown!r} is not an image: {exc}", public_message=public) from None
        raise TaskImageError(
            f"{shown!r} is not a readable image (no size in the first {read} bytes)", public_message=public
        )


def _task_fetch_error(url: str, exc: FetchError) -> TaskImageError:
    """A guarded fetch's error as ``TaskImageError``: the detail for the log, little for the task."""
    shown = redact_url(url)[:200]
    # Whoever made the task learns only this: no status, no body, no timing detail.
    public = f"could not fetch {shown!r}"
    if isinstance(exc, FetchRefused):
        hint = "; SIMAGES_ALLOW_URL_NETWORKS lists networks the backend may fetch from"
        return TaskImageError(f"cannot fetch {shown!r}: {exc}", public_message=f"{public}: {exc}{hint}")
    if isinstance(exc, FetchHTTPError):
        return TaskImageError(f"image {shown!r} answered {exc.status}", public_message=public)
    if isinstance(exc, FetchContentTypeError):
        return TaskImageError(f"{shown!r} is not an image: it {exc}", public_message=public)
    return TaskImageError(f"cannot fetch {shown!r}: {exc}", public_message=public)


def _netloc(url: str | None) -> str:
    """``host:port`` of a URL, lower-case and without userinfo; ``""`` for none."""
    if not url:
        return ""
    try:
        return urlparse(url).netloc.rsplit("@", 1)[-1].lower()
    except ValueError:
        return ""


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """Width and height as Label Studio shows the image: browsers apply EXIF orientation."""
    width, height = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block does not change what the header says
        orientation = None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _size_of(data: bytes, ref: str) -> tuple[int, int]:
    """The size from the header alone: no pixel is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return displayed_size(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise TaskImageError(f"{ref[:200]!r} is not a readable image: {exc}") from None
