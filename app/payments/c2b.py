"""Payments from the M-Pesa menu (C2B paybill / till): store, match, settle once per TransID.

The URL secret is checked first, without the database: a forged or refused post keeps
only the callback route's small, expiring, per-address-limited record. A genuine one is
kept in the callback inbox, whole, before anything reads it; when the database is away it
goes to the callback spool (kind `c2b_confirmation`) and is settled once replayed, and
Daraja still gets its C2B acknowledgement. Each
`TransID` then gets one `c2b_payments` document whose `_id` is the TransID, so a
duplicate or concurrent confirmation finds the first one instead of booking twice.
A matched confirmation settles its order through `settlement.settle`, the path STK
callbacks take; the order's unique `mpesa_receipt` index keeps one receipt on one
order. Whatever cannot be credited as it stands (an unknown account number, a wrong
amount, an order already paid, a till payer who cannot be told apart) stays in `review`
for an operator: never lost. A payment that names an order but not its amount is held
without touching that order (`named_payment_id` says which), so a stranger who pays KES 1
to someone's account number cannot stop that order being paid; and it only ever pays an
order of exactly its amount. Account numbers are described in app.payments.references.
"""
from __future__ import annotations

import hmac
import logging
import re
import sys
from datetime import timedelta
from typing import Any, Mapping

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from ..config import DEV_C2B_URL_SECRET
from ..db import utcnow
from ..mpesa import c2b as wire
from ..mpesa.errors import CallbackError
from . import callbacks, receipts, records, references, rejected, settlement, states

log = logging.getLogger("lipia.c2b")

RECEIVED, CREDITED, REVIEW = "received", "credited", "review"
INBOX_KIND = "c2b_confirmation"
# What the inbox records name in `payment_id`: a confirmation names no payment of ours.
INBOX_LABEL = "c2b"
RESUME_AFTER = timedelta(seconds=30)
_HEX_TAIL = re.compile(r"^[0-9A-F]{6}$")


# ---------------------------------------------------------------- secrets and shortcodes

def secret_ok(config: Mapping[str, Any], secret: str) -> bool:
    expected = str(config.get("MPESA_C2B_URL_SECRET") or "")
    if config.get("LIPIA_ENV") == "production" and expected == DEV_C2B_URL_SECRET:
        expected = ""  # the published development secret guards nothing in production
    # An unset secret accepts nothing; compare_digest keeps the comparison's timing flat.
    return bool(expected) and hmac.compare_digest(secret.encode(), expected.encode())


def our_shortcodes(config: Mapping[str, Any]) -> set[str]:
    return {str(v) for v in (config.get("MPESA_SHORTCODE"), config.get("MPESA_PARTY_B")) if v}


# ---------------------------------------------------------------- matching

def _open_since(config: Mapping[str, Any]):
    return utcnow() - timedelta(seconds=int(config.get("MPESA_C2B_OPEN_SECONDS") or 86400))


def _payable(payment: dict, since) -> bool:
    created = payment.get("created_at")
    if created is not None and created.replace(tzinfo=None) < since.replace(tzinfo=None):
        return False
    return payment["status"] in states.OPEN_STATUSES + states.FAILURE_STATUSES


def orders_for_account(db, config: Mapping[str, Any], bill_ref: str) -> list[dict]:
    """The orders an account number could mean, newest first (case, spaces, missing prefix forgiven)."""
    return _account_lookup(db, config, bill_ref)[0]


def _account_lookup(db, config: Mapping[str, Any], bill_ref: str) -> tuple[list[dict], bool]:
    """(the orders an account number names, whether it is a reference of ours with a typo in it)."""
    code, typo = references.typed_code(bill_ref)
    if code:
        found = list(db.payments.find({"reference_code": code}, {"exchanges": 0}).limit(1))
        if found:
            return found, False
    # A legacy hex reference can pass the new check by chance (one in 31): look it up as legacy too.
    return _legacy_orders(db, config, bill_ref), typo


