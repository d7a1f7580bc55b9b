"""Settlement: what becomes of a payment, decided once, forward only, whatever the order of arrival.

Callbacks, STK Query answers, expiry, customers, operators, receipt claims and menu (C2B)
payments all settle a payment through `settle` (or a callback's `settle_matching`).
Every write that gives a payment a final status is here (app.payments.records only moves
it from queued to pending), and each is one conditional single-document update (see
app.payments.states for the order a status may move in), so a duplicate or late answer
changes nothing and no transaction is needed. A completed payment's words are then
booked by `app.ledger.credit_payment`, the one place that credits a balance; a crash in
between leaves `credited: false` for the ledger's repair pass.

After each settling write the payment is announced on `app.events.payment_settled`;
what a listener does (the notices) can neither undo nor block the write.

One M-Pesa payment is one credit. A success settled by STK Query carries no receipt, so the
payment says `receipt_pending: true` until its own late callback (same CheckoutRequestID)
brings it, or a receipt claim shows that its receipt is this push's (app.payments.receipts);
and a query's success that a credited receipt claim on another order could be is held for
review, not credited. A receipt arriving by any other way for an order already paid is a
second payment: flagged, never credited twice, never written as the order's receipt.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from .. import events, ledger
from ..db import utcnow
from . import receipts
from .states import COMPLETED, FAILURE_STATUSES, OPEN_STATUSES, REJECTED, REVIEW, Outcome

# Its log lines keep the name they had when settlement lived in the ledger: searches and alerts key on it.
log = logging.getLogger("lipia.ledger")


@dataclass
class SettleResult:
    effect: str                       # what this outcome changed, for the callback inbox and logs
    payment: dict | None = None
    credited: bool = False
    notes: list[str] = field(default_factory=list)


def _history(status: str, via: str, note: str | None = None) -> dict:
    return {"status": status, "at": utcnow(), "via": via, **({"note": note} if note else {})}


def mismatch(payment: dict, outcome: Outcome) -> str | None:
    """Why a success cannot be credited as it stands, or None when it matches the order.

    An STK Query answer names the CheckoutRequestID that Daraja pushed with the order's
    own amount but carries no receipt or amount, so it confirms the order as it stands.
    """
    if outcome.via == "query":
        return None
    if outcome.amount is None or outcome.receipt is None:
        return "success without amount or receipt"
    if outcome.amount != payment["amount"]:
        return f"M-Pesa confirmed KES {outcome.amount}, the order was KES {payment['amount']}"
    # A receipt claim names a menu payment, which anyone may make for the order (as C2B does).
    if outcome.via != "claim" and outcome.phone and payment.get("phone") and outcome.phone.isdigit() \
            and outcome.phone != payment["phone"]:
        return "paid from a different phone number than the order's"
    return None


def settle(db, payment_id, outcome: Outcome, *, payment: dict | None = None,
           count_callback: bool = False, hold: str | None = None) -> SettleResult:
    """Apply one outcome to one payment: once, forward only, whatever the order of arrival.

    Callbacks, STK Query answers, expiry and operators all come through here. A caller
    that has just read the payment may pass it to save a read: only its id and the
    order's own fields (amount, phone, words) are used from it, and every write is
    conditional on the stored status, so a copy a moment old decides nothing.
    `count_callback` adds one to the payment's `callbacks_received` in the same write.
    `hold` holds a success for review with that reason (the caller knows why it may not be credited).
    """
    if payment is None:
        payment = db.payments.find_one({"_id": ObjectId(str(payment_id))})
    if payment is None:
        return SettleResult("unknown payment")
    counter = {"$inc": {"callbacks_received": 1}} if count_callback else {}
    if outcome.status == COMPLETED:
        return _settle_success(db, payment, outcome, counter, hold)
    return _settle_failure(db, payment, outcome, counter)


def _current(db, payment_id, counter: dict) -> dict:
    """The payment as it stands, after a settling write did not apply (counting a callback if asked)."""
    if counter:
        return db.payments.find_one_and_update({"_id": payment_id}, counter, return_document=ReturnDocument.AFTER)
    return db.payments.find_one({"_id": payment_id})


def _result_fields(outcome: Outcome) -> dict:
    fields = {"result_code": outcome.result_code, "result_desc": outcome.result_desc,
              "failure_reason": outcome.reason, "customer_message": outcome.customer_message,
              "settled_via": outcome.via, "settled_at": utcnow(), "updated_at": utcnow()}
    if outcome.checkout_request_id:
        fields["checkout_request_id"] = outcome.checkout_request_id
    return {k: v for k, v in fields.items() if v is not None}


# A settled payment no longer waits on the phone: it gives up its customer's open slot
# (see app.payments.records.OPEN_SLOT) in the same write.
_SETTLED_UNSET = {"push_in_flight": "", "open_slot": ""}


def _settle_failure(db, payment: dict, outcome: Outcome, counter: dict) -> SettleResult:
    updated = db.payments.find_one_and_update(
        {"_id": payment["_id"], "status": {"$in": list(OPEN_STATUSES)}},
        {"$set": {"status": outcome.status, **_result_fields(outcome)},
         "$unset": _SETTLED_UNSET, **counter,
         "$push": {"history": _history(outcome.status, outcome.via, outcome.result_desc)}},
        return_document=ReturnDocument.AFTER)
    if updated:
        log.info("payment %s ended %s (%s)", payment["_id"], outcome.status, outcome.reason)
        events.announce(events.payment_settled, db, payment=updated)
        return SettleResult(f"settled {outcome.status}", updated)
    current = _current(db, payment["_id"], counter)
    if current["status"] == COMPLETED and outcome.via == "query":
        # Sandbox queries have answered "failed" for paid requests: never downgrade, flag it.
        note = f"STK Query answered {outcome.result_code} after success"
        db.payments.update_one({"_id": payment["_id"]},
                               {"$set": {"needs_review": True, "review_reason": note}})
        log.warning("payment %s: %s; flagged for review", payment["_id"], note)
        return SettleResult("flagged for review", current, notes=[note])
    return SettleResult(f"ignored: already {current['status']}", current)


def _stored_amount(amount):
    """Whole shillings as an int; anything else kept as text for the reviewer to see."""
    if amount is None:
        return None
    return int(amount) if amount == int(amount) else str(amount)


def _success_update(outcome: Outcome, target: str, problem: str | None, counter: dict) -> dict:
    """The settling write of a success: completed (to be credited) or held for review."""
    fields = {**_result_fields(outcome), "confirmed_amount": _stored_amount(outcome.amount),
              "confirmed_phone": outcome.phone, "transaction_date": outcome.transaction_date}
    if problem:
        fields.update(review_reason=problem, needs_review=True, review_receipt=outcome.receipt)
    else:
        # `credited: false` until credit_payment books the words: the repair pass finds
        # interrupted credits by this one indexed value, however long the history grows.
        fields.update(mpesa_receipt=outcome.receipt, credited=False)
        if outcome.receipt is None:
            fields["receipt_pending"] = True  # STK Query: filled by the push's late callback or a receipt claim
    fields = {k: v for k, v in fields.items() if v is not None}
    return {"$set": {"status": target, **fields}, "$unset": _SETTLED_UNSET, **counter,
            "$push": {"history": _history(target, outcome.via, problem or outcome.receipt)}}


def _settle_success(db, payment: dict, outcome: Outcome, counter: dict, hold: str | None = None) -> SettleResult:
    problem = hold or mismatch(payment, outcome)
    if problem is None and outcome.via == "query":
        problem = _claimed_elsewhere(db, payment)
    target = REVIEW if problem else COMPLETED
    condition = {"_id": payment["_id"], "status": {"$in": list(OPEN_STATUSES + FAILURE_STATUSES)}}
    update = _success_update(outcome, target, problem, counter)
    try:
        updated = db.payments.find_one_and_update(condition, update, return_document=ReturnDocument.AFTER)
    except DuplicateKeyError:
        # The receipt is already on another payment: never credit one receipt twice.
        problem = f"receipt {outcome.receipt} was already used for another payment"
        update = _success_update(outcome, REVIEW, problem, counter)
        updated = db.payments.find_one_and_update(condition, update, return_document=ReturnDocument.AFTER)
        target = REVIEW
    if updated is None:
        current = _current(db, payment["_id"], counter)
        if current["status"] == COMPLETED:
            ledger.credit_payment(db, current)  # a duplicate success still finishes an interrupted credit
            if outcome.receipt and outcome.receipt != current.get("mpesa_receipt"):
                _late_receipt(db, current, outcome, problem)
        elif outcome.receipt and current["status"] in (REVIEW, REJECTED):
            _receipt_after_review(db, current, outcome)
        return SettleResult(f"ignored: already {current['status']}", current)
    if target == REVIEW:
        log.warning("payment %s held for review: %s", payment["_id"], problem)
        events.announce(events.payment_settled, db, payment=updated)
        return SettleResult("held for review", updated, notes=[problem])
    return _credited(db, updated, outcome)


def _credited(db, updated: dict, outcome: Outcome) -> SettleResult:
    """Book the words of a payment this process's settling write has just completed."""
    entry = ledger.credit_payment(db, updated, fresh=True)
    log.info("payment %s completed, receipt %s", updated["_id"], outcome.receipt)
    # credit_payment set these fields; the rest is the post-image of the settling write.
    credited = {**updated, **ledger.credit_fields(entry)}
    events.announce(events.payment_settled, db, payment={**credited, "user_after": entry.get("user_after")})
    return SettleResult("credited", credited, credited=True)


