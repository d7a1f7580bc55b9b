"""The operator console: dashboard, payments, users, repairs and their audit log, exports."""
import json
from datetime import datetime

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.app_template_filter("pretty_json")
def pretty_json(value) -> str:
    """Readable JSON for stored documents (dates and ids shown as text)."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return json.dumps(value, indent=2, default=str, ensure_ascii=False, sort_keys=False)


@bp.app_template_filter("when")
def when(value, fmt: str = "%d %b %Y, %H:%M") -> str:
    """A stored time in Kenyan time; a dash when the record has none."""
    from ..templating import eat
    if isinstance(value, str):  # Daraja exchanges keep their time as ISO text
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return eat(value, fmt) if isinstance(value, datetime) else "—"


@bp.app_template_filter("changes")
def changes(before, after) -> list[tuple[str, str, str]]:
    """(field, before, after) as text, for every field an action changed."""
    before, after = before or {}, after or {}

    def shown(value) -> str:
        if value is None:
            return "—"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, datetime):
            return when(value, "%d %b %Y, %H:%M:%S")
        return str(value)
    keys = dict.fromkeys([*before, *after])
    return [(k, shown(before.get(k)), shown(after.get(k))) for k in keys if before.get(k) != after.get(k)]


@bp.app_template_filter("age")
def age(seconds) -> str:
    """3725 -> '1h 2m'; for how long something has waited."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"


def register_admin(app):
    from . import views  # noqa: F401  (routes attach to bp)
    from .cli import create_admin_command, reset_password_command
    app.register_blueprint(bp)
    app.cli.add_command(create_admin_command)
    app.cli.add_command(reset_password_command)
