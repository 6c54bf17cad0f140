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

from . import __version__
from .model import AccountError, BackendContext, SimilarImagesBackend
from .settings import BackendSettings

logger = logging.getLogger("simages_label_studio")

_MODELS_KEPT = 32


class _ModelCache:
    """One ``SimilarImagesBackend`` per label config, least recently used dropped first."""

    def __init__(self, context: BackendContext) -> None:
        self.context = context
        self._models: OrderedDict[str, SimilarImagesBackend] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, label_config: str) -> SimilarImagesBackend:
        with self._lock:
            model = self._models.get(label_config)
            if model is None:
                model = SimilarImagesBackend(label_config, context=self.context)
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


def create_app(settings: BackendSettings | None = None, context: BackendContext | None = None) -> Flask:
    settings = settings or BackendSettings()
    context = context or BackendContext.from_settings(settings)
    models = _ModelCache(context)
    app = Flask("simages_label_studio")
    app.config["SIMAGES_CONTEXT"] = context

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

    def _json_body() -> dict[str, Any] | None:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else None

    @app.get("/")
    @app.get("/health")
    def health() -> Any:
        return jsonify(
            {
                "status": "UP",
                "model_class": SimilarImagesBackend.__name__,
                "backend_version": __version__,
                "api_url": context.client.base_url,
                "has_api_key": context.client.has_api_key,
            }
        )

    @app.post("/setup")
    def setup() -> Any:
        body = _json_body()
        if body is None or not isinstance(body.get("schema"), str):
            return _error("expected a JSON body with the project's label config in 'schema'", 400)
        model = models.get(body["schema"])
        return jsonify({"model_version": model.model_version})

    @app.post("/predict")
    def predict() -> Any:
        body = _json_body()
        if body is None:
            return _error("expected a JSON body", 400)
        tasks, label_config = body.get("tasks"), body.get("label_config")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            return _error("'tasks' must be a list of task objects", 400)
        if not isinstance(label_config, str):
            return _error("'label_config' must be the project's label config (XML string)", 400)
        model = models.get(label_config)
        try:
            results = model.predict(tasks)
        except AccountError as exc:
            # Once per batch, with the API's own message: nothing else can succeed until it is fixed.
            logger.error("the Similar Images API refused the batch of %d tasks: %s", len(tasks), exc)
            return _error(str(exc), exc.status)
        logger.info(
            "predicted %d tasks (%d failed) with %s",
            len(tasks),
            sum("error" in r for r in results),
            model.model_version,
        )
        return jsonify({"results": results, "model_version": model.model_version})

    @app.post("/webhook")
    def webhook() -> Any:
        # Label Studio sends annotation events here; this backend does not train, so it only acknowledges.
        body = _json_body() or {}
        logger.debug("webhook %s ignored: this backend does not train", body.get("action"))
        return jsonify({"status": "ignored", "reason": "this backend does not train"}), 200

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

    return app


if __name__ == "__main__":  # ``python -m simages_label_studio._wsgi --port 9090``, the ML-backend convention
    from .cli import main

    raise SystemExit(main(["serve", *sys.argv[1:]]))
