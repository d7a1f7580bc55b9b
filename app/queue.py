"""A job queue in MongoDB's `transactions` collection: enqueue, claim, heartbeat, finish.

A worker claims a job with one atomic update that sets a lease (on the database's
clock) and a fresh claim token. Every later write about the job carries that token, so
a worker that stalled past its lease and was replaced cannot overwrite its successor.
Jobs end `completed` or `dead` (the dead-letter state, error kept); nothing else is final.
A completed job carries `expire_at` and a TTL index deletes it then; dead jobs stay
for an operator. Idle workers learn of new jobs from a change stream (`watch_runnable`)
where the server offers one, so they need not poll.
"""
from __future__ import annotations

import logging
import random
import secrets
from dataclasses import dataclass
from datetime import timedelta

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from .db import db_now, utcnow

log = logging.getLogger("lipia.queue")

QUEUED, PROCESSING, COMPLETED, DEAD = "queued", "processing", "completed", "dead"
KEEP_COMPLETED_SECONDS = 7 * 24 * 3600


class Retry(Exception):
    """Raised by a job's run: it surely did nothing, so the queue may try it again later.

    `base_delay` replaces the worker's JOB_BACKOFF_SECONDS for this error, when the job knows
    how long what stopped it lasts (the backoff still doubles from it)."""

    def __init__(self, error: str, base_delay: float | None = None):
        super().__init__(error)
        self.error = error
        self.base_delay = base_delay


class GiveUp(Exception):
    """Raised by a job's run: trying again cannot help, so the job is dead-lettered at once."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


@dataclass
class Job:
    doc: dict

    @property
    def id(self):
        return self.doc["_id"]

    @property
    def token(self) -> str:
        return self.doc["claim_token"]

    @property
    def attempts(self) -> int:
        return self.doc.get("attempts", 0)

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def payment_id(self) -> str | None:
        return self.doc.get("payment_id")


def enqueue(db, kind: str, *, job_id: str, payment_id: str | None = None, max_attempts: int = 5, **fields) -> bool:
    """Add a job once: the caller's deterministic `job_id` makes enqueueing idempotent."""
    now = utcnow()
    doc = {"_id": job_id, "kind": kind, "payment_id": payment_id, "status": QUEUED, "attempts": 0,
           "max_attempts": max_attempts, "run_at": now, "created_at": now, "timestamp": now,
           "updated_at": now, "error": None, **fields}
    try:
        db.transactions.insert_one(doc)
        return True
    except DuplicateKeyError:
        return False


def claim(db, worker_id: str, lease_seconds: int) -> Job | None:
    """Take the oldest runnable job, or one whose worker's lease ran out, in one round trip."""
    now = db_now(db)
    fields = {"status": PROCESSING, "claim_token": secrets.token_hex(8), "worker_id": worker_id,
              "lease_until": now + timedelta(seconds=lease_seconds), "heartbeat_at": now,
              "claimed_at": now, "updated_at": now}
    # The document as it was tells whether this is a takeover, and from whom.
    before = db.transactions.find_one_and_update(
        {"$or": [{"status": QUEUED, "run_at": {"$lte": now}},
                 {"status": PROCESSING, "lease_until": {"$lt": now}}]},
        {"$set": fields, "$inc": {"attempts": 1}},
        sort=[("run_at", 1)], return_document=ReturnDocument.BEFORE)
    if before is None:
        return None
    if before["status"] == PROCESSING:
        log.warning("job %s taken over from %s after its lease expired", before["_id"], before.get("worker_id"))
    return Job({**before, **fields, "attempts": before.get("attempts", 0) + 1})


def heartbeat(db, job: Job, lease_seconds: int) -> bool:
    """Extend the lease; False means the job was taken over and this worker must stop."""
    now = db_now(db)
    result = db.transactions.update_one(
        {"_id": job.id, "claim_token": job.token, "status": PROCESSING},
        {"$set": {"lease_until": now + timedelta(seconds=lease_seconds), "heartbeat_at": now}})
    return result.matched_count == 1


def _finish(db, job: Job, fields: dict) -> bool:
    result = db.transactions.update_one({"_id": job.id, "claim_token": job.token, "status": PROCESSING},
                                        {"$set": {**fields, "updated_at": utcnow()}})
    if result.matched_count == 0:
        log.warning("job %s: lost the lease before finishing; leaving it to its new owner", job.id)
    return result.matched_count == 1


def complete(db, job: Job, outcome: str, *, keep_seconds: float = KEEP_COMPLETED_SECONDS, **fields) -> bool:
    """Finish the job; the TTL index on `expire_at` deletes it `keep_seconds` later."""
    now = utcnow()
    return _finish(db, job, {"status": COMPLETED, "outcome": outcome, "lease_until": None, "finished_at": now,
                             "expire_at": now + timedelta(seconds=keep_seconds), **fields})


def release(db, job: Job, reason: str) -> bool:
    """Give a job back untouched (the worker is stopping before it did anything): runnable at
    once by another worker, and this claim does not count as an attempt."""
    result = db.transactions.update_one(
        {"_id": job.id, "claim_token": job.token, "status": PROCESSING},
        {"$set": {"status": QUEUED, "lease_until": None, "run_at": utcnow(), "updated_at": utcnow(),
                  "released": reason}, "$inc": {"attempts": -1}})
    return result.matched_count == 1


