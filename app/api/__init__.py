"""The JSON API under /api/v1: a customer's balance and word spending, authenticated by an API key."""
from flask import Blueprint

api = Blueprint("api", __name__, url_prefix="/api/v1")


def register_api(app):
    from . import views  # noqa: F401  (routes attach to api)
    from ..extensions import csrf
    csrf.exempt(api)  # the API authenticates with a key, not a session cookie
    app.register_blueprint(api)
