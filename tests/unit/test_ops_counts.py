"""The bounded counts behind /metrics and /readyz."""
import datetime as dt

from app import queue
from app.db import utcnow
from app.ops import counts
from tests.support.factories import new_payment, paid, under_review


def test_final_payments_count_only_within_the_recent_window(db, customer):
    old, _fresh = paid(db, customer), paid(db, customer)
    db.payments.update_one({"_id": old["_id"]}, {"$set": {"created_at": utcnow() - dt.timedelta(days=3)}})
    recent = counts.recent_payments(db, utcnow())
    assert recent["completed"] == 1 and recent["failed"] == 0


def test_open_payments_count_whatever_their_age(db, customer):
    waiting = new_payment(db, customer)
    db.payments.update_one({"_id": waiting["_id"]}, {"$set": {"created_at": utcnow() - dt.timedelta(days=30)}})
    under_review(db, customer)
    assert counts.open_payments(db) == {"queued": 1, "pending": 0, "review": 1}


def test_review_counts_flagged_payments_once_and_forgets_cleared_flags(db, customer):
    under_review(db, customer)
    flagged, cleared = paid(db, customer), paid(db, customer)
    db.payments.update_one({"_id": flagged["_id"]}, {"$set": {"needs_review": True}})
    db.payments.update_one({"_id": cleared["_id"]}, {"$set": {"needs_review": False}})
    assert counts.payments_needing_review(db) == 2


def test_live_jobs_leave_finished_ones_out_and_add_up_attempts(db, customer):
    first, second = new_payment(db, customer), new_payment(db, customer)
    db.transactions.update_one({"payment_id": str(first["_id"])},
                               {"$set": {"status": queue.DEAD, "attempts": 3}})
    db.transactions.update_one({"payment_id": str(second["_id"])},
                               {"$set": {"status": queue.COMPLETED, "attempts": 1}})
    live = counts.live_jobs(db)
    assert live[queue.DEAD] == {"jobs": 1, "attempts": 3}
    assert live[queue.QUEUED] == {"jobs": 0, "attempts": 0}
    assert queue.COMPLETED not in live


def test_every_count_stops_at_the_limit(db, customer, monkeypatch):
    monkeypatch.setattr(counts, "COUNT_LIMIT", 2)
    for _ in range(3):
        new_payment(db, customer)
    assert counts.open_payments(db)["queued"] == 2
    assert counts.live_jobs(db)[queue.QUEUED]["jobs"] == 2


def test_queue_lag_is_the_oldest_runnable_job(db, customer):
    assert counts.oldest_queued_seconds(db) is None
    now = utcnow()
    for minutes in (1, 7, 3):
        payment = new_payment(db, customer)
        db.transactions.update_one({"payment_id": str(payment["_id"])},
                                   {"$set": {"run_at": now - dt.timedelta(minutes=minutes)}})
    assert 419 <= counts.oldest_queued_seconds(db, now) <= 421
