"""A stand-in for Safaricom's Daraja API (M-Pesa Express), with a virtual handset.

It speaks Daraja's wire format (OAuth, STK push, STK query and the result
callback) so that the web app and worker can be developed and tested without
the real sandbox, whose test phone never shows a prompt.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from flask import Flask, jsonify

from .config import Settings, check_environment
from .c2b_state import C2BStore
from .engine import Engine


def create_app(settings: Settings | Mapping[str, Any] | None = None) -> Flask:
    if settings is None:
        check_environment()  # read from the environment means run as a server: same rule as main()
        settings = Settings.from_env()
    elif not isinstance(settings, Settings):
        settings = Settings.from_env().with_overrides(settings)

    app = Flask(__name__)
    # Daraja's bodies have a fixed field order; keep it instead of sorting keys.
    app.json.sort_keys = False
    app.extensions["simulator"] = Engine(settings)
    app.extensions["simulator_c2b"] = C2BStore()

    register_blueprints(app)
    register_error_handlers(app)
    register_health(app)
    logging.getLogger("simulator").setLevel(logging.INFO)
    return app


def register_blueprints(app: Flask) -> None:
    from . import c2b, control, daraja, handset, status

    app.register_blueprint(daraja.bp)
    app.register_blueprint(handset.bp)
    app.register_blueprint(control.bp)
    app.register_blueprint(c2b.bp)
    app.register_blueprint(status.bp)


def register_error_handlers(app: Flask) -> None:
    from . import daraja

    app.register_error_handler(404, daraja.not_found)
    app.register_error_handler(405, daraja.method_not_allowed)


def register_health(app: Flask) -> None:
    @app.get("/healthz")
    def healthz():
        return jsonify({"ok": True})
