"""One check of every money invariant, used after every injected fault."""
from __future__ import annotations

import time
from datetime import timedelta

from bson import ObjectId

from app import ledger


def assert_money_invariants(db, *, expire_after: timedelta | None = None, settle_seconds: float = 15) -> None:
    """Wait (bounded) for in-flight jobs to finish, then check every invariant at rest."""
    deadline = time.monotonic() + settle_seconds
    while db.transactions.count_documents({"status": "processing"}) and time.monotonic() < deadline:
        time.sleep(0.1)
    # A money write can still be finishing (a payment shows completed a moment before its
    # credit is booked), and a check that reads in between sees a gap that closes by itself:
    # look again until the books agree or the time is up. Real drift never closes.
    problems = ledger.check_invariants(db, expire_after=expire_after) + c2b_problems(db)
    while problems and time.monotonic() < deadline:
        time.sleep(0.2)
        problems = ledger.check_invariants(db, expire_after=expire_after) + c2b_problems(db)
    # Invariant 9: every job ends done or dead-lettered, or waits its turn; none is left claimed.
    for job in db.transactions.find({"status": {"$nin": ["completed", "dead", "queued"]}}):
        problems.append(f"job {job['_id']} still {job['status']} (worker {job.get('worker_id')})")
    assert problems == [], "money invariants broken:\n" + "\n".join(problems)


def c2b_problems(db) -> list[str]:
    """Menu (C2B) payments: each TransID credits at most one order, and no confirmation is lost."""
    problems = []
    for doc in db.c2b_payments.find({"state": "credited"}):
        payment = db.payments.find_one({"_id": ObjectId(doc["payment_id"])}) if doc.get("payment_id") else None
        if payment is None or payment["status"] != ledger.COMPLETED or payment.get("mpesa_receipt") != doc["_id"]:
            problems.append(f"C2B payment {doc['_id']} marked credited but no completed order carries it")
    for doc in db.c2b_payments.find({"state": "received"}):
        problems.append(f"C2B payment {doc['_id']} was stored but never settled or put in review")
    for row in db.callbacks.find({"kind": "c2b_confirmation", "trans_id": {"$exists": True}}, {"trans_id": 1}):
        if db.c2b_payments.count_documents({"_id": row["trans_id"]}, limit=1) == 0:
            problems.append(f"C2B confirmation {row['trans_id']} was received but has no payment record")
    for row in db.ledger.aggregate([{"$match": {"receipt": {"$type": "string"}}},
                                    {"$group": {"_id": "$receipt", "n": {"$sum": 1}}}, {"$match": {"n": {"$gt": 1}}}]):
        problems.append(f"receipt {row['_id']} credited {row['n']} times")
    return problems