def out_of_attempts(job: Job) -> bool:
    return job.attempts >= job.doc.get("max_attempts", 5)


def retry_later(db, job: Job, error: str, base_delay: float) -> str | None:
    """Put the job back with exponential backoff and jitter, or dead-letter it when out of
    attempts. Returns the job's new status (None when the lease was lost meanwhile)."""
    if out_of_attempts(job):
        return DEAD if dead(db, job, error) else None
    delay = base_delay * (2 ** (job.attempts - 1)) * random.uniform(0.8, 1.2)
    finished = _finish(db, job, {"status": QUEUED, "error": error, "lease_until": None,
                                 "run_at": db_now(db) + timedelta(seconds=delay)})
    return QUEUED if finished else None


def dead(db, job: Job, error: str) -> bool:
    log.error("job %s dead-lettered after %s attempt(s): %s", job.id, job.attempts, error)
    return _finish(db, job, {"status": DEAD, "error": error, "lease_until": None, "dead_at": utcnow()})


def requeue_dead(db, job_id: str) -> bool:
    """An operator's retry of a dead job: a fresh set of attempts."""
    result = db.transactions.update_one(
        {"_id": job_id, "status": DEAD},
        {"$set": {"status": QUEUED, "attempts": 0, "run_at": utcnow(), "updated_at": utcnow()},
         "$push": {"requeued": {"at": utcnow()}}})
    return result.modified_count == 1


def stats(db) -> dict:
    """Queue depth by status and the age of the oldest runnable job, for dashboards and /readyz.

    Bounded whatever the history: the open and dead counts come from the `claimable`
    index (status first), and completed jobs, which are most of the collection, are the
    collection's estimated size minus the rest (metadata, no scan; completed jobs expire).
    """
    counts = {row["_id"]: row["n"] for row in db.transactions.aggregate(
        [{"$match": {"status": {"$in": [QUEUED, PROCESSING, DEAD]}}},
         {"$group": {"_id": "$status", "n": {"$sum": 1}}}])}
    counts[COMPLETED] = max(0, db.transactions.estimated_document_count() - sum(counts.values()))
    return {"counts": counts, "oldest_queued_seconds": oldest_queued_seconds(db)}


def oldest_queued_seconds(db, now=None) -> float | None:
    """How long the oldest runnable job has waited (None when none waits): one indexed read (claimable)."""
    oldest = db.transactions.find_one({"status": QUEUED}, {"run_at": 1}, sort=[("run_at", 1)])
    if not oldest:
        return None
    now = now or db_now(db)
    return max(0.0, (now.replace(tzinfo=None) - oldest["run_at"].replace(tzinfo=None)).total_seconds())


# ---------------------------------------------------------------- reading jobs
# The console, the metrics and the worker's housekeeping read jobs only through these,
# so this module alone knows the collection and its indexes.

def get(db, job_id: str) -> dict | None:
    return db.transactions.find_one({"_id": job_id})


def for_payment(db, payment_id) -> list[dict]:
    """Every job of one payment, oldest first (the `payment` index)."""
    return list(db.transactions.find({"payment_id": str(payment_id)}).sort("created_at", 1))


def payments_with_jobs(db, payment_ids) -> set[str]:
    """Which of these payments have a job at all, in one query (the `payment` index)."""
    ids = [str(pid) for pid in payment_ids]
    if not ids:
        return set()
    return {doc["payment_id"] for doc in db.transactions.find({"payment_id": {"$in": ids}}, {"payment_id": 1})}


def count_dead(db) -> int:
    return db.transactions.count_documents({"status": DEAD})


def latest_dead(db, limit: int = 20) -> list[dict]:
    """The most recently dead-lettered jobs, for an operator to look at or retry."""
    return list(db.transactions.find({"status": DEAD}).sort("updated_at", -1).limit(limit))


def attempts_by_status(db, statuses, limit: int) -> dict[str, dict]:
    """For each status: how many jobs (at most `limit`) and the attempts they made (claimable)."""
    found = {}
    for status in statuses:
        attempts = [doc.get("attempts", 0) or 0 for doc in db.transactions.find(
            {"status": status}, {"attempts": 1, "_id": 0}).limit(limit)]
        found[status] = {"jobs": len(attempts), "attempts": sum(attempts)}
    return found


# ---------------------------------------------------------------- waking idle workers

# Inserts (new jobs) and updates that make a job queued again (retries, releases, an
# operator's requeue). Heartbeats and completions do not wake anyone.
RUNNABLE_CHANGES = [{"$match": {"$or": [
    {"operationType": "insert"},
    {"operationType": "update", "updateDescription.updatedFields.status": QUEUED},
    {"operationType": "replace", "fullDocument.status": QUEUED},
]}}]


def watch_runnable(db, max_await_seconds: float):
    """A change stream of jobs becoming runnable. Raises OperationFailure where the server has
    none (a standalone MongoDB); each empty wait costs one getMore every `max_await_seconds`."""
    return db.transactions.watch(RUNNABLE_CHANGES, max_await_time_ms=int(max_await_seconds * 1000))


def runnable_at(change: dict):
    """When the job named by a change event may run (server time), or None when unknown."""
    doc = change.get("fullDocument") or (change.get("updateDescription") or {}).get("updatedFields") or {}
    return doc.get("run_at")
