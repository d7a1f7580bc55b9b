"""Spending words: the spending page and the JSON usage API."""
from flask import Blueprint

bp = Blueprint("credits", __name__)
api = Blueprint("api", __name__, url_prefix="/api/v1")


def register_credits(app):
    from . import views  # noqa: F401
    from ..extensions import csrf
    csrf.exempt(api)  # the API authenticates with a key, not a session cookie
    app.register_blueprint(bp)
    app.register_blueprint(api)
