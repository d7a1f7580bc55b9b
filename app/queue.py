"""A job queue in MongoDB's `transactions` collection: enqueue, claim, heartbeat, finish.

A worker claims a job with one atomic update that sets a lease (on the database's
clock) and a fresh claim token. Every later write about the job carries that token, so
a worker that stalled past its lease and was replaced cannot overwrite its successor.
Jobs end `completed` or `dead` (the dead-letter state, error kept); nothing else is final.
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


def complete(db, job: Job, outcome: str, **fields) -> bool:
    return _finish(db, job, {"status": COMPLETED, "outcome": outcome, "lease_until": None, **fields})


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
    """Queue depth by status and the age of the oldest runnable job, for dashboards and /readyz."""
    counts = {row["_id"]: row["n"] for row in db.transactions.aggregate(
        [{"$group": {"_id": "$status", "n": {"$sum": 1}}}])}
    oldest = db.transactions.find_one({"status": QUEUED}, sort=[("run_at", 1)])
    lag = None
    if oldest:
        run_at = oldest["run_at"]
        now = db_now(db)
        lag = max(0.0, (now.replace(tzinfo=None) - run_at.replace(tzinfo=None)).total_seconds())
    return {"counts": counts, "oldest_queued_seconds": lag}
