"""Accounts: register, log in, log out, profile."""
from flask import Blueprint

bp = Blueprint("auth", __name__)


def register_auth(app):
    from . import recovery_views, views  # noqa: F401  (routes attach to bp)
    app.register_blueprint(bp)
