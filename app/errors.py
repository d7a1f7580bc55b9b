"""Friendly error pages, and JSON errors with a stable code under /api/."""
from __future__ import annotations

import logging

from flask import jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .logs import safe_path

log = logging.getLogger("lipia.errors")

TITLES = {400: "Bad request", 403: "Not allowed", 404: "Page not found", 405: "Not allowed",
          413: "Too large", 429: "Too many requests", 500: "Something went wrong"}


def api_error(status: int, code: str, message: str, **extra):
    return jsonify({"error": {"code": code, "message": message, **extra}}), status


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path.endswith(".json")


def register_errors(app):
    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        if wants_json():
            return api_error(400, "csrf_failed", exc.description)
        return render_template("errors/error.html", status=400, title="Form expired",
                               message="This form was open too long or came from elsewhere. "
                                       "Go back, reload the page and try again. Nothing was changed."), 400

    @app.errorhandler(HTTPException)
    def http_error(exc):
        status = exc.code or 500
        if wants_json():
            return api_error(status, (exc.name or "error").lower().replace(" ", "_"), exc.description)
        return render_template("errors/error.html", status=status, title=TITLES.get(status, exc.name),
                               message=exc.description), status

    @app.errorhandler(Exception)
    def unexpected(exc):
        # The path is masked here as well as in the formatter: a callback URL carries its secret.
        log.exception("unhandled error on %s %s", request.method[:16], safe_path(request.path))
        if wants_json():
            return api_error(500, "internal_error", "Something went wrong on our side. Nothing was charged.")
        return render_template("errors/error.html", status=500, title=TITLES[500],
                               message="Something went wrong on our side. Please try again in a moment."), 500
