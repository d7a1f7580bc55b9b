"""Template filters and globals shared by every page."""
import json
from datetime import datetime, timedelta, timezone

from flask_babel import gettext

from .db import as_utc
from .mpesa.phone import display_phone
from .payments.states import wording

EAT = timezone(timedelta(hours=3), "EAT")


def eat(value, fmt: str = "%d %b %Y, %H:%M") -> str:
    """Times are stored in UTC and shown in Kenyan time."""
    if value is None:
        return "—"
    return as_utc(value).astimezone(EAT).strftime(fmt) + " EAT"


# Stored bodies come from strangers too: rendering is bounded in depth and in size, so
# nothing stored can make an operator page fail or grow without end.
PRETTY_MAX_DEPTH = 12
PRETTY_MAX_CHARS = 20_000


def pretty_json(value) -> str:
    """Readable JSON for stored documents (dates and ids shown as text), bounded."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            return _clipped(value)
    try:
        text = json.dumps(_shallow(value, PRETTY_MAX_DEPTH), indent=2, default=str, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        text = repr(value)[:PRETTY_MAX_CHARS]
    return _clipped(text)


def _shallow(value, depth: int):
    """A copy with anything below `depth` levels replaced by a marker."""
    if isinstance(value, dict):
        if depth <= 0:
            return "{…}"
        return {str(k): _shallow(v, depth - 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if depth <= 0:
            return "[…]"
        return [_shallow(v, depth - 1) for v in value]
    return value


def _clipped(text: str) -> str:
    if len(text) <= PRETTY_MAX_CHARS:
        return text
    return text[:PRETTY_MAX_CHARS] + f"\n… {len(text) - PRETTY_MAX_CHARS} more characters not shown"


def when(value, fmt: str = "%d %b %Y, %H:%M") -> str:
    """A stored time in Kenyan time; a dash when the record has none."""
    if isinstance(value, str):  # Daraja exchanges keep their time as ISO text
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return eat(value, fmt) if isinstance(value, datetime) else "—"


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


def register_templating(app):
    app.add_template_filter(eat, "eat")
    # Phones are stored as 2547XXXXXXXX (what Daraja wants) and shown as 0712 345 678.
    app.add_template_filter(display_phone, "phone")
    app.add_template_global(lambda status: wording(status).tone, "status_tone")
    # Statuses are worded in English in payments/states; each page shows them in its language.
    app.add_template_global(lambda status: gettext(wording(status).title), "status_title")
    for name, function in (("when", when), ("age", age), ("changes", changes), ("pretty_json", pretty_json)):
        app.add_template_filter(function, name)