def settle_matching(db, payment_id, outcome: Outcome) -> SettleResult | None:
    """A callback's usual case in one write: settle the payment if it is still open and
    matches the callback (its CheckoutRequestID, and for a success the order's amount and
    phone), counting the callback in the same write. Returns None when the write did not
    apply (no such payment, settled already, a mismatch or a reused receipt): the caller
    then reads the payment and goes through `settle`, which sorts out why. The conditions
    are the ones `settle` checks on a payment it has read, so a match decides the same.
    """
    cid = outcome.checkout_request_id
    if not cid:
        return None
    # A callback can overtake the push reply, before the payment knows its CheckoutRequestID.
    condition: dict[str, Any] = {"_id": payment_id, "checkout_request_id": {"$in": [cid, None]}}
    counter = {"$inc": {"callbacks_received": 1}}
    if outcome.status != COMPLETED:
        condition["status"] = {"$in": list(OPEN_STATUSES)}
        updated = db.payments.find_one_and_update(
            condition,
            {"$set": {"status": outcome.status, **_result_fields(outcome)}, "$unset": _SETTLED_UNSET, **counter,
             "$push": {"history": _history(outcome.status, outcome.via, outcome.result_desc)}},
            return_document=ReturnDocument.AFTER)
        if updated is None:
            return None
        log.info("payment %s ended %s (%s)", payment_id, outcome.status, outcome.reason)
        events.announce(events.payment_settled, db, payment=updated)
        return SettleResult(f"settled {outcome.status}", updated)
    amount = outcome.amount
    if amount is None or outcome.receipt is None or outcome.via == "query" or amount != int(amount):
        return None  # never credited as it stands: `settle` holds it for review
    condition.update(status={"$in": list(OPEN_STATUSES + FAILURE_STATUSES)}, amount=int(amount))
    if outcome.phone and outcome.phone.isdigit():
        # What _mismatch allows: the order's own phone, or an order that has none.
        condition["$or"] = [{"phone": outcome.phone}, {"phone": {"$in": [None, ""]}}]
    try:
        updated = db.payments.find_one_and_update(condition, _success_update(outcome, COMPLETED, None, counter),
                                                  return_document=ReturnDocument.AFTER)
    except DuplicateKeyError:
        return None  # a reused receipt: `settle` holds it for review
    if updated is None:
        return None
    return _credited(db, updated, outcome)