def _legacy_orders(db, config: Mapping[str, Any], bill_ref: str) -> list[dict]:
    """Orders from before random references: prefix + the last six hex digits of their ObjectId.

    Those were neither secret nor unique (forked web workers counted alike), so several
    orders may share one; the newest first, as before.
    """
    prefix = str(config.get("MPESA_ACCOUNT_REFERENCE") or "")
    tail = wire.account_key(bill_ref, prefix)[-6:]
    if not _HEX_TAIL.match(tail):
        return []
    return list(db.payments.find({"reference": records.legacy_reference_for_tail(tail, prefix),
                                  "reference_code": {"$exists": False}},
                                 {"exchanges": 0}).sort("created_at", DESCENDING).limit(5))


def match(db, config: Mapping[str, Any], conf: wire.Confirmation) -> tuple[dict | None, str | None]:
    """(the order this payment is for, None) or (None, why it needs an operator)."""
    since = _open_since(config)
    if conf.shortcode and conf.shortcode not in our_shortcodes(config):
        return None, f"paid to shortcode {conf.shortcode}, which is not ours"
    if conf.is_till:
        return _till_match(db, conf, since)
    orders, typo = _account_lookup(db, config, conf.bill_ref)
    if not orders:
        return None, f"unknown account number {conf.bill_ref!r}" + (
            " (typo? its check character does not match)" if typo else "")
    payable = [p for p in orders if _payable(p, since)]
    if payable:
        return payable[0], None
    newest = orders[0]
    if newest["status"] in (states.COMPLETED, states.REVIEW, states.REJECTED):
        return None, f"order {newest['reference']} is already {newest['status']}"
    return None, f"order {newest['reference']} no longer accepts payment"


def _till_match(db, conf: wire.Confirmation, since) -> tuple[dict | None, str | None]:
    """A till payment names no order: it is matched by amount and by a phone that names one payer.

    A v2 mask ("2547 ***** 126") shows seven of twelve digits: thousands of payers share
    it, so a stranger's payment could land on a lone open order of the same amount. Only
    a v1 hash (or a plain number) is exact; anything else waits for an operator.
    """
    amount = conf.whole_amount
    if amount is None:
        return None, "till payment with cents matches no order"
    if not wire.phone_is_exact(conf.msisdn):
        return None, (f"till payment from a masked phone number ({conf.msisdn[:20]!r}): it could be any of "
                      "thousands of payers, so it is not matched to an order")
    candidates = [p for p in db.payments.find(
        {"status": {"$in": list(states.OPEN_STATUSES + states.FAILURE_STATUSES)}, "amount": amount,
         "created_at": {"$gte": since}}, {"exchanges": 0}).sort("created_at", DESCENDING).limit(200)
        if wire.phone_matches(p.get("phone"), conf.msisdn)]
    payers = {p["username"] for p in candidates}
    if len(payers) == 1:
        return candidates[0], None
    if not candidates:
        return None, "till payment matches no open order by amount and phone"
    return None, f"till payment could be for {len(payers)} customers sharing one phone number"


def _amount_problem(payment: dict, conf: wire.Confirmation) -> str | None:
    """Why a menu payment cannot pay the order it named, or None when it is that order's amount.

    Such a payment is held for review without touching the order: anyone who knows (or
    guesses) an account number could otherwise pay KES 1 to it and hold the owner's order
    in review, so that the owner's own payment was then refused.
    """
    amount = conf.whole_amount
    if amount is not None and amount == payment["amount"]:
        return None
    paid = amount if amount is not None else conf.amount
    return (f"KES {paid} paid for order {payment['reference']} of KES {payment['amount']}: not credited, the order "
            "stays open for its own payment; this can only pay an order of exactly its amount, or go back")


# ---------------------------------------------------------------- confirmation

def handle_confirmation(db, config: Mapping[str, Any], *, secret: str, raw: bytes,
                        remote_addr: str | None, content_type: str | None) -> str:
    """Check, keep, then settle one confirmation; return its effect. Never raises to Daraja."""
    try:
        return _handle_confirmation(db, config, secret, raw, remote_addr, content_type)
    except Exception:  # a bug must not cost Daraja's acknowledgement (nor put the URL in a 500)
        log.exception("C2B confirmation could not be handled")
        return "error"


