"""Money M-Pesa confirmed that the books cannot place once: probable double credits, ignored payments.

* A payment settled by STK Query carries no receipt (the query does not return one), so
  the receipt index cannot stop the same M-Pesa payment from being credited again on
  another order through a receipt claim. Each such payment (completed, via `query`, no
  `mpesa_receipt`; index `status_age`) is compared with the orders of the same customer or
  phone (indexes `user_history`, `phone`) settled by a receipt claim for the same amount,
  whose receipt is not a menu payment's TransID (money paid from the menu is a payment of
  its own): one whose receipt was paid before that order existed, while this one was
  waiting, or while this order's prompt was on the phone, is probably this payment
  credited twice. When is read from the Transaction Status answer the claim stored.
* A success callback that was ignored because its order was already under review or
  rejected (callbacks by effect, index `unprocessed`) whose receipt no order records:
  the customer paid and nothing holds their money (a stranger's mismatched menu payment
  sent the order to review first).
* An order under review because of a menu payment whose amount is not the order's
  (index `status_age`): a stranger can hold a customer's order that way.
* Two orders that still accept a menu payment sharing one account number (open or
  failed orders of the last REFERENCE_WINDOW, index `status_age`, grouped by the
  server): a payment naming it goes to the newest, whoever meant the other.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ..mpesa.callback import CallbackError, parse_callback
from ..mpesa.transaction_status import parse_result
from ..payments.states import COMPLETED, FAILURE_STATUSES, OPEN_STATUSES, REJECTED, REVIEW
from .problems import Clock, Problem, batches, find_in, naive, problem
from .receipts import oid

EAT = timezone(timedelta(hours=3))
# How long after a query-settled payment another order's credit is still compared with it.
LOOKBACK = timedelta(days=3)
# Clocks differ (M-Pesa's, ours): a receipt paid this close to an order's creation is not "before" it.
CLOCK_SLACK = timedelta(minutes=2)
# A prompt is answered within a minute or two of its push; with the clocks' slack, five.
PROMPT_PAYABLE = timedelta(minutes=5)
# Orders accept a menu payment for a day by default (MPESA_C2B_OPEN_SECONDS); twice that is looked at.
REFERENCE_WINDOW = timedelta(days=2)
IGNORED_EFFECTS = tuple(f"ignored: already {s}" for s in (REVIEW, REJECTED, COMPLETED))
CANDIDATE_FIELDS = {"username": 1, "phone": 1, "amount": 1, "created_at": 1, "settled_at": 1, "mpesa_receipt": 1,
                    "settled_via": 1, "pushed_at": 1}


def suspect_problems(db, clock: Clock) -> list[Problem]:
    return [*_query_settled_twice(db), *_ignored_successes(db), *_held_by_menu_payment(db),
            *_shared_references(db, clock)]


def _query_settled_twice(db):
    receiptless = db.payments.find({"status": COMPLETED, "settled_via": "query",
                                    "mpesa_receipt": {"$exists": False}}, CANDIDATE_FIELDS)
    for first in receiptless:
        created, settled = first.get("created_at"), first.get("settled_at") or first.get("created_at")
        if created is None:
            continue
        same_payer = [{"username": first["username"]}] + ([{"phone": first["phone"]}] if first.get("phone") else [])
        others = db.payments.find({"$or": same_payer, "status": COMPLETED, "amount": first["amount"],
                                   "_id": {"$ne": first["_id"]}, "settled_via": "claim",
                                   "created_at": {"$gte": created, "$lte": naive(settled) + LOOKBACK}},
                                  CANDIDATE_FIELDS)
        for other in others:
            receipt = other.get("mpesa_receipt")
            if not receipt or db.c2b_payments.count_documents({"_id": receipt}, limit=1):
                continue  # a menu payment is money of its own, never an STK push's payment
            paid_at = _paid_at(db, other, receipt)
            if paid_at is not None and naive(paid_at) < naive(other["created_at"]) - CLOCK_SLACK \
                    and naive(paid_at) >= naive(created) - CLOCK_SLACK:
                why = (f"receipt {receipt} was paid at {paid_at:%Y-%m-%d %H:%M} UTC, before order {other['_id']} "
                       f"existed, while order {first['_id']} was waiting")
            elif paid_at is not None and other["settled_via"] == "claim" and _while_prompted(first, paid_at):
                why = (f"receipt {receipt}, claimed on order {other['_id']}, was paid at {paid_at:%Y-%m-%d %H:%M} "
                       f"UTC, while order {first['_id']}'s prompt was on the same customer's phone")
            elif paid_at is None and other["settled_via"] == "claim":
                why = f"the customer claimed receipt {receipt} on order {other['_id']} and M-Pesa's time for it is unknown"
            else:
                continue
            yield problem("probable_double_credit", [first["_id"], other["_id"], receipt],
                          f"Order {first['_id']} (KES {first['amount']}) was settled by STK Query without a receipt, "
                          f"and {why}: probably one M-Pesa payment credited twice. Check the M-Pesa statement.")


def _while_prompted(push: dict, paid_at: datetime) -> bool:
    """Paid in the minutes a prompt is payable: a claimed receipt that is probably the push's own payment."""
    pushed = push.get("pushed_at") or push.get("created_at")
    return pushed is not None and naive(pushed) - CLOCK_SLACK <= naive(paid_at) <= naive(pushed) + PROMPT_PAYABLE


