"""Operations: health checks for the platform and metrics for Prometheus."""
from flask import Blueprint

bp = Blueprint("ops", __name__)


def register_ops(app):
    from . import health, views  # noqa: F401  (routes attach to bp)
    views.time_callbacks(app)
    app.register_blueprint(bp)
