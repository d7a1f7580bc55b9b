"""One M-Pesa payment, one credit: every receipt and TransID, whatever record names it.

An order's `mpesa_receipt` (unique) is what credits a receipt. Every other record that
names a receipt must agree with the orders:

* menu payments (`c2b_payments`, one per TransID): `credited` to an order only if that
  order holds the TransID as its receipt; sent back (`refunding`, `refunded`) or still
  unmatched (`review`, `received`) only if no order holds it. Examined: every menu
  payment, one cursor; the orders holding their TransIDs fetched in batches (index
  `receipt_unique`).
* receipt claims `credited`: the claimed order holds the claimed receipt (one cursor over
  credited claims, orders in batches).
* the `receipts` collection, when it exists: the use it records (credit, review, refund)
  agrees with the order holding the receipt, or with none holding it (same shape).
* menu payments sent back by a reversal (`reversals` of `c2b:<TransID>`, not failed):
  no order holds the TransID (a cursor over those reversals).
* a second payment flagged on an order (`extra_receipts`, index `extra_receipts`) is no
  other order's receipt: it is money waiting for an operator, not a credit.
"""
from __future__ import annotations

from bson import ObjectId

from ..payments.states import COMPLETED
from .problems import Clock, Problem, batches, find_in, index_by, problem

# The contract's names (the auditor reads the data, not the code that writes it).
MENU_CREDITED, MENU_REVIEW, MENU_RECEIVED = "credited", "review", "received"
MENU_SENT_BACK = ("refunding", "refunded")
REVERSAL_FAILED = "failed"
MENU_REVERSAL_PREFIX = "c2b:"
HOLDER_FIELDS = {"mpesa_receipt": 1, "status": 1, "amount": 1, "username": 1}


def holders(db, receipts) -> dict[str, dict]:
    """The orders holding each of these receipts as theirs (at most one each: the index is unique)."""
    return index_by(find_in(db.payments, "mpesa_receipt", receipts, HOLDER_FIELDS), "mpesa_receipt")


def receipt_problems(db, clock: Clock) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()

    def report(found: Problem) -> None:
        key = (found.kind, found.ids[0] if found.ids else "")
        if key not in seen:
            seen.add(key)
            problems.append(found)

    for found in (*_menu_payments(db, clock), *_menu_reversals(db), *_claims(db), *_receipt_records(db, clock),
                  *_extra_receipts(db)):
        report(found)
    return problems


def _menu_payments(db, clock: Clock):
    docs = db.c2b_payments.find({}, {"state": 1, "payment_id": 1, "amount": 1, "received_at": 1})
    for batch in batches(docs):
        held = holders(db, [doc["_id"] for doc in batch])
        for doc in batch:
            trans_id, state, holder = doc["_id"], doc.get("state"), held.get(doc["_id"])
            if state == MENU_CREDITED:
                if holder is None or str(holder["_id"]) != str(doc.get("payment_id")) \
                        or holder["status"] != COMPLETED:
                    yield problem("menu_credit_not_on_order", [trans_id, doc.get("payment_id")],
                                  f"Menu payment {trans_id} is marked credited to order {doc.get('payment_id')}, "
                                  "but that order does not hold it as its receipt.")
                elif isinstance(doc.get("amount"), int) and doc["amount"] != holder["amount"]:
                    yield problem("credit_amount_mismatch", [holder["_id"], trans_id],
                                  f"Order {holder['_id']} (KES {holder['amount']}) was credited with menu payment "
                                  f"{trans_id} of KES {doc['amount']}.")
            elif state in MENU_SENT_BACK:
                if holder is not None:
                    yield _sent_back_credited(trans_id, holder, f"menu payment {state}")
            elif holder is not None and (state != MENU_RECEIVED or clock.settled_before(doc.get("received_at"))):
                yield problem("menu_receipt_misfiled", [trans_id, holder["_id"]],
                              f"Order {holder['_id']} holds menu payment {trans_id} as its receipt, but that menu "
                              f"payment is {state}, not credited: the order may have been credited for another "
                              "payment, and this one counted twice or not at all.")
            if state == MENU_RECEIVED and holder is None and clock.settled_before(doc.get("received_at")):
                yield problem("menu_payment_unsettled", [trans_id],
                              f"Menu payment {trans_id} was stored but never settled or put in review.")
    confirmations = db.callbacks.find({"kind": "c2b_confirmation", "trans_id": {"$exists": True}}, {"trans_id": 1})
    for batch in batches(confirmations):
        known = {doc["_id"] for doc in find_in(db.c2b_payments, "_id", [row["trans_id"] for row in batch], {"_id": 1})}
        for trans_id in dict.fromkeys(row["trans_id"] for row in batch if row["trans_id"] not in known):
            yield problem("menu_payment_missing", [trans_id],
                          f"C2B confirmation {trans_id} was received but has no payment record.")