def _handle_confirmation(db, config, secret, raw, remote_addr, content_type) -> str:
    allowed = config.get("CALLBACK_ALLOWED_IPS") or ()
    if allowed and remote_addr not in allowed:
        return rejected.keep(db, config, "refused: address not allowed", INBOX_LABEL, raw,
                                       remote_addr, content_type)
    if not secret_ok(config, secret):
        return rejected.keep(db, config, "forged: wrong secret", INBOX_LABEL, raw, remote_addr,
                                       content_type)
    doc = {**records.callback_doc(payment_id=INBOX_LABEL, raw=raw, remote_addr=remote_addr,
                                  content_type=content_type), "kind": INBOX_KIND}
    not_stored = callbacks.keep_genuine(db, config, doc, raw)
    if not_stored is not None:
        return not_stored
    return callbacks.process(db, doc, raw, config)


def process_stored(db, config, doc: dict, body: bytes | str) -> tuple[str, dict]:
    """Settle one stored genuine confirmation (just received, replayed from the spool, or left over)."""
    if doc.get("truncated"):
        return "malformed: body larger than the spool keeps", {}
    try:
        conf = wire.parse_confirmation(body)
    except CallbackError as exc:
        log.warning("malformed C2B confirmation: %s", exc)
        return f"malformed: {exc}", {}
    new = _c2b_doc(conf)
    try:
        # The TransID is the document's _id: a second copy (Daraja's retry, a replay) finds the first.
        db.c2b_payments.insert_one(new)
    except DuplicateKeyError:
        new = db.c2b_payments.find_one({"_id": conf.trans_id})
        if new["state"] != RECEIVED:
            return f"duplicate: already {new['state']}", {"trans_id": conf.trans_id}
        # The first copy is still being settled (or was cut short): finishing it again is safe.
    return settle(db, config, new, conf), {"trans_id": conf.trans_id}


def _c2b_doc(conf: wire.Confirmation) -> dict:
    now = utcnow()
    amount = conf.whole_amount
    return {"_id": conf.trans_id, "trans_type": conf.trans_type,
            "amount": amount if amount is not None else str(conf.amount),
            "bill_ref": conf.bill_ref, "msisdn": conf.msisdn, "shortcode": conf.shortcode,
            "trans_time": conf.trans_time, "first_name": conf.first_name, "state": RECEIVED,
            "received_at": now, "updated_at": now}


def settle(db, config, doc: dict, conf: wire.Confirmation | None = None) -> str:
    """Take one stored confirmation to credited or review. Idempotent: any copy may run it."""
    conf = conf or _confirmation_of(doc)
    if doc.get("assigned_payment"):
        payment, problem = records.get(db, doc["assigned_payment"]), "the assigned order is gone"
    else:
        payment, problem = match(db, config, conf)
    if payment is None:
        # A concurrent copy of this confirmation may have settled the order just before `match`
        # read it (so it no longer looked payable): read after the match, that order is the one.
        payment = _settled_by(db, conf.trans_id) or None
    if payment is None:
        return _finish(db, doc["_id"], REVIEW, _take_receipt(db, conf, None, doc)[1] or problem, None)
    mismatch = _amount_problem(payment, conf)
    if mismatch:
        # Unmatched, as the order it named is left alone: the receipt is under review with no order.
        return _finish(db, doc["_id"], REVIEW, _take_receipt(db, conf, None, doc)[1] or mismatch, None,
                       named=payment)
    use, held = _take_receipt(db, conf, payment, doc)
    if held:
        return _finish(db, doc["_id"], REVIEW, held, None)
    result = settlement.settle(db, payment["_id"], outcome_for(conf, doc.get("assigned_by")), payment=payment)
    current = records.get(db, payment["_id"])
    # Credited by this TransID: by a copy of this confirmation, or by the customer's receipt claim.
    ours = current.get("settled_via") in ("c2b", "claim")
    if result.credited or (ours and current.get("mpesa_receipt") == conf.trans_id):
        return _finish(db, doc["_id"], CREDITED, None, current)
    if use == receipts.CREDIT:
        receipts.correct(db, conf.trans_id, payment["_id"], receipts.REVIEW)  # it did not credit after all
    if result.effect == "held for review" or (ours and current.get("review_receipt") == conf.trans_id):
        return _finish(db, doc["_id"], REVIEW, current.get("review_reason"), current)
    return _finish(db, doc["_id"], REVIEW, f"order {current['reference']} was already {current['status']} "
                                           "when this payment arrived", current)


