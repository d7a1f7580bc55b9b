"""Which use took an M-Pesa receipt (or C2B TransID) a customer or a menu payment can name: one use each.

The `receipts` collection has one document per receipt, its `_id` the receipt itself, so the
database keeps a receipt with one holder: `{_id, use: credit|review|refund, payment_id, via, at}`.
Every path that takes such a receipt (a receipt claim, a menu payment's credit or review, an
operator's assignment, the refund of an unmatched menu payment) inserts here before its
settling write; when the insert finds another holder, that holder wins. Taking a receipt one
already holds proceeds, so a retry, a replay or a crash between the two writes strands nothing.
An unmatched menu payment under review (`review`, no payment) is the one holder the first
claim, assignment or refund may take over, atomically.

The STK callback path does not come here: its receipt is written onto the payment, whose
unique `mpesa_receipt` index is the other wall, and a callback costs no extra operation.

An STK payment settled by STK Query has no receipt yet (`receipt_pending`). Whether a
receipt someone claims could be such a push's payment is decided here too, by one rule both
ways (a claim looking for pushes it could have paid, a query looking for claims that could be
its payment): the same amount, the same payer as far as the phone mask tells (or the same
customer), and a transaction time shortly after the push.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from ..db import as_utc, utcnow
from ..mpesa import c2b as wire
from .states import COMPLETED, EXPIRED, PENDING, QUEUED

CREDIT, REVIEW, REFUND = "credit", "review", "refund"
# A prompt's payment is made while the prompt is open (a minute or two on Daraja); the rest is
# slack for M-Pesa's clock against ours and for a slow PIN entry.
STK_PAID_WITHIN = timedelta(minutes=5)
CLOCK_SLACK = timedelta(minutes=2)
# A payment is pushed within this long of its creation or never (it expires first).
PUSHED_WITHIN = timedelta(hours=1)
# At most this many pushes are weighed for one receipt, the latest before the payment first (the
# one it paid was made a minute or two before it): an hour's unanswered and receipt-less pushes
# of one amount are far fewer.
CANDIDATES_READ = 500
# A result without a transaction time is compared with the pushes of this long before it.
UNTIMED_LOOKBACK = timedelta(days=1)
EAT = timezone(timedelta(hours=3))
_MASKED = re.compile(r"^\d{3,9}\*+\d{2,4}$")
# The menu-payment and reversal states that mean its money went, or is going, back.
_SENT_BACK_C2B = ("refunding", "refunded")
_SENT_BACK_REVERSAL = ("requested", "sent", "unknown", "completed")


# ---------------------------------------------------------------- one holder per receipt

def take(db, receipt: str, use: str, payment_id, via: str) -> dict | None:
    """Take `receipt` for `use` by `payment_id` (None: no order); None when taken, else the holder that won.

    Idempotent for the same holder: a payment taking again a receipt it holds proceeds (a
    review becomes a credit; a credit is never taken back down by a retry).
    """
    pid = str(payment_id) if payment_id is not None else None
    now = utcnow()
    try:
        db.receipts.insert_one({"_id": receipt, "use": use, "payment_id": pid, "via": via, "at": now})
        return None
    except DuplicateKeyError:
        pass
    for _ in range(3):  # a takeover that loses a race reads the winner
        holder = db.receipts.find_one({"_id": receipt})
        if holder is None:
            return None  # never deleted; only a broken database would get here
        if holder.get("payment_id") == pid and (pid is not None or holder["use"] == use):
            if holder["use"] == REVIEW and use == CREDIT:
                db.receipts.update_one({"_id": receipt, "payment_id": pid, "use": REVIEW},
                                       _moved(holder, use, pid, via, now))
            return None
        if holder["use"] != REVIEW or holder.get("payment_id") is not None:
            return holder
        if db.receipts.update_one({"_id": receipt, "use": REVIEW, "payment_id": None},
                                  _moved(holder, use, pid, via, now)).modified_count:
            return None
    return db.receipts.find_one({"_id": receipt})


def _moved(holder: dict, use: str, pid: str | None, via: str, now) -> dict:
    before = {k: holder.get(k) for k in ("use", "payment_id", "via")}
    return {"$set": {"use": use, "payment_id": pid, "via": via, "updated_at": now},
            "$push": {"history": {"$each": [{**before, "until": now}], "$slice": -10}}}


def correct(db, receipt: str, payment_id, use: str) -> None:
    """The settling write ended other than the use taken (a race): the holder says what it became."""
    db.receipts.update_one({"_id": receipt, "payment_id": str(payment_id), "use": {"$ne": use}},
                           {"$set": {"use": use, "updated_at": utcnow()}})


def release(db, receipt: str, *, use: str, payment_id=None) -> None:
    """What took the receipt did not happen after all (a refund not sent, a fill that found another
    receipt there): it is under review again, with no order, for the next claim or assignment."""
    db.receipts.update_one({"_id": receipt, "use": use, "payment_id": str(payment_id) if payment_id else None},
                           {"$set": {"use": REVIEW, "payment_id": None, "via": f"released ({use})",
                                     "updated_at": utcnow()}})


def holder(db, receipt: str) -> dict | None:
    return db.receipts.find_one({"_id": receipt})


def describe(holder: dict) -> str:
    """The holder, for an operator."""
    if holder["use"] == REFUND:
        return f"receipt {holder['_id']} is being or was sent back to the payer"
    if holder.get("payment_id") is None:
        return f"receipt {holder['_id']} is under review"
    return (f"receipt {holder['_id']} is held ({holder['use']}, via {holder.get('via')}) "
            f"by payment {holder['payment_id']}")


def sent_back(db, receipt: str) -> bool:
    """Its menu payment or a reversal of it went back, or is going back (also for data older than `receipts`)."""
    if db.c2b_payments.count_documents({"_id": receipt, "state": {"$in": list(_SENT_BACK_C2B)}}, limit=1):
        return True
    return db.reversals.count_documents({"receipt": receipt, "state": {"$in": list(_SENT_BACK_REVERSAL)}},
                                        limit=1) > 0


# ---------------------------------------------------------------- could it be one of our STK pushes?

def mpesa_time(value) -> datetime | None:
    """M-Pesa's YYYYMMDDHHmmss (East Africa Time, as a number or text), or a datetime, in UTC."""
    if isinstance(value, datetime):
        return as_utc(value) if value.tzinfo is None else value.astimezone(timezone.utc)
    text = str(value or "").strip()
    if not re.fullmatch(r"\d{14}", text):
        return None
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=EAT).astimezone(timezone.utc)
    except ValueError:
        return None


