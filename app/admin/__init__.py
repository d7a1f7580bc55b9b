"""The operator console: dashboard, payments, users, repairs and their audit log, exports."""
from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")


def register_admin(app):
    from . import views  # noqa: F401  (routes attach to bp)
    from .cli import create_admin_command, reset_password_command
    app.register_blueprint(bp)
    app.cli.add_command(create_admin_command)
    app.cli.add_command(reset_password_command)
