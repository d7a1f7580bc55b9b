"""The database counts /metrics and /readyz report, each one indexed and bounded.

A scrape every few seconds from every Prometheus, and a readiness probe from the
platform, must cost the same at a hundred payments as at ten million. So nothing here
groups or scans a whole collection:

* Payments still in play (queued, pending, review) are few by nature (they settle or
  expire), so they are counted over all time through the `status_age` index.
* Final payments pile up forever, so they are counted only over RECENT_WINDOW through
  the same index (status, then created_at). No total is reported: some servers answer
  even a metadata count by reading every document.
* Finished jobs are history, not load: only waiting, running and dead jobs are counted
  (the `claimable` index).

Every count also stops at COUNT_LIMIT, so a flood of one status cannot make a scrape
expensive; a gauge at the limit means "at least this many".
"""
from __future__ import annotations

from datetime import timedelta

from .. import queue
from ..payments import states

COUNT_LIMIT = 10_000
RECENT_WINDOW = timedelta(hours=24)
OPEN_PAYMENT_STATUSES = (states.QUEUED, states.PENDING, states.REVIEW)
RECENT_PAYMENT_STATUSES = tuple(sorted(states.RANK))
LIVE_JOB_STATUSES = (queue.QUEUED, queue.PROCESSING, queue.DEAD)


def _count(collection, query: dict) -> int:
    # Each query leads with the first field of an index (named at each call); the
    # query-cost bench (`python -m bench.query_cost`) shows the server choosing it.
    return collection.count_documents(query, limit=COUNT_LIMIT)


def open_payments(db) -> dict[str, int]:
    """Payments not yet final (and those under review), by status, whatever their age (status_age)."""
    return {status: _count(db.payments, {"status": status}) for status in OPEN_PAYMENT_STATUSES}


def recent_payments(db, now) -> dict[str, int]:
    """Payments created within RECENT_WINDOW, by status (status_age)."""
    since = now - RECENT_WINDOW
    return {status: _count(db.payments, {"status": status, "created_at": {"$gte": since}})
            for status in RECENT_PAYMENT_STATUSES}


def payments_needing_review(db) -> int:
    """Under review, or settled but flagged for a second look (two indexed counts, no `$or` scan)."""
    # The flagged ones are read by the needs_review index alone and told apart here: a
    # `$ne` on status in the same filter lets some planners give up the index and scan.
    flagged = db.payments.find({"needs_review": True}, {"status": 1}).limit(COUNT_LIMIT)
    return (_count(db.payments, {"status": states.REVIEW})  # status_age
            + sum(1 for payment in flagged if payment.get("status") != states.REVIEW))


def live_jobs(db) -> dict[str, dict]:
    """Waiting, running and dead jobs: how many, and the attempts they have made (claimable)."""
    return queue.attempts_by_status(db, LIVE_JOB_STATUSES, limit=COUNT_LIMIT)


def oldest_queued_seconds(db, now=None) -> float | None:
    """How long the oldest runnable job has waited; None when nothing waits (claimable)."""
    return queue.oldest_queued_seconds(db, now)
