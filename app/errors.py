"""Friendly error pages, and JSON errors with a stable code under /api/."""
from __future__ import annotations

import logging

from flask import current_app, g, jsonify, render_template, request
from flask_babel import gettext as _, lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from pymongo.errors import ConnectionFailure
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from .logs import request_path
from .outage import web_database

log = logging.getLogger("lipia.errors")

TITLES = {400: _l("Bad request"), 403: _l("Not allowed"), 404: _l("Page not found"),
          405: _l("That page cannot do this"), 413: _l("Too large"), 429: _l("Too many requests"),
          500: _l("Something went wrong"), 503: _l("Back in a moment")}

# What a client is told to wait before trying again while the database is unreachable:
# long enough not to hammer a recovering server, short enough for a customer to retry.
DATABASE_RETRY_AFTER_SECONDS = 15
# Werkzeug's own 404 text speaks of servers and URLs; a mistyped link gets the shop's words.
NOT_FOUND_MESSAGE = _l("We could not find that page. The link may be mistyped or out of date: "
                       "start again from the plans page, or see your payments under History.")
# A 405 is what a bookmarked or reloaded form address gives (a POST-only action opened as a page).
METHOD_NOT_ALLOWED_MESSAGE = _l("That address is for a button on one of our pages, not a page to open. "
                                "Nothing was changed: go back to the page you were on, or start again "
                                "from the plans.")
# Werkzeug's own wording for these speaks of servers, URLs and methods; ours replaces it
# unless a view gave a reason of its own (e.g. "We could not find that payment on your account.").
GENERIC_REPLACED = {404: (NotFound.description, NOT_FOUND_MESSAGE),
                    405: (MethodNotAllowed.description, METHOD_NOT_ALLOWED_MESSAGE)}
DATABASE_DOWN_MESSAGE = _l("Lipia cannot reach its database right now. Nothing was changed or charged; "
                           "please try again shortly.")


def api_error(status: int, code: str, message: str, **extra):
    return jsonify({"error": {"code": code, "message": message, **extra}}), status


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path.endswith(".json")


def register_errors(app):
    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        if wants_json():
            return api_error(400, "csrf_failed", exc.description)
        return render_template("errors/error.html", status=400, title=_("Form expired"),
                               message=_("This form was open too long or came from elsewhere. "
                                         "Go back, reload the page and try again. Nothing was changed.")), 400

    @app.errorhandler(HTTPException)
    def http_error(exc):
        status = exc.code or 500
        if wants_json():
            return api_error(status, (exc.name or "error").lower().replace(" ", "_"), exc.description)
        generic, ours = GENERIC_REPLACED.get(status, (None, None))
        message = ours if ours and exc.description == generic else exc.description
        return render_template("errors/error.html", status=status, title=TITLES.get(status, exc.name),
                               message=message), status

    # ConnectionFailure covers ServerSelectionTimeoutError, AutoReconnect, NetworkTimeout and
    # a full connection pool: whatever a view, the user loader or a before_request hook
    # was doing, the database did not answer, so the request changed nothing it can know of.
    @app.errorhandler(ConnectionFailure)
    def database_unreachable(exc):
        web_database.failed()  # others in this process need not wait to find out (see outage)
        log.warning("database unreachable on %s: %s", request_path(), type(exc).__name__)
        _show_as_visitor()
        if wants_json():
            response, status = api_error(503, "database_unavailable", str(DATABASE_DOWN_MESSAGE),
                                         retry_after=DATABASE_RETRY_AFTER_SECONDS)
        else:
            response = app.make_response((render_template(
                "errors/error.html", status=503, title=TITLES[503], message=DATABASE_DOWN_MESSAGE), 503))
            status = 503
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        response.headers["Cache-Control"] = "no-store"
        return response, status

    @app.errorhandler(Exception)
    def unexpected(exc):
        # The path is masked here as well as in the formatter: a callback URL carries its secret.
        log.exception("unhandled error on %s %s", request.method[:16], request_path())
        if wants_json():
            return api_error(500, "internal_error", "Something went wrong on our side. Nothing was charged.")
        return render_template("errors/error.html", status=500, title=TITLES[500],
                               message=_("Something went wrong on our side. Please try again in a moment.")), 500


def _show_as_visitor() -> None:
    """Render the outage page as to a visitor, so rendering it needs no database.

    Flask-Login loads the user lazily; when that load is what failed, the page's own
    `current_user` would ask the database again and wait out a second timeout, and a
    signed-in page also counts unread notices.
    """
    g._login_user = current_app.login_manager.anonymous_user()