def _take_receipt(db, conf: wire.Confirmation, payment: dict | None, doc: dict) -> tuple[str, str | None]:
    """Take the TransID (app.payments.receipts) before the settling write: (the use taken, or why it
    was not: another payment, a claim or a refund holds it, and the confirmation goes to review)."""
    use = receipts.REVIEW
    if payment is not None and payment["status"] in states.OPEN_STATUSES + states.FAILURE_STATUSES \
            and not settlement.mismatch(payment, outcome_for(conf)):
        use = receipts.CREDIT
    holder = receipts.take(db, conf.trans_id, use, payment["_id"] if payment else None,
                           "assign" if doc.get("assigned_by") else "c2b")
    return use, receipts.describe(holder) if holder else None


def _settled_by(db, trans_id: str) -> dict | None:
    return (db.payments.find_one({"mpesa_receipt": trans_id}, {"exchanges": 0})
            or db.payments.find_one({"review_receipt": trans_id}, {"exchanges": 0}))


def outcome_for(conf: wire.Confirmation, actor: str | None = None) -> states.Outcome:
    amount = conf.whole_amount
    return states.Outcome(status=states.COMPLETED, via="c2b", result_code="0",
                          result_desc=f"{conf.trans_type or 'C2B'} payment {conf.trans_id}",
                          receipt=conf.trans_id, amount=amount if amount is not None else conf.amount,
                          transaction_date=conf.trans_time or None, actor=actor)


def _confirmation_of(doc: dict) -> wire.Confirmation:
    return wire.Confirmation(trans_id=doc["_id"], trans_type=doc.get("trans_type", ""),
                             amount=wire.parse_amount(doc["amount"]), shortcode=doc.get("shortcode", ""),
                             bill_ref=doc.get("bill_ref", ""), msisdn=doc.get("msisdn", ""),
                             trans_time=doc.get("trans_time", ""), first_name=doc.get("first_name", ""),
                             third_party_id="")


def _finish(db, trans_id: str, state: str, reason: str | None, payment: dict | None,
            named: dict | None = None) -> str:
    """`payment` is the order this payment settled (or is held on); `named` one it named but
    could not pay: kept for the operator, while the payment stays unmatched and assignable."""
    fields: dict[str, Any] = {"state": state, "updated_at": utcnow()}
    if payment is not None:
        fields.update(payment_id=str(payment["_id"]), username=payment["username"])
    if named is not None:
        fields.update(named_payment_id=str(named["_id"]), named_reference=named["reference"])
    if reason:
        fields["review_reason"] = reason
    if db.c2b_payments.update_one({"_id": trans_id, "state": RECEIVED}, {"$set": fields}).modified_count == 0:
        # A concurrent copy of the same confirmation finished first; it settled the same way.
        return f"duplicate: already {state}"
    if state == CREDITED:
        log.info("C2B payment %s credited order %s", trans_id, payment["_id"])
        return "credited"
    log.warning("C2B payment %s held for review: %s", trans_id, reason)
    return "held for review"


def resume_received(db, config, older_than: timedelta = RESUME_AFTER) -> int:
    """Finish confirmations whose processing a crash cut short (state still `received`)."""
    done = 0
    for doc in db.c2b_payments.find({"state": RECEIVED, "received_at": {"$lt": utcnow() - older_than}}).limit(100):
        settle(db, config, doc)
        done += 1
    return done


# ---------------------------------------------------------------- validation

