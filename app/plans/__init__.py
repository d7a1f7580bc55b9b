"""Plans: what a customer can buy."""
from flask import Blueprint

bp = Blueprint("plans", __name__)


def register_plans(app):
    from . import views  # noqa: F401
    from .service import seed_plans_command
    app.register_blueprint(bp)
    app.cli.add_command(seed_plans_command)
