"""The operator console: dashboard, payments, users, repairs and their audit log, exports."""
from flask import Blueprint
from pymongo.errors import PyMongoError

from ..db import get_db
from ..money_audit import runs as audit_runs

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.context_processor
def _latest_money_audit():
    """Every console page shows a banner while the latest money audit has problems (one indexed read)."""
    try:
        return {"money_audit": audit_runs.latest(get_db())}
    except PyMongoError:  # the page says what it can without it; the database error shows elsewhere
        return {"money_audit": None}


def register_admin(app):
    from . import views  # noqa: F401  (routes attach to bp)
    from .cli import create_admin_command, reset_password_command, settle_reversal_command
    app.register_blueprint(bp)
    app.cli.add_command(create_admin_command)
    app.cli.add_command(reset_password_command)
    app.cli.add_command(settle_reversal_command)
