"""Template filters and globals shared by every page."""
from datetime import timedelta, timezone

from .db import as_utc
from .mpesa.phone import display_phone
from .payments.status import TITLES, TONES

EAT = timezone(timedelta(hours=3), "EAT")


def eat(value, fmt: str = "%d %b %Y, %H:%M") -> str:
    """Times are stored in UTC and shown in Kenyan time."""
    if value is None:
        return "—"
    return as_utc(value).astimezone(EAT).strftime(fmt) + " EAT"


def register_templating(app):
    app.add_template_filter(eat, "eat")
    # Phones are stored as 2547XXXXXXXX (what Daraja wants) and shown as 0712 345 678.
    app.add_template_filter(display_phone, "phone")
    app.add_template_global(lambda status: TONES.get(status, "secondary"), "status_tone")
    app.add_template_global(lambda status: str(TITLES.get(status, status)), "status_title")