def _paid_at(db, payment: dict, receipt: str) -> datetime | None:
    """When M-Pesa says this receipt was paid, from the Transaction Status answer its claim stored."""
    claim = db.receipt_claims.find_one({"payment_id": str(payment["_id"]), "receipt": receipt},
                                       sort=[("created_at", -1)])
    if claim is None:
        return None
    answer = claim.get("result") if isinstance(claim.get("result"), dict) else None
    if answer is None:
        stored = db.callbacks.find_one({"payment_id": f"claim:{claim['_id']}", "kind": "status_result"},
                                       {"raw": 1})
        try:
            answer = parse_result(stored["raw"]).params if stored else {}
        except CallbackError:
            answer = {}
    for key in ("FinalisedTime", "InitiatedTime", "TransactionDate", "time"):
        if answer.get(key) not in (None, ""):
            return answer[key] if isinstance(answer[key], datetime) else _eat_time(answer[key])
    return None


def _eat_time(value) -> datetime | None:
    """M-Pesa's "20261126101415", Kenyan time, as UTC."""
    text = str(value or "").strip()
    if len(text) != 14 or not text.isdigit():
        return None
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=EAT).astimezone(timezone.utc)
    except ValueError:
        return None


def _ignored_successes(db):
    ignored = db.callbacks.find({"effect": {"$in": list(IGNORED_EFFECTS)}}, {"raw": 1, "payment_id": 1})
    for batch in batches(ignored):
        payments = {str(p["_id"]): p for p in find_in(
            db.payments, "_id", [oid(doc.get("payment_id")) for doc in batch],
            {"status": 1, "mpesa_receipt": 1, "review_receipt": 1, "extra_receipts": 1, "username": 1})}
        for doc in batch:
            try:
                callback = parse_callback(doc.get("raw") or "")
            except CallbackError:
                continue
            payment = payments.get(str(doc.get("payment_id")))
            if not callback.succeeded or not callback.receipt or payment is None:
                continue
            recorded = {payment.get("mpesa_receipt"), payment.get("review_receipt"), *(payment.get("extra_receipts") or [])}
            if callback.receipt in recorded or db.payments.count_documents({"mpesa_receipt": callback.receipt}, limit=1):
                continue
            yield problem("success_ignored", [payment["_id"], callback.receipt],
                          f"Order {payment['_id']} of {payment.get('username')}: M-Pesa confirmed its payment "
                          f"(receipt {callback.receipt}, KES {callback.amount}) but it was ignored because the order "
                          f"was already {payment['status']}; no record holds that money.")


def _held_by_menu_payment(db):
    held = list(db.payments.find({"status": REVIEW, "settled_via": "c2b"},
                                 {"review_receipt": 1, "amount": 1, "username": 1, "reference": 1}))
    menu = {doc["_id"]: doc for doc in find_in(db.c2b_payments, "_id", [p.get("review_receipt") for p in held],
                                                {"amount": 1, "msisdn": 1})}
    for payment in held:
        doc = menu.get(payment.get("review_receipt"))
        if doc is not None and doc.get("amount") != payment["amount"]:
            yield problem("order_held_by_menu_payment", [payment["_id"], doc["_id"]],
                          f"Order {payment['_id']} of {payment.get('username')} (KES {payment['amount']}) is held "
                          f"under review by menu payment {doc['_id']} of KES {doc.get('amount')}: its own payment "
                          "can no longer credit it.")


def _shared_references(db, clock: Clock):
    rows = db.payments.aggregate([
        {"$match": {"status": {"$in": list(OPEN_STATUSES + FAILURE_STATUSES)},
                    "created_at": {"$gte": clock.now - REFERENCE_WINDOW}, "reference": {"$type": "string"}}},
        {"$group": {"_id": "$reference", "ids": {"$push": "$_id"}, "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}}])
    for row in rows:
        yield problem("reference_shared", [row["_id"], *row["ids"]],
                      f"Account number {row['_id']} belongs to {row['n']} orders that still accept a menu payment "
                      f"({', '.join(str(i) for i in row['ids'])}): a payment naming it goes to the newest.")
