"""One refund claim per payment, and the ledger-only refund that books its words at once.

Every refund of a payment, whichever way it goes (ledger-only or M-Pesa Reversal, console or
command, two operators at the same instant), starts with one conditional write on the payment:
`payments.refund = {id, kind, state, actor, at, attempt}`, set only while the payment has no
claim or its claim's attempt failed (read from the attempt's own record). Everything after it
is keyed on the claim's id, so whoever lost the race has written nothing.

A ledger-only refund (`kind: "ledger"`, id `refund:<payment id>`, a retry after a refused one
`refund:<payment id>:<n>`) means the money went back by hand: its words are booked at once,
ledger entry kind "refund" under the claim's id. The claim carries the figures (`words`,
`amount_kes`, `reason`), so a crash between the claim and the entry is finished by the
worker's sweep (app.payments.reversal_job), which books the same entry.
Reversals (`kind: "reversal"`) are app.payments.refunds'.
"""
from __future__ import annotations

from typing import Mapping

from bson import ObjectId

from .. import ledger
from ..db import utcnow
from . import states

REQUESTED, SENT, COMPLETED, FAILED, UNKNOWN = "requested", "sent", "completed", "failed", "unknown"
WAITING = (REQUESTED, SENT)
# A result may still come for these: an unknown reversal (Daraja may have taken the request,
# or its queue timed out) is completed or failed by a late result, never left to guesswork.
OPEN = WAITING + (UNKNOWN,)
# Which states each one may follow: a late "sent" never overwrites a result already in.
AFTER = {SENT: (REQUESTED,), UNKNOWN: WAITING, COMPLETED: OPEN, FAILED: OPEN}
LEDGER, REVERSAL = "ledger", "reversal"


class RefundRefused(ValueError):
    """Nothing was sent or taken; the message is for the operator."""


def key_for(payment_id) -> str:
    """The id of a payment's reversal from before attempts were numbered (still read)."""
    return f"reversal:{payment_id}"


def as_oid(payment_id):
    return payment_id if isinstance(payment_id, ObjectId) else ObjectId(str(payment_id))


def _attempt_failed(db, claim: Mapping) -> bool:
    """The claim's attempt ended without a refund (read from the record itself, the claim may lag)."""
    if claim.get("state") == FAILED:
        return True
    if claim.get("kind") == REVERSAL:
        reversal = db.reversals.find_one({"_id": claim["id"]}, {"state": 1, "followup": 1})
        # Failed, and its held words given back: until then they would be counted as spent.
        return reversal is not None and reversal["state"] == FAILED and not reversal.get("followup")
    entry = db.ledger.find_one({"_id": claim["id"]}, {"state": 1})
    return entry is not None and entry["state"] == "refused"


def _current_claim(db, oid) -> dict | None:
    return (db.payments.find_one({"_id": oid}, {"refund": 1}) or {}).get("refund")


def _refusal(db, oid, claimed: Mapping | None) -> str | None:
    if claimed and not _attempt_failed(db, claimed):
        if claimed["kind"] == LEDGER:
            return (f"A refund was already recorded for this payment by {claimed.get('actor')} "
                    f"({claimed.get('state')}).")
        reversal = db.reversals.find_one({"_id": claimed["id"]}, {"state": 1}) or claimed
        return f"A reversal was already requested by {claimed.get('actor')} ({reversal.get('state')})."
    # Refunds from before the claim, until init-db has marked them on their payments.
    entry = None if claimed else db.ledger.find_one({"_id": f"refund:{oid}", "state": {"$ne": "refused"}},
                                                    {"actor": 1, "state": 1})
    if entry:
        return f"A refund was already recorded for this payment by {entry.get('actor')} ({entry.get('state')})."
    reversal = db.reversals.find_one({"_id": key_for(oid), "state": {"$ne": FAILED}}, {"actor": 1, "state": 1})
    if reversal:
        return f"A reversal was already requested by {reversal.get('actor')} ({reversal.get('state')})."
    return None


