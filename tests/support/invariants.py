"""One check of every money invariant, used after every injected fault."""
from __future__ import annotations

from datetime import timedelta

from app import ledger


def assert_money_invariants(db, *, expire_after: timedelta | None = None, jobs_settled: bool = True) -> None:
    problems = ledger.check_invariants(db, expire_after=expire_after)
    if jobs_settled:
        # Invariant 9: every job ends done or dead-lettered (no job left claimed by nobody).
        for job in db.transactions.find({"status": {"$nin": ["completed", "dead", "queued"]}}):
            problems.append(f"job {job['_id']} still {job['status']}")
    assert problems == [], "money invariants broken:\n" + "\n".join(problems)