def _claimed_elsewhere(db, payment: dict) -> str | None:
    """Why a query's success may not be credited: a receipt claim on another order could be this push's payment."""
    other = receipts.claim_it_could_be(db, payment)
    if other is None:
        return None
    return (f"STK Query says this push was paid, but receipt {other.get('mpesa_receipt')} credited on order "
            f"{other.get('reference')} by a receipt claim could be the same payment: credit at most one")


def _own_callback(payment: dict, outcome: Outcome) -> bool:
    return outcome.via == "callback" and bool(outcome.checkout_request_id) \
        and outcome.checkout_request_id == payment.get("checkout_request_id")


def _late_receipt(db, payment: dict, outcome: Outcome, problem: str | None) -> None:
    """A receipt for an order already paid: its own push's late callback brings the receipt a query
    lacked; anything else (a menu payment, another push) is a second payment."""
    if payment.get("mpesa_receipt") or not _own_callback(payment, outcome):
        _flag_second_payment(db, payment, outcome)
    elif problem:
        _flag_second_payment(db, payment, outcome, f"the push's late callback does not match: {problem}")
    elif fill_receipt(db, payment["_id"], outcome.receipt, via=outcome.via, amount=outcome.amount) == "elsewhere":
        db.payments.update_one({"_id": payment["_id"]}, {"$set": {
            "needs_review": True, "review_reason": f"receipt {outcome.receipt} is on another payment too"}})


