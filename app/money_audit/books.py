"""The books' own invariants: balances against the ledger, and each purchase entry against its payment.

These are the checks `app.ledger.check_invariants` has always made (its texts unchanged);
the money-side checks in the sibling modules come on top of them. What each examines:

* balances: one aggregation sums every applied entry per user (a pass over the ledger,
  done by the server), plus the few entries in flight (index `pending`) and the few
  uncredited payments (index `uncredited`); then one cursor over the users' balances.
* purchases: one aggregation groups purchase entries per payment (credited twice?); one
  cursor over applied purchase entries, their payments fetched by `_id` in batches.
* receipts and CheckoutRequestIDs on two payments: one aggregation each (both have a
  unique index, so these only fire on data written before it, or restored around it).
* uncredited and overdue payments: indexes `uncredited` and `status_age`.
* history that moved backwards: one cursor over payments with two or more statuses,
  their history only.
* corrections without an actor or a reason: one cursor over ledger entries of those kinds.
"""
from __future__ import annotations

from datetime import timedelta

from bson import ObjectId

from ..payments.states import COMPLETED, OPEN_STATUSES, RANK
from .problems import Clock, Problem, batches, find_in, problem

CORRECTION_KINDS = ("adjustment", "refund", "hold", "release")


def ledger_problems(db, clock: Clock, *, expire_after: timedelta | None = None,
                    excuse_reviewed: bool = True) -> list[Problem]:
    """Every invariant of the books; `excuse_reviewed` keeps the old leniency for an amount
    mismatch an operator approved (the auditor reports those too, see app.money_audit.credits)."""
    problems: list[Problem] = []
    uncredited = list(db.payments.find({"credited": False}, {"username": 1, "words": 1, "settled_at": 1}))
    problems += _balances(db, clock, uncredited)
    problems += _purchases(db, excuse_reviewed)
    for payment in uncredited:
        if clock.settled_before(payment.get("settled_at")):
            problems.append(problem("uncredited", [payment["_id"]],
                                    f"payment {payment['_id']} completed but never credited"))
    if expire_after is not None:
        for payment in db.payments.find({"status": {"$in": list(OPEN_STATUSES)},
                                         "created_at": {"$lt": clock.now - expire_after - clock.settle}},
                                        {"status": 1}):
            problems.append(problem("not_expired", [payment["_id"]],
                                    f"payment {payment['_id']} still {payment['status']} after its expiry"))
    for payment in db.payments.find({"history.1": {"$exists": True}}, {"history": 1}):
        ranks = [RANK.get(h["status"], 0) for h in payment["history"] if h.get("via") != "operator"]
        if ranks != sorted(ranks):
            problems.append(problem("moved_backwards", [payment["_id"]], f"payment {payment['_id']} moved backwards: "
                                    f"{[h['status'] for h in payment['history']]}"))
    for entry in db.ledger.find({"kind": {"$in": list(CORRECTION_KINDS)}}, {"actor": 1, "reason": 1}):
        if not entry.get("actor") or not entry.get("reason"):
            problems.append(problem("correction_without_actor", [entry["_id"]],
                                    f"adjustment {entry['_id']} lacks an actor or a reason"))
    return problems


def _balances(db, clock: Clock, uncredited: list[dict]) -> list[Problem]:
    """A balance equals the sum of its applied entries, plus any applied a moment before a crash."""
    problems = []
    applied = {row["_id"]: row["total"] for row in db.ledger.aggregate([
        {"$match": {"state": "applied"}}, {"$group": {"_id": "$username", "total": {"$sum": "$delta"}}}])}
    in_flight: dict[str, int] = {}
    for entry in db.ledger.find({"state": "pending"}):
        if db.users.count_documents({"username": entry["username"], "applied_keys": entry["_id"]}, limit=1):
            in_flight[entry["username"]] = in_flight.get(entry["username"], 0) + entry["delta"]
        if clock.settled_before(entry["created_at"]):
            problems.append(problem("entry_pending", [entry["_id"]],
                                    f"ledger entry {entry['_id']} has been pending since {entry['created_at']}"))
    for payment in uncredited:
        # A purchase whose words went onto the balance just before a crash, its entry not yet
        # written (see app.ledger.credit_payment): the payment is its journal until the repair pass.
        key = f"payment:{payment['_id']}"
        if db.ledger.count_documents({"_id": key}, limit=1) == 0 and db.users.count_documents(
                {"username": payment["username"], "applied_keys": key}, limit=1):
            in_flight[payment["username"]] = in_flight.get(payment["username"], 0) + int(payment["words"])
    for user in db.users.find({}, {"username": 1, "words_remaining": 1}):
        name, words = user["username"], user.get("words_remaining", 0)
        expected = applied.get(name, 0) + in_flight.get(name, 0)
        if words != expected:
            problems.append(problem("balance_mismatch", [name], f"user {name}: balance {words} but ledger says {expected}"))
        if words < 0:
            problems.append(problem("negative_balance", [name], f"user {name}: negative balance {words}"))
    return problems


def _purchases(db, excuse_reviewed: bool) -> list[Problem]:
    """Each payment is credited once, only when completed, with its plan's words and M-Pesa's amount."""
    problems = []
    for row in db.ledger.aggregate([
            {"$match": {"kind": "purchase"}}, {"$group": {"_id": "$payment_id", "n": {"$sum": 1}}},
            {"$match": {"n": {"$gt": 1}}}]):
        problems.append(problem("credited_twice", [row["_id"]], f"payment {row['_id']} credited {row['n']} times"))
    for field_name, kind in (("checkout_request_id", "duplicate_checkout_request"), ("mpesa_receipt", "duplicate_receipt")):
        for row in db.payments.aggregate([
                {"$match": {field_name: {"$type": "string"}}},
                {"$group": {"_id": f"${field_name}", "n": {"$sum": 1}}}, {"$match": {"n": {"$gt": 1}}}]):
            problems.append(problem(kind, [row["_id"]], f"{field_name} {row['_id']} appears on {row['n']} payments"))
    entries = db.ledger.find({"kind": "purchase", "state": "applied"}, {"payment_id": 1, "delta": 1})
    for batch in batches(entries):
        payments = {str(p["_id"]): p for p in find_in(
            db.payments, "_id", [_oid(e.get("payment_id")) for e in batch],
            {"status": 1, "words": 1, "amount": 1, "confirmed_amount": 1, "reviewed_by": 1})}
        for entry in batch:
            payment = payments.get(str(entry.get("payment_id")))
            if payment is None or payment["status"] != COMPLETED:
                problems.append(problem("credit_not_completed", [entry["_id"], entry.get("payment_id")],
                                        f"ledger entry {entry['_id']} credits a payment that is not completed"))
            elif entry["delta"] != payment["words"]:
                problems.append(problem("credit_words_mismatch", [entry["_id"], payment["_id"]],
                                        f"ledger entry {entry['_id']} credits {entry['delta']} words, "
                                        f"plan gives {payment['words']}"))
            elif payment.get("confirmed_amount") is not None and payment["confirmed_amount"] != payment["amount"] \
                    and not (excuse_reviewed and payment.get("reviewed_by")):
                problems.append(problem("credit_amount_mismatch", [payment["_id"]],
                                        f"payment {payment['_id']} credited although M-Pesa confirmed a "
                                        f"different amount (KES {payment['confirmed_amount']} for a KES "
                                        f"{payment['amount']} order)"))
    return problems


def _oid(value):
    try:
        return ObjectId(str(value))
    except Exception:
        return None
