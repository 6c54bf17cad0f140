"""What the backend's models and ``expand`` share in one process: settings, API client, resolver, worker pool.

Kept apart from ``model.py`` so that ``simages-ls expand`` never imports
label-studio-ml's ``LabelStudioMLBase`` (and with it Flask, redis and rq).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import unquote, urlsplit, urlunsplit

from simages_core import (
    BatchItem,
    InvalidApiKey,
    MissingApiKey,
    Query,
    QuotaExceeded,
    SimilarImagesClient,
    SimilarImagesError,
)

from . import __version__
from .label_config import ProjectSchema
from .label_warning import UnlabelledAnswerWarning
from .learned_labels import NOTHING_LEARNED, Evidence
from .learned_store import LearnedStore, LearnedStoreError, open_learned_store
from .predictions import Thresholds
from .settings import BackendSettings
from .task_images import TaskImageResolver

logger = logging.getLogger("simages_label_studio")

ACCOUNT_ERRORS = (QuotaExceeded, InvalidApiKey, MissingApiKey)


class AccountError(Exception):
    """The API refused the whole batch (daily limit, missing or invalid key): no task can succeed."""

    def __init__(self, error: SimilarImagesError) -> None:
        self.status = error.status or 401
        super().__init__(f"{type(error).__name__} ({self.status}): {error.message}")


def raise_if_account_error(errors: Sequence[Exception | None]) -> None:
    """If every query failed for an account reason (402, 401, 403), one ``AccountError`` says so for all."""
    first = errors[0] if errors else None
    if isinstance(first, ACCOUNT_ERRORS) and all(isinstance(e, ACCOUNT_ERRORS) for e in errors):
        raise AccountError(first)


def public_url(url: str) -> str:
    """``url`` without its userinfo (``http://user:pass@host`` -> ``http://host``): safe to show and log."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of a URL's userinfo, longest first (``user:pass@`` and the password)."""
    if not url:
        return []
    netloc = urlsplit(url).netloc
    if "@" not in netloc:
        return []
    userinfo = netloc.rsplit("@", 1)[0]
    password = userinfo.partition(":")[2]
    return [s for s in (userinfo + "@", password, unquote(password)) if len(s) >= 3]


class Redactor(logging.Filter):
    """Removes secrets (URL userinfo, keys) from text and from every log record it filters."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        # Longest first, so "user:pass@" goes before "pass" alone.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "" if secret.endswith("@") else "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg, record.args = self(record.getMessage()), None
            if record.exc_info:
                text = record.exc_text or logging.Formatter().formatException(record.exc_info)
                record.exc_text = self(text)
        return True


def redactor_for(settings: BackendSettings) -> Redactor:
    """A ``Redactor`` for every secret in the settings: both API keys, basic auth, URL userinfo."""
    secrets = [*url_secrets(settings.api_url), *url_secrets(settings.label_studio_url)]
    for secret in (settings.api_key, settings.label_studio_api_key, settings.basic_auth_pass):
        if secret is not None and len(secret.get_secret_value()) >= 3:
            secrets.append(secret.get_secret_value())
    return Redactor(secrets)


def model_version_for(schema: ProjectSchema, api_url: str, learned: Evidence | None = None) -> str:
    """Names the API, the label set, the backend version and the learned state, if any.

    ``simages.info/coco_yolov7/labels-1a2b3c4d/backend-0.1.0``, and once a project has taught the
    backend something ``.../learned-3``: the generation moves on START_TRAINING and every
    ``SIMAGES_LEARN_EVERY`` new annotations, not at each one (Label Studio's version list stays short).
    """
    host = urlsplit(public_url(api_url)).netloc or public_url(api_url)
    version = f"{host}/coco_yolov7/labels-{schema.digest()}/backend-{__version__}"
    if learned is not None and (learned.annotations or learned.generation):
        version += f"/learned-{learned.generation}"
    return version


def project_key(value: object, created_at: object = None) -> str | None:
    """Which project's learned labels: Label Studio's own project uid ``"<id>.<created_at seconds>"``.

    ``/predict`` and ``/setup`` send it as ``project`` (``"7.1712345678"``); a webhook carries the
    project's ``id`` and ``created_at``, from which the same uid is made. Two Label Studio instances
    behind one backend both have a project 7, but not created in the same second: their learned
    labels stay apart. A bare id (a hand-made request, a task's ``project``) gives the key ``"7"``,
    which no webhook writes: such a request predicts with nothing learned.
    """
    pid = project_id(value)
    if pid is None:
        return None
    if created_at is not None:
        seconds = _unix_seconds(created_at)
        return f"{pid}.{seconds}" if seconds is not None else str(pid)
    if isinstance(value, str):
        tail = value.strip().split(".", 1)[1:]
        if tail and tail[0].isdigit():
            return f"{pid}.{int(tail[0])}"
    return str(pid)


def _unix_seconds(created_at: object) -> int | None:
    """Label Studio's ``int(project.created_at.timestamp())`` from the ISO time its webhooks send."""
    if not isinstance(created_at, str):
        return None
    try:
        moment = datetime.fromisoformat(created_at.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:  # Label Studio stores UTC; a naive time is UTC too
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def project_id(value: object) -> int | None:
    """A project id from what Label Studio sends: ``7``, ``"7"`` or ``/predict``'s ``"7.1712345678"``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str):
        head = value.strip().split(".", 1)[0]
        return int(head) if head.isdigit() and int(head) > 0 else None
    return None


@dataclass
class BackendContext:
    """What every model instance shares: settings, one pooled API client, one image resolver, one pool.

    The worker pool is bounded (``SIMAGES_MAX_WORKERS`` threads) and shared by all requests, so
    200 concurrent ``/predict`` calls queue for it instead of starting 200 pools. Only the request
    thread waits on its futures; a pool thread never waits on another pool task (no deadlock).
    """

    settings: BackendSettings
    client: SimilarImagesClient
    resolver: TaskImageResolver
    executor: ThreadPoolExecutor = field(init=False)
    thresholds: Thresholds = field(init=False)
    redact: Redactor = field(init=False)
    unlabelled_answers: UnlabelledAnswerWarning = field(init=False)
    learned: LearnedStore | None = None
    """Opened at the first use (``learned_store()``): ``expand`` never needs it."""
    _learned_warned: bool = field(default=False, init=False, repr=False)
    _learned_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.thresholds = Thresholds(
            s.near_duplicate_score, s.aspect_tolerance, s.min_detection_score, s.top_k, s.choice_threshold
        )
        self.executor = ThreadPoolExecutor(max_workers=s.max_workers, thread_name_prefix="simages-ls")
        self.redact = redactor_for(s)
        self.unlabelled_answers = UnlabelledAnswerWarning()

    @classmethod
    def from_settings(cls, settings: BackendSettings) -> BackendContext:
        client = SimilarImagesClient(
            settings.api_key.get_secret_value() if settings.api_key else None,
            base_url=settings.api_url,
            cache="auto" if settings.cache else False,
            pool_size=max(32, settings.max_workers),
        )
        ls_key = settings.label_studio_api_key.get_secret_value() if settings.label_studio_api_key else None
        resolver = TaskImageResolver(
            settings.label_studio_url,
            ls_key,
            settings.image_fetch_timeout,
            pool_size=settings.max_workers,
            allow_networks=settings.allow_url_networks,
            trusted_hosts=(urlsplit(public_url(client.base_url)).netloc,),
        )
        return cls(settings, client, resolver)

    @property
    def api_url(self) -> str:
        """The API's URL without credentials: for ``/health``, logs and ``model_version``."""
        return public_url(self.client.base_url)

    def learned_store(self) -> LearnedStore:
        """The learned-labels store (Redis with ``SIMAGES_CACHE_URL``, else under ``SIMAGES_HOME``)."""
        with self._learned_lock:
            if self.learned is None:
                self.learned = open_learned_store(self.settings.simages_home, self.settings.learn_every)
            return self.learned

    def evidence(self, project: str | None) -> Evidence:
        """What a project taught; nothing when it is unknown or the store fails (one WARNING, then DEBUG)."""
        if project is None:
            return NOTHING_LEARNED
        try:
            return self.learned_store().evidence(project)
        except LearnedStoreError as exc:
            level = logging.DEBUG if self._learned_warned else logging.WARNING
            self._learned_warned = True
            logger.log(level, "predicting without learned labels: %s", self.redact(str(exc)))
            return NOTHING_LEARNED

    def submit_search(self, query: Query) -> Future[BatchItem]:
        return self.executor.submit(self.client.run_query, query)

    def search_many(self, queries: Sequence[Query]) -> list[BatchItem]:
        """Every query on the shared pool; results in order, errors stay with their query."""
        return [future.result() for future in [self.submit_search(q) for q in queries]]

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)  # running work ends within its deadline
        self.resolver.close()
        self.client.close()
        if self.learned is not None:
            self.learned.close()
