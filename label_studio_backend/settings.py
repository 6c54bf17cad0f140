"""Every setting of the backend, from environment variables (one table in README.md lists them).

pydantic-settings parses and validates them once at start-up, so a typo in a
threshold fails loudly with the variable's name instead of mid-prediction.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated

from platformdirs import user_cache_dir
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from simages_core.coco import COCO_CLASSES

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _shown(url: str) -> str:
    """A URL as an error message may show it: without userinfo, cut to 200 characters."""
    scheme, sep, rest = url.partition("://")
    host_and_path = rest if sep else scheme
    if "@" in host_and_path.split("/", 1)[0]:
        host_and_path = host_and_path.split("@", 1)[1]
    return (f"{scheme}://{host_and_path}" if sep else host_and_path)[:200]


class BackendSettings(BaseSettings):
    """What a deployer sets. The API URL and key are read by the core client (``SIMAGES_API_URL``/``SIMAGES_API_KEY``)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    # repr=False: a URL may carry credentials in its userinfo (http://user:pass@host).
    api_url: str | None = Field(None, validation_alias="SIMAGES_API_URL", repr=False)
    api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("SIMAGES_API_KEY", "TERNAUS_TOKEN"))
    near_duplicate_score: float = Field(0.9, ge=0.0, le=1.0, validation_alias="SIMAGES_NEAR_DUPLICATE_SCORE")
    """A match at or above this similarity may lend its boxes to the task."""
    aspect_tolerance: float = Field(0.03, ge=0.0, le=1.0, validation_alias="SIMAGES_ASPECT_TOLERANCE")
    """...and only if its width/height ratio is within this relative difference of the task image's."""
    min_detection_score: float = Field(0.25, ge=0.0, le=1.0, validation_alias="SIMAGES_MIN_DETECTION_SCORE")
    top_k: int = Field(5, ge=1, le=50, validation_alias="SIMAGES_TOP_K")
    """How many similar images vote for image-level Choices."""
    choice_threshold: float = Field(0.5, ge=0.0, le=1.0, validation_alias="SIMAGES_CHOICE_THRESHOLD")
    """A choice is predicted when its similarity-weighted vote share reaches this."""
    max_workers: int = Field(16, ge=1, le=64, validation_alias="SIMAGES_MAX_WORKERS")
    region_margin: float = Field(0.1, ge=0.0, le=2.0, validation_alias="SIMAGES_REGION_MARGIN")
    """A drawn box is widened by this fraction of its size on each side before it is cropped and searched."""
    region_threshold: float = Field(0.4, ge=0.0, le=1.0, validation_alias="SIMAGES_REGION_THRESHOLD")
    """A drawn region gets a label when that label's weighted vote share reaches this."""
    region_point_window: float = Field(0.4, gt=0.0, le=1.0, validation_alias="SIMAGES_REGION_POINT_WINDOW")
    """A clicked keypoint is searched with a square this fraction of the image's shorter side."""
    region_image_cache_mb: int = Field(256, ge=0, le=16_384, validation_alias="SIMAGES_REGION_IMAGE_CACHE_MB")
    """Decoded task images kept for the next drawn box (0 keeps none)."""
    cache: bool = Field(True, validation_alias="SIMAGES_CACHE")
    learn_every: int = Field(20, ge=1, le=100_000, validation_alias="SIMAGES_LEARN_EVERY")
    """A project's learned labels get a new ``model_version`` after this many new annotations (and on
    START_TRAINING), not at every annotation: Label Studio's version picker stays readable."""
    learn_min_iou: float = Field(0.5, gt=0.0, le=1.0, validation_alias="SIMAGES_LEARN_MIN_IOU")
    """An annotator's box teaches the class of the near-duplicate's detection it overlaps at least this much."""
    # NoDecode: our validator parses the JSON, so its error names the variable and the problem.
    label_map: Annotated[dict[str, list[str]], NoDecode] = Field(
        default_factory=dict, validation_alias="SIMAGES_LABEL_MAP"
    )
    """JSON: project label -> COCO class names, e.g. {"Vehicle": ["car", "truck"]}."""
    label_studio_url: str | None = Field(
        None, validation_alias=AliasChoices("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST"), repr=False
    )
    label_studio_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN")
    )
    basic_auth_user: str | None = Field(None, validation_alias="BASIC_AUTH_USER")
    basic_auth_pass: SecretStr | None = Field(None, validation_alias="BASIC_AUTH_PASS")
    image_fetch_timeout: float = Field(30.0, gt=0, validation_alias="SIMAGES_IMAGE_FETCH_TIMEOUT")
    allow_url_networks: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias="SIMAGES_ALLOW_URL_NETWORKS"
    )
    """CIDRs the backend may fetch task image URLs from besides public addresses (``10.0.0.0/8,fd00::/8``)."""
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    simages_home: Path = Field(
        default_factory=lambda: Path(user_cache_dir("simages-plugins")), validation_alias="SIMAGES_HOME"
    )
    """The data folder the core keeps its cache and ledger in (same variable, same default); ``expand``
    keeps the fingerprints of task images there."""

    @field_validator("label_map", mode="before")
    @classmethod
    def _parse_label_map(cls, value: object) -> object:
        # Accept {"Label": "car,truck"} as well as {"Label": ["car", "truck"]}.
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"SIMAGES_LABEL_MAP is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError('SIMAGES_LABEL_MAP must be a JSON object like {"Vehicle": ["car", "truck"]}')
        parsed: dict[str, list[str]] = {}
        known = set(COCO_CLASSES)
        for label, classes in value.items():
            names = classes.split(",") if isinstance(classes, str) else classes
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"SIMAGES_LABEL_MAP[{label!r}] must be a list of COCO class names")
            cleaned = [n.strip().lower() for n in names if n.strip()]
            unknown = sorted(set(cleaned) - known)
            if unknown:
                raise ValueError(
                    f"SIMAGES_LABEL_MAP[{label!r}] names classes that are not COCO classes: {unknown}"
                )
            parsed[str(label)] = cleaned
        return parsed

    @field_validator("label_studio_url")
    @classmethod
    def _check_ls_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"LABEL_STUDIO_URL must start with http:// or https://, got {_shown(value)!r}")
        return value.rstrip("/") if value else value

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"SIMAGES_API_URL must start with http:// or https://, got {_shown(value)!r}")
        return value

    @field_validator("allow_url_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError("SIMAGES_ALLOW_URL_NETWORKS must be comma-separated CIDRs like 10.0.0.0/8")
        networks = []
        for item in items:
            text = str(item).strip()
            if not text:
                continue
            try:
                networks.append(str(ipaddress.ip_network(text, strict=False)))
            except ValueError:
                raise ValueError(
                    f"SIMAGES_ALLOW_URL_NETWORKS: {text[:60]!r} is not a network (expected CIDR like 10.0.0.0/8)"
                ) from None
        return tuple(networks)

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.strip().upper() not in _LOG_LEVELS:
            raise ValueError(f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {value[:40]!r}")
        return value.strip().upper()

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        if self.basic_auth_user and self.basic_auth_pass:
            return self.basic_auth_user, self.basic_auth_pass.get_secret_value()
        return None
