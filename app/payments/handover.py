"""The payment a checkout just created, handed to the page the checkout redirects to.

The checkout POST holds the new payment's document, and its redirect is followed at once:
reading the payment back for that page would fetch what the POST had a moment ago (one
database operation per purchase, on the path every purchase takes). So the POST leaves the
fields the page shows in the session, and the page takes them once, if they are about that
payment, belong to that customer and are seconds old; any other visit reads the database.
The page polls its status at once (a queued payment is polled fast), so a push that
landed in between shows a moment later, as it would have anyway.

Only an allowlist of fields goes into the session cookie: it is signed, not encrypted, so
nothing secret (the callback secret) may travel in it.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from flask import session

from ..db import as_utc, utcnow
from .records import oid
from .states import QUEUED

KEY = "new_payment"
# What the payment page reads of a payment just created (its template, describe(), the menu
# instructions and the receipt-claim panel); a test renders the page both ways and compares.
FIELDS = ("username", "plan_code", "subscription_type", "amount", "words", "phone", "reference", "status",
          "created_at")
FRESH_FOR = timedelta(seconds=10)


def hand_over(payment: dict) -> None:
    """In the checkout POST, for a payment it created."""
    fields = {k: payment[k] for k in FIELDS if k in payment}
    # As text: the session's own date format keeps whole seconds only, the page counts in fractions.
    fields["created_at"] = as_utc(payment["created_at"]).isoformat()
    session[KEY] = {"_id": str(payment["_id"]), **fields}


def take(payment_id, username: str) -> dict | None:
    """In the page: the payment the checkout handed over, or None (then read it)."""
    handed = session.pop(KEY, None) if KEY in session else None
    if not isinstance(handed, dict) or handed.get("_id") != str(payment_id) or handed.get("username") != username:
        return None
    try:
        created = datetime.fromisoformat(handed.get("created_at") or "")
    except (TypeError, ValueError):
        return None
    if handed.get("status") != QUEUED or created.tzinfo is None or utcnow() - created > FRESH_FOR:
        return None
    return {**handed, "_id": oid(handed["_id"]), "created_at": created}
