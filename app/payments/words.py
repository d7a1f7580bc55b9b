"""A customer's words in and out, one row per applied ledger entry: bought, spent, adjusted, refunded."""
from __future__ import annotations

from flask_babel import gettext as _, lazy_gettext as _l
from pymongo import DESCENDING

# What each kind of ledger entry means to the customer.
KIND_LABELS = {"purchase": _l("Bought"), "spend": _l("Spent"), "adjustment": _l("Adjusted by Lipia"),
               "refund": _l("Refunded"), "hold": _l("Held for a refund"),
               "release": _l("Returned: the refund did not go through")}
SHOWN_FIELDS = {"delta": 1, "kind": 1, "created_at": 1, "channel": 1, "note": 1, "reason": 1, "payment_id": 1}


def word_history(db, username: str, *, page: int, per_page: int) -> tuple[list[dict], int]:
    """Newest first; served by the ledger's (username, created_at) index. Pending entries are not shown."""
    query = {"username": username, "state": "applied"}
    total = db.ledger.count_documents(query)
    rows = list(db.ledger.find(query, SHOWN_FIELDS).sort("created_at", DESCENDING)
                .skip((page - 1) * per_page).limit(per_page))
    return [{**row, "label": KIND_LABELS.get(row.get("kind"), str(row.get("kind", "")).capitalize()),
             "detail": _detail(row)} for row in rows], total


def _detail(row: dict) -> str:
    if row.get("kind") == "spend":
        return " · ".join(part for part in (_("via %(channel)s", channel=row["channel"]) if row.get("channel") else "",
                                            row.get("note") or "") if part)
    return row.get("reason") or row.get("note") or ""