def _receipt_after_review(db, payment: dict, outcome: Outcome) -> None:
    """M-Pesa confirmed money for an order under review or rejected: never lost. A review an STK
    Query's success left without a receipt takes its own push's receipt, the one its approval
    credits; anything else is a second payment, flagged for an operator."""
    if outcome.receipt in (payment.get("review_receipt"), payment.get("mpesa_receipt"),
                           *(payment.get("extra_receipts") or [])):
        return  # a duplicate: this money is recorded here already
    if payment["status"] == REVIEW and not payment.get("review_receipt") and _own_callback(payment, outcome) \
            and mismatch(payment, outcome) is None \
            and receipts.take(db, outcome.receipt, receipts.REVIEW, payment["_id"], "callback") is None:
        reason = f"{payment.get('review_reason') or 'under review'}; its own callback brought receipt {outcome.receipt}"
        if db.payments.update_one(
                {"_id": payment["_id"], "status": REVIEW, "review_receipt": {"$exists": False}},
                {"$set": {"review_receipt": outcome.receipt, "confirmed_amount": _stored_amount(outcome.amount),
                          "confirmed_phone": outcome.phone, "review_reason": reason, "updated_at": utcnow()}}
        ).modified_count:
            log.warning("payment %s under review: %s", payment["_id"], reason)
            return
    _flag_second_payment(db, payment, outcome)


def fill_receipt(db, payment_id, receipt: str, *, via: str, amount=None) -> str:
    """Give a payment completed without a receipt (STK Query) the one it lacked, through the unique
    receipt index: "filled" (now or before), "elsewhere" (another payment holds it) or "other" (it
    holds another receipt, or is not completed)."""
    fields = {"mpesa_receipt": receipt, "receipt_via": via, "updated_at": utcnow()}
    if amount is not None:
        fields["confirmed_amount"] = _stored_amount(amount)
    try:
        done = db.payments.update_one(
            {"_id": payment_id, "status": COMPLETED, "mpesa_receipt": {"$exists": False}},
            {"$set": fields, "$unset": {"receipt_pending": ""},
             "$push": {"history": _history(COMPLETED, via, f"receipt {receipt}")}}).modified_count
    except DuplicateKeyError:
        return "elsewhere"
    if done:
        log.info("payment %s: receipt %s filled in (via %s)", payment_id, receipt, via)
        return "filled"
    current = db.payments.find_one({"_id": payment_id}, {"mpesa_receipt": 1})
    return "filled" if current and current.get("mpesa_receipt") == receipt else "other"