def _phone_tells(shown: str | None) -> bool:
    text = (shown or "").replace(" ", "")
    return bool(text) and (wire.phone_is_exact(text) or bool(_MASKED.match(text)))


def same_payer(payment: dict, shown: str | None, username: str) -> bool:
    """The same customer, or a phone the mask (hash, number) fits; a phone it cannot tell fits anyone."""
    return (payment.get("username") == username or not _phone_tells(shown)
            or wire.phone_matches(payment.get("phone"), (shown or "").replace(" ", "")))


def exact_payer(payment: dict, shown: str | None, username: str) -> bool:
    """Surely the same payer: the same customer, or the exact phone."""
    text = (shown or "").replace(" ", "")
    return payment.get("username") == username or (
        bool(text) and wire.phone_is_exact(text) and wire.phone_matches(payment.get("phone"), text))


def _pushed_at(payment: dict):
    return as_utc(payment.get("pushed_at") or (payment.get("push_in_flight") or {}).get("at")
                  or payment.get("created_at"))


def _paid_within(pushed, paid_at) -> bool:
    return paid_at is None or pushed - CLOCK_SLACK <= paid_at <= pushed + STK_PAID_WITHIN


def _awaits_receipt(payment: dict) -> bool:
    return not payment.get("mpesa_receipt") and bool(payment.get("receipt_pending")
                                                     or payment.get("settled_via") == "query")


def pushes_it_could_pay(db, *, amount, payer: str | None, paid_at, username: str, target_id) -> list[dict]:
    """Our STK pushes a claimed receipt could be the payment of: still open or expired (M-Pesa may
    still settle them), or completed by STK Query and waiting for their receipt. The order the
    claim is for counts only in the last case (it was settled by query while the claim was checked)."""
    if amount is None or amount != int(amount):
        return []
    since = (paid_at - STK_PAID_WITHIN - PUSHED_WITHIN) if paid_at else utcnow() - UNTIMED_LOOKBACK
    until = (paid_at + CLOCK_SLACK) if paid_at else utcnow()
    found = []
    # Only what could still be unpaid or lacks its receipt is read: the receipted completed
    # orders of a busy hour (thousands of the same amount) never crowd the candidates out.
    candidates = {"amount": int(amount), "created_at": {"$gte": since, "$lte": until},
                  "$or": [{"status": {"$in": [QUEUED, PENDING, EXPIRED]}},
                          {"status": COMPLETED, "mpesa_receipt": {"$exists": False}}]}
    for p in db.payments.find(candidates, {"exchanges": 0, "history": 0}).sort(
            "created_at", DESCENDING).limit(CANDIDATES_READ):
        if p["status"] == COMPLETED:
            if not _awaits_receipt(p):
                continue
        elif p["_id"] == target_id or p.get("mpesa_receipt"):
            continue
        if not (p.get("pushed_at") or p.get("push_in_flight") or p.get("push_outcome_unknown")):
            continue  # never sent to a phone: nothing could have paid it
        if _paid_within(_pushed_at(p), paid_at) and same_payer(p, payer, username):
            found.append(p)
    return found


def is_menu_payment(db, receipt: str | None) -> bool:
    """A TransID M-Pesa confirmed to us as a menu (C2B) payment: it was paid to the paybill or
    till, so it is never the payment of one of our STK pushes."""
    return bool(receipt) and db.c2b_payments.count_documents({"_id": receipt}, limit=1) > 0


def claim_it_could_be(db, payment: dict) -> dict | None:
    """A payment credited by a receipt claim on another order that this STK push's payment could be."""
    pushed = _pushed_at(payment)
    for p in db.payments.find({"credited": {"$in": [True, False]}, "settled_at": {"$gte": pushed - CLOCK_SLACK},
                               "status": COMPLETED, "settled_via": "claim", "amount": payment["amount"],
                               "_id": {"$ne": payment["_id"]}}, {"exchanges": 0, "history": 0}).sort(
            "settled_at", 1).limit(CANDIDATES_READ):  # the claims nearest the push first
        if _paid_within(pushed, mpesa_time(p.get("transaction_date"))) and \
                same_payer(payment, p.get("confirmed_phone"), p["username"]) \
                and not is_menu_payment(db, p.get("mpesa_receipt")):
            return p
    return None
