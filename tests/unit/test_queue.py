from datetime import timedelta

from app import queue


def test_claim_is_exclusive_and_tokens_guard_every_write(db):
    queue.enqueue(db, "stk_push", job_id="push:1", payment_id="1")
    assert not queue.enqueue(db, "stk_push", job_id="push:1", payment_id="1")  # idempotent
    job = queue.claim(db, "w1", lease_seconds=30)
    assert job.attempts == 1 and queue.claim(db, "w2", lease_seconds=30) is None
    stale = queue.Job({**job.doc, "claim_token": "someone-else"})
    assert not queue.complete(db, stale, "done") and not queue.heartbeat(db, stale, 30)
    assert queue.heartbeat(db, job, 30) and queue.complete(db, job, "done")
    assert db.transactions.find_one({"_id": "push:1"})["status"] == "completed"


def test_expired_lease_is_taken_over_and_the_old_owner_is_locked_out(db):
    queue.enqueue(db, "stk_push", job_id="push:2", payment_id="2")
    first = queue.claim(db, "w1", lease_seconds=30)
    assert queue.claim(db, "w2", lease_seconds=30) is None
    # The first worker stops heart-beating; its lease runs out.
    db.transactions.update_one({"_id": "push:2"}, {"$set": {"lease_until": first.doc["claimed_at"] - timedelta(seconds=1)}})
    second = queue.claim(db, "w2", lease_seconds=30)
    assert second.id == first.id and second.attempts == 2
    assert not queue.complete(db, first, "late") and queue.complete(db, second, "done")


def test_retry_backs_off_then_dead_letters_with_the_error(db):
    queue.enqueue(db, "stk_push", job_id="push:3", payment_id="3", max_attempts=2)
    job = queue.claim(db, "w1", lease_seconds=30)
    queue.retry_later(db, job, "429 from Daraja", base_delay=60)
    doc = db.transactions.find_one({"_id": "push:3"})
    assert doc["status"] == "queued" and doc["error"] == "429 from Daraja"
    assert queue.claim(db, "w1", lease_seconds=30) is None  # backing off
    db.transactions.update_one({"_id": "push:3"}, {"$set": {"run_at": doc["created_at"]}})
    job = queue.claim(db, "w1", lease_seconds=30)
    queue.retry_later(db, job, "429 again", base_delay=60)
    doc = db.transactions.find_one({"_id": "push:3"})
    assert doc["status"] == "dead" and doc["error"] == "429 again"
    assert queue.requeue_dead(db, "push:3") and db.transactions.find_one({"_id": "push:3"})["attempts"] == 0


def test_reads_for_the_console_metrics_and_housekeeping(db):
    for n in (1, 2, 3):
        queue.enqueue(db, "stk_push", job_id=f"push:{n}", payment_id=str(n), max_attempts=1)
    queue.enqueue(db, "receipt_claim", job_id="claim:9", payment_id="1")
    for _ in range(2):
        job = queue.claim(db, "w1", lease_seconds=30)
        queue.retry_later(db, job, f"gave up on {job.id}", base_delay=1)   # out of attempts: dead
    assert queue.count_dead(db) == 2
    assert [doc["status"] for doc in queue.latest_dead(db, limit=5)] == ["dead", "dead"]
    assert len(queue.latest_dead(db, limit=1)) == 1
    assert [doc["_id"] for doc in queue.for_payment(db, 1)] == ["push:1", "claim:9"]
    assert queue.get(db, "push:3")["status"] == "queued" and queue.get(db, "push:404") is None
    assert queue.payments_with_jobs(db, ["1", 3, "404"]) == {"1", "3"} and queue.payments_with_jobs(db, []) == set()
    by_status = queue.attempts_by_status(db, (queue.QUEUED, queue.DEAD), limit=10)
    assert by_status == {queue.QUEUED: {"jobs": 2, "attempts": 0}, queue.DEAD: {"jobs": 2, "attempts": 2}}