def _sent_back_credited(receipt: str, holder: dict, how: str) -> Problem:
    return problem("sent_back_receipt_credited", [receipt, holder["_id"]],
                   f"Receipt {receipt} was sent back to the payer ({how}), yet order {holder['_id']} of "
                   f"{holder.get('username')} is credited with it: the money went back and the words stayed.")


def _menu_reversals(db):
    reversals = list(db.reversals.find({"payment_id": {"$regex": f"^{MENU_REVERSAL_PREFIX}"},
                                        "state": {"$ne": REVERSAL_FAILED}}, {"receipt": 1, "state": 1, "payment_id": 1}))
    held = holders(db, [r.get("receipt") or r["payment_id"][len(MENU_REVERSAL_PREFIX):] for r in reversals])
    for reversal in reversals:
        receipt = reversal.get("receipt") or reversal["payment_id"][len(MENU_REVERSAL_PREFIX):]
        if receipt in held:
            yield _sent_back_credited(receipt, held[receipt], f"reversal {reversal['_id']} {reversal['state']}")


def _claims(db):
    for batch in batches(db.receipt_claims.find({"state": "credited"}, {"receipt": 1, "payment_id": 1})):
        held = holders(db, [claim.get("receipt") for claim in batch])
        for claim in batch:
            holder = held.get(claim.get("receipt"))
            if holder is None or str(holder["_id"]) != str(claim.get("payment_id")):
                yield problem("claim_credit_not_on_order", [claim.get("receipt"), claim.get("payment_id"), claim["_id"]],
                              f"Receipt claim {claim['_id']} says receipt {claim.get('receipt')} credited order "
                              f"{claim.get('payment_id')}, but "
                              + ("no order holds it." if holder is None else f"order {holder['_id']} holds it."))


def _receipt_records(db, clock: Clock):
    if "receipts" not in db.list_collection_names():
        return
    for batch in batches(db.receipts.find({}, {"use": 1, "payment_id": 1, "at": 1, "updated_at": 1})):
        held = holders(db, [doc["_id"] for doc in batch])
        for doc in batch:
            receipt, use, holder = doc["_id"], doc.get("use"), held.get(doc["_id"])
            if use != "refund" and not clock.settled_before(doc.get("updated_at") or doc.get("at")):
                continue  # taken just before its settling write: the write (or its retry) follows
            if use == "refund" and holder is not None:
                yield _sent_back_credited(receipt, holder, "recorded as refunded")
            elif use == "credit" and (holder is None or str(holder["_id"]) != str(doc.get("payment_id"))):
                yield problem("receipt_record_mismatch", [receipt, doc.get("payment_id")],
                              f"Receipt {receipt} is recorded as crediting order {doc.get('payment_id')}, but "
                              + ("no order holds it." if holder is None else f"order {holder['_id']} holds it."))
            elif use == "review" and holder is not None and str(holder["_id"]) != str(doc.get("payment_id")) \
                    and _still_under_review(db, doc.get("payment_id")):
                # Once that review is rejected the record is history: the review credited nothing.
                yield problem("receipt_record_mismatch", [receipt, doc.get("payment_id")],
                              f"Receipt {receipt} is recorded as under review on order {doc.get('payment_id')}, "
                              f"but order {holder['_id']} is credited with it: reject that review.")


def _still_under_review(db, payment_id) -> bool:
    return payment_id is None or db.payments.count_documents({"_id": oid(payment_id), "status": "review"},
                                                              limit=1) > 0


def _extra_receipts(db):
    flagged = list(db.payments.find({"extra_receipts": {"$exists": True}}, {"extra_receipts": 1}))
    held = holders(db, [r for p in flagged for r in p.get("extra_receipts") or []])
    for payment in flagged:
        for receipt in payment.get("extra_receipts") or []:
            holder = held.get(receipt)
            if holder is not None and holder["_id"] != payment["_id"]:
                yield problem("receipt_used_twice", [receipt, holder["_id"], payment["_id"]],
                              f"Receipt {receipt} credits order {holder['_id']} and is also recorded as a second "
                              f"payment for order {payment['_id']}: refunding it there would take money back "
                              "for words still credited.")


def oid(value) -> ObjectId | None:
    try:
        return ObjectId(str(value))
    except Exception:
        return None