def second_refund_refusal(db, payment_id) -> str | None:
    """Why this payment cannot be refunded now, or None.

    One refund per payment, whichever way it goes: a ledger-only refund means the money
    went back by hand, so a reversal after it would send it twice (and the other way round).
    A read, for the operator's message: the claim's conditional write is what decides.
    """
    oid = as_oid(payment_id)
    return _refusal(db, oid, _current_claim(db, oid))


def claim(db, payment_id, *, kind: str, actor: str, **figures) -> dict:
    """Take the payment's one refund claim (one conditional write) or raise RefundRefused."""
    oid = as_oid(payment_id)
    current = _current_claim(db, oid)
    refusal = _refusal(db, oid, current)
    if refusal:
        raise RefundRefused(refusal)
    attempt = int(current.get("attempt") or 1) + 1 if current else 1
    refund_id = (f"reversal:{oid}:{attempt}" if kind == REVERSAL
                 else f"refund:{oid}" if attempt == 1 else f"refund:{oid}:{attempt}")
    new = {"id": refund_id, "kind": kind, "state": REQUESTED, "actor": actor, "at": utcnow(), "attempt": attempt,
           **figures}
    # Whoever read the same claim (none, or the same failed attempt) races for this one write.
    condition = {"_id": oid, "status": states.COMPLETED,
                 **({"refund": {"$exists": False}} if current is None else {"refund.id": current["id"]})}
    if db.payments.update_one(condition, {"$set": {"refund": new}}).modified_count != 1:
        raise RefundRefused(second_refund_refusal(db, oid) or "Another refund of this payment was requested "
                                                              "at the same moment; reload the page.")
    return new


def set_claim_state(db, payment_id, refund_id: str, state: str) -> None:
    """Say on the payment how its claim's attempt stands (never back from an end)."""
    db.payments.update_one({"_id": as_oid(payment_id), "refund.id": refund_id,
                            "refund.state": {"$in": list(AFTER.get(state, OPEN))}},
                           {"$set": {"refund.state": state, "refund.updated_at": utcnow()}})


def book_ledger(db, payment_id, claimed: Mapping) -> dict:
    """A ledger-only refund's words, booked once under its claim's id; the claim records how it ended."""
    oid = as_oid(payment_id)
    username = db.payments.find_one({"_id": oid}, {"username": 1})["username"]
    try:
        entry = ledger.adjust(db, username, -int(claimed["words"]), actor=claimed["actor"], kind="refund",
                              reason=f"{claimed['reason']} (KES {claimed['amount_kes']:,} refunded)",
                              payment_id=str(oid), key=claimed["id"])
    except ledger.InsufficientWords as exc:
        set_claim_state(db, oid, claimed["id"], FAILED)
        raise RefundRefused(f"{username} has only {exc.available:,} words now; nothing was taken.") from None
    set_claim_state(db, oid, claimed["id"], COMPLETED)
    return entry


def backfill_claims(db) -> int:
    """One-off for refunds from before the claim: each payment refunded then gets its claim, so
    the one conditional write sees it. Run by `init-db` (read through the `_id` index); safe to repeat."""
    marked = 0
    for reversal in db.reversals.find({"_id": {"$regex": "^reversal:[0-9a-f]{24}$"}, "state": {"$ne": FAILED}}):
        marked += _backfill(db, reversal["payment_id"], reversal["_id"], REVERSAL, reversal["state"], reversal)
    for entry in db.ledger.find({"_id": {"$regex": "^refund:[0-9a-f]{24}$"}, "state": {"$ne": "refused"}}):
        marked += _backfill(db, entry["payment_id"], entry["_id"], LEDGER, COMPLETED, entry)
    return marked


def _backfill(db, payment_id, refund_id: str, kind: str, state: str, record: Mapping) -> int:
    claimed = {"id": refund_id, "kind": kind, "state": state, "actor": record.get("actor"),
               "at": record.get("created_at") or utcnow(), "attempt": 1}
    return db.payments.update_one({"_id": as_oid(payment_id), "refund": {"$exists": False}},
                                  {"$set": {"refund": claimed}}).modified_count