def handle_validation(db, config: Mapping[str, Any], *, secret: str, raw: bytes) -> dict:
    """Daraja's question "may this customer pay?": accept, or reject with Daraja's code."""
    if not secret_ok(config, secret):
        log.warning("C2B validation with a wrong URL secret refused")
        return wire.reject(wire.OTHER_ERROR)
    try:
        conf = wire.parse_confirmation(raw)
    except CallbackError as exc:
        log.warning("malformed C2B validation: %s", exc)
        return wire.reject(wire.OTHER_ERROR)
    if conf.shortcode and conf.shortcode not in our_shortcodes(config):
        return wire.reject(wire.INVALID_SHORTCODE)
    if conf.is_till:
        # No account number to check; the confirmation matches it by amount and phone.
        return wire.ACCEPT
    since = _open_since(config)
    payable = [p for p in orders_for_account(db, config, conf.bill_ref) if _payable(p, since)]
    if not payable:
        return wire.reject(wire.INVALID_ACCOUNT)
    if conf.whole_amount != payable[0]["amount"]:
        return wire.reject(wire.INVALID_AMOUNT)
    return wire.ACCEPT


# ---------------------------------------------------------------- operators

def assign(db, config, trans_id: str, payment_id, *, actor: str, reason: str) -> str:
    """An operator settles a reviewed C2B payment against a chosen order, through settlement."""
    if not reason or not reason.strip():
        raise ValueError("an assignment needs a reason")
    doc = db.c2b_payments.find_one({"_id": trans_id})
    if doc is None or doc["state"] != REVIEW or doc.get("payment_id"):
        raise ValueError("only an unmatched payment under review can be assigned")
    payment = records.get(db, payment_id)
    if payment is None or payment["status"] not in states.OPEN_STATUSES + states.FAILURE_STATUSES:
        raise ValueError("the order must be open or failed (not paid) to take this payment")
    refusal = _assign_refusal(doc, payment)
    if refusal:
        raise ValueError(refusal)
    claimed = db.c2b_payments.find_one_and_update(
        {"_id": trans_id, "state": REVIEW, "payment_id": {"$exists": False}},
        {"$set": {"state": RECEIVED, "assigned_by": actor, "assign_reason": reason.strip(),
                  "assigned_payment": str(payment["_id"]), "updated_at": utcnow()}}, return_document=True)
    if claimed is None:
        raise ValueError("this payment was handled by someone else just now")
    return settle(db, config, claimed)


def _assign_refusal(doc: dict, payment: dict) -> str | None:
    """A menu payment credits only an order of exactly its amount: an operator cannot make KES 1 buy a plan."""
    if doc.get("amount") == payment["amount"]:
        return None
    return (f"this menu payment is KES {doc.get('amount')} and order {payment['reference']} is KES "
            f"{payment['amount']}: it can only pay an order of exactly KES {doc.get('amount')}, or be sent back")


# ---------------------------------------------------------------- the customer's "pay manually" panel

def manual_instructions(payment: Mapping[str, Any], config: Mapping[str, Any]) -> dict:
    """What the customer types in the M-Pesa menu to pay this order, and until when it is accepted."""
    till = config.get("MPESA_TRANSACTION_TYPE") == "CustomerBuyGoodsOnline"
    created = payment.get("created_at")
    until = created + timedelta(seconds=int(config.get("MPESA_C2B_OPEN_SECONDS") or 86400)) if created else None
    return {"till": till,
            "number": str(config.get("MPESA_PARTY_B") or config.get("MPESA_SHORTCODE")) if till
            else str(config.get("MPESA_SHORTCODE")),
            "account": None if till else payment.get("reference"),
            "amount": payment.get("amount"), "phone": payment.get("phone"), "until": until,
            "open": payment.get("status") in states.OPEN_STATUSES + states.FAILURE_STATUSES
            and (until is None or until.replace(tzinfo=None) > utcnow().replace(tzinfo=None))}


callbacks.handles(INBOX_KIND, sys.modules[__name__])  # the inbox settles stored posts of this kind here
