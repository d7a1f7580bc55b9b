"""/healthz, /readyz and /metrics, plus the callback timing hook."""
from __future__ import annotations

import time

from flask import Response, abort, current_app, g, jsonify, request

from ..db import get_db
from . import bp, health, metrics

CALLBACK_ENDPOINT = "payments.callback"


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/healthz")
def healthz():
    """Liveness for the host: answers without the database, so an outage never restarts healthy web processes."""
    return _no_store(jsonify({"status": "ok"}))


@bp.route("/readyz")
def readyz():
    """Readiness for monitoring: the database answers and the queue is not too far behind."""
    ready, report = health.readiness(get_db(), current_app.config["READY_MAX_QUEUE_LAG_SECONDS"])
    return _no_store(jsonify(report)), (200 if ready else 503)


@bp.route("/metrics")
def metrics_view():
    """Prometheus metrics (this process's timings, the database's counts), for the METRICS_TOKEN bearer only."""
    token = current_app.config.get("METRICS_TOKEN") or ""
    if not token:
        abort(404)
    if not metrics.token_matches(request.headers.get("Authorization"), token):
        response = Response("metrics need a bearer token\n", status=401, mimetype="text/plain")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics.render(get_db())
    return _no_store(Response(body, mimetype=None, content_type=content_type))


def time_callbacks(app):
    """Time the Daraja callback view from the outside, so its module stays about payments."""

    @app.before_request
    def _start_callback_timer():
        if request.endpoint == CALLBACK_ENDPOINT:
            g.callback_started = time.perf_counter()

    @app.teardown_request
    def _observe_callback(_exc=None):
        started = g.pop("callback_started", None)
        if started is not None:
            metrics.CALLBACK_SECONDS.observe(time.perf_counter() - started)
