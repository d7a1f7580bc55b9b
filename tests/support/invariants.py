"""One check of every money invariant, used after every injected fault."""
from __future__ import annotations

import time
from datetime import timedelta

from app import ledger


def assert_money_invariants(db, *, expire_after: timedelta | None = None, settle_seconds: float = 15) -> None:
    """Wait (bounded) for in-flight jobs to finish, then check every invariant at rest."""
    deadline = time.monotonic() + settle_seconds
    while db.transactions.count_documents({"status": "processing"}) and time.monotonic() < deadline:
        time.sleep(0.1)
    # A money write can still be finishing (a payment shows completed a moment before its
    # credit is booked), and a check that reads in between sees a gap that closes by itself:
    # look again until the books agree or the time is up. Real drift never closes.
    problems = ledger.check_invariants(db, expire_after=expire_after)
    while problems and time.monotonic() < deadline:
        time.sleep(0.2)
        problems = ledger.check_invariants(db, expire_after=expire_after)
    # Invariant 9: every job ends done or dead-lettered, or waits its turn; none is left claimed.
    for job in db.transactions.find({"status": {"$nin": ["completed", "dead", "queued"]}}):
        problems.append(f"job {job['_id']} still {job['status']} (worker {job.get('worker_id')})")
    assert problems == [], "money invariants broken:\n" + "\n".join(problems)
