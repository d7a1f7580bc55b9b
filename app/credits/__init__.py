"""Spending words on the site (the spending page); the JSON API is in app.api."""
from flask import Blueprint

bp = Blueprint("credits", __name__)


def register_credits(app):
    from . import views  # noqa: F401
    app.register_blueprint(bp)
