"""The HTTP app Label Studio connects to: ``/health``, ``/setup``, ``/predict``, ``/webhook``, ``/versions``.

Why our own Flask routes around ``LabelStudioMLBase`` instead of label-studio-ml
1.0.9's ``init_app``: that app predicts every project with the label config of
whichever project called ``/setup`` last, reports ``INITIAL`` or a training job id
as ``model_version``, forks a process per webhook event for training this
backend does not do, and only answers ``/versions`` on POST while Label Studio
1.23 sends GET. Here each request's own ``label_config`` picks the model (cached
per config), and the wire format is the one Label Studio 1.23 expects.

Run it with ``simages-ls serve`` (waitress, a production WSGI server), or give
``create_app()`` to any WSGI server.
"""

from __future__ import annotations

import hmac
import logging
import sys
import threading
from collections import OrderedDict
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from . import __version__
from .context import AccountError, BackendContext
from .interactive import RegionLabeller
from .model import SimilarImagesBackend
from .settings import BackendSettings
from .webhook import handle_webhook
from .webhook_events import WebhookEvent
from .wire import MAX_BODY_BYTES, PredictRequest, SetupRequest, parse_json

logger = logging.getLogger("simages_label_studio")

_MODELS_KEPT = 32


class _ModelCache:
    """One ``SimilarImagesBackend`` per label config, least recently used dropped first."""

    def __init__(self, context: BackendContext) -> None:
        self.context = context
        self._models: OrderedDict[str, SimilarImagesBackend] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, label_config: str, key: str) -> SimilarImagesBackend:
        """The model for a config; a ``BadRequest`` naming ``key`` when the config is not XML at all."""
        with self._lock:
            model = self._models.get(label_config)
            if model is None:
                model = SimilarImagesBackend(label_config, context=self.context)
                if model.schema.syntax_error is not None:
                    # Not cached: a config that is not XML is the caller's mistake, not a project.
                    raise BadRequest(f"'{key}' is not a label config: {model.schema.syntax_error}")
                self._models[label_config] = model
                while len(self._models) > _MODELS_KEPT:
                    self._models.popitem(last=False)
            self._models.move_to_end(label_config)
            return model

    def versions(self) -> list[str]:
        with self._lock:
            return [model.model_version for model in self._models.values()]


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify({"error": message, "status": status}), status


def _body() -> Any:
    """The request's JSON document, depth-checked (``wire.parse_json``)."""
    return parse_json(request.get_data(cache=False), request.content_type)


def create_app(settings: BackendSettings | None = None, context: BackendContext | None = None) -> Flask:
    settings = settings or BackendSettings()
    context = context or BackendContext.from_settings(settings)
    models = _ModelCache(context)
    labeller = RegionLabeller(context)
    app = Flask("simages_label_studio")
    app.config["SIMAGES_CONTEXT"] = context
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.before_request
    def _basic_auth() -> Any:
        expected = settings.basic_auth
        # /health stays open for container health checks; it tells nothing secret.
        if expected is None or request.path in ("/", "/health"):
            return None
        auth = request.authorization
        ok = (
            auth is not None
            and hmac.compare_digest((auth.username or "").encode(), expected[0].encode())
            and hmac.compare_digest((auth.password or "").encode(), expected[1].encode())
        )
        if ok:
            return None
        response, status = _error("basic authentication required", 401)
        response.headers["WWW-Authenticate"] = 'Basic realm="simages-label-studio-backend"'
        return response, status

    @app.get("/")
    @app.get("/health")
    def health() -> Any:
        return jsonify(
            {
                "status": "UP",
                "model_class": SimilarImagesBackend.__name__,
                "backend_version": __version__,
                "api_url": context.api_url,
                "has_api_key": context.client.has_api_key,
            }
        )

    @app.post("/setup")
    def setup() -> Any:
        body = SetupRequest.from_json(_body())
        model = models.get(body.schema, "schema")
        # With the project's learned generation: a new one makes "Retrieve predictions" predict again.
        answer: dict[str, Any] = {"model_version": model.version_for(body.project)}
        if model.schema.problems:
            answer["warnings"] = list(model.schema.problems)
        return jsonify(answer)

    @app.post("/predict")
    def predict() -> Any:
        body = PredictRequest.from_json(_body())
        model = models.get(body.label_config, "label_config")
        project = body.project if body.project is not None else (body.tasks or [{}])[0].get("project")
        try:
            if body.context is not None:  # an annotator drew regions (interactive pre-annotation)
                results = labeller.predict_tasks(model, body.tasks, body.context, project)
            else:
                results = model.predict(body.tasks, project=body.project)
        except AccountError as exc:
            # Once per batch, with the API's own message: nothing else can succeed until it is fixed.
            logger.error("the Similar Images API refused the batch of %d tasks: %s", len(body.tasks), exc)
            return _error(context.redact(str(exc)), exc.status)
        # Label Studio 1.23 stores each result's own model_version (ml/models.py reads
        # ``r.get("model_version", ...)``) and ignores this one; it says the same, for anyone else.
        version = next((r["model_version"] for r in results if "model_version" in r), None)
        version = version or model.version_for(project)
        logger.info(
            "predicted %d tasks (%d failed) with %s",
            len(body.tasks),
            sum("error" in r for r in results),
            version,
        )
        answer: dict[str, Any] = {"results": results, "model_version": version}
        if not model.schema.servable and body.context is None:
            # Label Studio ignores this key; a person calling the backend by hand learns why it is empty.
            answer["warnings"] = list(model.schema.problems)
        return jsonify(answer)

    @app.post("/webhook")
    def webhook() -> Any:
        # Label Studio registers this URL when the model is connected and sends every event of the
        # project here; annotations teach the backend the project's labels (webhook.py).
        event = WebhookEvent.from_json(_body())
        answer, status = handle_webhook(
            event, lambda config: models.get(config, "project.label_config").schema, context
        )
        return jsonify(answer), status

    @app.route("/versions", methods=["GET", "POST"])
    def versions() -> Any:
        return jsonify({"versions": models.versions()})

    @app.get("/metrics")
    def metrics() -> Any:
        usage = context.client.usage_today()
        return jsonify(
            {
                "api_requests_today": usage.sent,
                "served_from_cache_today": usage.cached,
                "failed_today": usage.failed,
            }
        )

    @app.errorhandler(404)
    def not_found(_: Exception) -> Any:
        return _error(f"not found: {request.path}", 404)

    @app.errorhandler(405)
    def not_allowed(_: Exception) -> Any:
        return _error(f"{request.method} is not allowed on {request.path}", 405)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: Exception) -> Any:
        return _error(f"the request body is larger than {MAX_BODY_BYTES} bytes", 413)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return _error(exc.description or exc.name, exc.code or 400)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        # Logged once with its traceback (secrets redacted by the log filter); the caller learns
        # nothing about the internals, and the process keeps serving.
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return _error("internal error in the ML backend; its log has the details", 500)

    return app


if __name__ == "__main__":  # ``python -m simages_label_studio._wsgi --port 9090``, the ML-backend convention
    from .cli import main

    raise SystemExit(main(["serve", *sys.argv[1:]]))