def _flag_second_payment(db, payment: dict, outcome: Outcome, note: str | None = None) -> None:
    """A second, different M-Pesa payment for an order already paid (STK and the menu both):
    never credited twice, never lost: the order is flagged with the extra receipt for an operator."""
    note = note or (f"a second M-Pesa payment (receipt {outcome.receipt}, via {outcome.via}) arrived after this "
                    "order was paid")
    # The extra receipt is held for this order's review, so no claim or assignment credits it
    # while an operator may be sending it back; one that credits elsewhere already is no second
    # payment to send back here.
    holder = receipts.take(db, outcome.receipt, receipts.REVIEW, payment["_id"], "second payment")
    credited = db.payments.find_one({"mpesa_receipt": outcome.receipt, "_id": {"$ne": payment["_id"]}}, {"_id": 1})
    if credited is not None or (holder is not None and holder["use"] != receipts.REVIEW):
        log.warning("payment %s: receipt %s arrived again but is already %s", payment["_id"], outcome.receipt,
                    f"the receipt of payment {credited['_id']}" if credited else receipts.describe(holder))
        return
    db.payments.update_one({"_id": payment["_id"]},
                           {"$set": {"needs_review": True, "review_reason": note},
                            "$addToSet": {"extra_receipts": outcome.receipt}})
    log.warning("payment %s: %s", payment["_id"], note)


def unpaid_review(payment: dict) -> str | None:
    """Why approving this review would credit words nobody paid for, or None.

    M-Pesa confirmed an amount other than the order's: approval credits the order's words,
    so it is refused whatever the operator types. (Orders held this way by a menu payment
    before menu payments stopped touching the order are the usual case.)
    """
    confirmed = payment.get("confirmed_amount")
    if confirmed is None or confirmed == payment["amount"]:
        return None
    return (f"M-Pesa confirmed KES {confirmed} for this order of KES {payment['amount']}: approving would credit "
            "words that were not paid for, so it can only be rejected (then send the money back)")


def resolve_review(db, payment_id, *, actor: str, approve: bool, reason: str) -> dict:
    """An operator's verdict on a payment under review: credit it, or reject it."""
    if not reason or not reason.strip():
        raise ValueError("a review decision needs a reason")
    target = COMPLETED if approve else REJECTED
    fields = {"status": target, "needs_review": False, "reviewed_by": actor, "review_decision": reason.strip(),
              "updated_at": utcnow()}
    if approve:
        fields["credited"] = False  # until credit_payment below books it (the repair pass's marker)
    payment = db.payments.find_one({"_id": ObjectId(str(payment_id)), "status": REVIEW})
    if payment is None:
        raise ValueError("this payment is not under review")
    unpaid = unpaid_review(payment) if approve else None
    if unpaid:
        raise ValueError(unpaid)
    if approve and payment.get("review_receipt"):
        # The receipt's one holder (app.payments.receipts): a claim, menu payment or refund that took it wins.
        holder = receipts.take(db, payment["review_receipt"], receipts.CREDIT, payment["_id"], "operator")
        if holder is not None:
            raise ValueError(receipts.describe(holder))
        fields["mpesa_receipt"] = payment["review_receipt"]
    elif approve and not payment.get("mpesa_receipt"):
        fields["receipt_pending"] = True  # confirmed without a receipt (STK Query): filled when one comes
    try:
        updated = db.payments.find_one_and_update(
            {"_id": payment["_id"], "status": REVIEW},
            {"$set": fields, "$push": {"history": _history(target, "operator", f"{actor}: {reason.strip()}")}},
            return_document=ReturnDocument.AFTER)
    except DuplicateKeyError:
        # Its own push's callback put the receipt on another payment: it stays a review here.
        receipts.correct(db, payment["review_receipt"], payment["_id"], receipts.REVIEW)
        raise
    if updated is None:
        raise ValueError("this payment was resolved by someone else just now")
    if approve:
        ledger.credit_payment(db, updated)
    events.announce(events.payment_settled, db, payment=updated)
    return db.payments.find_one({"_id": payment["_id"]})
