"""CSV exports, streamed row by row from a database cursor, each one in the audit log.

Nothing is collected in memory: each row is written to a small buffer, handed to the
client and forgotten, so exporting a year of payments costs what exporting one does.
Times are Kenyan time with their offset (2026-11-26T20:15:00+03:00), as the console
shows them, so a spreadsheet and the screen agree on which day a payment belongs to.
"""
from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Iterable

from flask import Response, stream_with_context

from .. import audit
from ..db import as_utc, utcnow
from ..mpesa.redact import mask_phone
from . import periods

PAYMENT_COLUMNS = (
    "_id", "created_at", "username", "phone", "plan_code", "subscription_type", "amount", "words", "status",
    "mpesa_receipt", "checkout_request_id", "merchant_request_id", "reference", "result_code", "result_desc",
    "failure_reason", "settled_via", "settled_at", "credited", "confirmed_amount", "needs_review",
    "review_reason", "reviewed_by", "callbacks_received",
)
LEDGER_COLUMNS = (
    "_id", "created_at", "username", "kind", "delta", "state", "balance_after", "payment_id", "receipt",
    "actor", "reason", "channel", "note",
)
# Never exported whatever a column list says: they would let a reader forge callbacks.
NEVER_EXPORTED = frozenset({"callback_secret", "password", "api_key_hash"})
EXPORT_ACTIONS = {"payments": "export_payments", "ledger": "export_ledger"}
AUDIT_ACTIONS = frozenset({"ask_daraja", "requeue_job", "approve_review", "reject_review", "clear_review_flag",
                           "credit_words", "debit_words", "refund", "reversal", "settle_reversal", "assign_c2b", "reset_link",
                           "password_reset", "reset_password", "password_change", "log_out_everywhere",
                           "promote_admin", *EXPORT_ACTIONS.values()})
# A cell starting with one of these is a formula to a spreadsheet; customer text must not run.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, datetime):
        return as_utc(value).astimezone(periods.EAT).isoformat(timespec="seconds")
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def rows_as_csv(columns: Iterable[str], docs: Iterable[dict]):
    """Yield the header line, then one encoded line per document."""
    columns = [c for c in columns if c not in NEVER_EXPORTED]
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> bytes:
        line = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate(0)
        return line.encode("utf-8")

    writer.writerow(columns)
    yield flush()
    for doc in docs:
        writer.writerow([cell(doc.get(column)) for column in columns])
        yield flush()


def csv_response(name: str, columns: Iterable[str], cursor) -> Response:
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    response = Response(stream_with_context(rows_as_csv(columns, cursor)), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="lipia-{name}-{stamp}.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response


def ledger_query(date_from: str | None, date_to: str | None, username: str | None = None) -> dict:
    """Entries created on the given Kenyan days (both included); raises ValueError."""
    query = periods.range_query("created_at", periods.parse_day(date_from), periods.parse_day(date_to))
    if username and username.strip():
        query["username"] = username.strip()[:64]
    return query


def record(db, *, actor: str, what: str, date_from: str | None, date_to: str | None, filters: dict,
           rows: int) -> dict:
    """Write the export to the audit log: who, what, which range (before the first row is sent).

    Exports carry customers' phone numbers, so each one is accounted for. A phone typed
    as a filter is kept masked, as the logs keep it.
    """
    kept = {name: (mask_phone(value) if name == "phone" else str(value)[:64])
            for name, value in sorted(filters.items()) if value}
    span = f"{date_from or 'the first day'} to {date_to or 'today'} (EAT days)"
    detail = f"{what.capitalize()} CSV, created {span}"
    if kept:
        detail += "; " + ", ".join(f"{name} {value}" for name, value in kept.items())
    return audit.record(db, actor=actor, action=EXPORT_ACTIONS[what], target_type="export", target_id=what,
                              reason=detail, after={"from": date_from or None, "to": date_to or None,
                                                    "filters": kept, "rows": rows},
                              result=f"{rows:,} row{'' if rows == 1 else 's'}")
