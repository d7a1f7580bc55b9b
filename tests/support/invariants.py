"""One check of every money invariant (the money auditor's), used after every injected fault."""
from __future__ import annotations

import time
from datetime import timedelta

from app import money_audit


def assert_money_invariants(db, *, expire_after: timedelta | None = None, settle_seconds: float = 15) -> None:
    """Wait (bounded) for in-flight jobs to finish, then check every invariant at rest."""
    deadline = time.monotonic() + settle_seconds
    while db.transactions.count_documents({"status": "processing"}) and time.monotonic() < deadline:
        time.sleep(0.1)
    # A money write can still be finishing (a payment shows completed a moment before its
    # credit is booked), and a check that reads in between sees a gap that closes by itself:
    # look again until the books agree or the time is up. Real drift never closes.
    problems = audited(db, expire_after)
    while problems and time.monotonic() < deadline:
        time.sleep(0.2)
        problems = audited(db, expire_after)
    # Invariant 9: every job ends done or dead-lettered, or waits its turn; none is left claimed.
    for job in db.transactions.find({"status": {"$nin": ["completed", "dead", "queued"]}}):
        problems.append(f"job {job['_id']} still {job['status']} (worker {job.get('worker_id')})")
    assert problems == [], "money invariants broken:\n" + "\n".join(problems)


def audited(db, expire_after: timedelta | None) -> list[str]:
    """The money auditor's problems (kind and sentence), and what a test at rest may ask on top."""
    return [f"[{p.kind}] {p.text}" for p in money_audit.audit(db, expire_after=expire_after)] + c2b_problems(db)


def c2b_problems(db) -> list[str]:
    """At rest no menu payment is still being settled (the auditor allows a crash window), and no
    receipt is on two purchase entries. The auditor checks the rest of the menu payments."""
    problems = []
    for doc in db.c2b_payments.find({"state": "received"}):
        problems.append(f"C2B payment {doc['_id']} was stored but never settled or put in review")
    for row in db.ledger.aggregate([{"$match": {"receipt": {"$type": "string"}}},
                                    {"$group": {"_id": "$receipt", "n": {"$sum": 1}}}, {"$match": {"n": {"$gt": 1}}}]):
        problems.append(f"receipt {row['_id']} credited {row['n']} times")
    return problems
