"""The worker's guards: outages logged once, writes that wait out an outage, housekeeping that
survives its steps, heartbeats that survive failures, shutdown give-back, idle back-off."""
import logging
import threading
from datetime import timedelta

import pytest
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

import worker as worker_module
from app import outage as outage_module
from app import queue
from app.auth.service import register
from app.config import load_config
from app.db import INDEXES, utcnow
from app.mpesa.client import PushAccepted
from app.notices import outbox
from app.outage import Outage
from app.payments import checkout, push_job, records, tasks
from app.plans.service import get_plan
from app.wakeup import Waker
from worker import Worker

ACCEPTED = PushAccepted(merchant_request_id="1-2-3", checkout_request_id="ws_CO_9", response_code="0",
                        response_description="ok", customer_message="ok", exchange={"endpoint": "push"})


class FakeClient:
    def __init__(self, answer=ACCEPTED):
        self.answer, self.pushes = answer, []

    def stk_push(self, **kwargs):
        self.pushes.append(kwargs)
        return self.answer


@pytest.fixture
def settings():
    return {**load_config({"LIPIA_ENV": "test"}), "PUBLIC_BASE_URL": "https://lipia.example.com", "WORKER_OUTAGE_BACKOFF_MAX_SECONDS": 0.01}


@pytest.fixture
def payment(app, db, settings):
    with app.app_context():
        user = register(db, "carol", "password123", "254712345670")
    return checkout.start(db, settings, user=user, plan=get_plan(db, "basic"), phone="254712345670",
                          idempotency_key="k-00000009").payment


@pytest.fixture
def worker(db, settings):
    return Worker(db, FakeClient(), settings, worker_id="w-test")


def flaky(write, failures: int, error=AutoReconnect("connection refused")):
    """`write` that fails `failures` times first, as during an outage."""
    calls = {"n": 0}

    def call(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error
        return write(*args, **kwargs)
    call.calls = calls
    return call


# ---------------------------------------------------------------- outage reporting

def test_an_outage_is_one_line_down_and_one_line_up(caplog):
    tracker = Outage(backoff_cap=2.0)
    with caplog.at_level(logging.WARNING, logger="lipia.outage"):
        for _ in range(50):
            tracker.failed(AutoReconnect("down"), "claiming a job")
        delays = [tracker.backoff() for _ in range(20)]
        tracker.ok()
        tracker.ok()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "unreachable while claiming a job" in lines[0] and "reachable again" in lines[1]
    assert all(1.0 <= d <= 2.0 for d in delays) and len(set(delays)) > 1  # capped, jittered
    assert not tracker.down


def test_backoff_grows_from_a_fraction_of_a_second():
    tracker = Outage(backoff_cap=10.0)
    tracker.failed(AutoReconnect("down"))
    first = tracker.backoff()
    for _ in range(3):
        tracker.failed(AutoReconnect("down"))
    assert first <= outage_module.FIRST_BACKOFF < tracker.backoff()


def test_claim_failing_on_an_outage_is_trouble_not_death(worker, monkeypatch, caplog):
    monkeypatch.setattr(queue, "claim", flaky(queue.claim, 3, ServerSelectionTimeoutError("no servers")))
    with caplog.at_level(logging.WARNING):
        states = [worker.run_once() for _ in range(4)]
    assert states == ["trouble", "trouble", "trouble", "idle"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("database unreachable while claiming a job")
    assert lines[1].startswith("database reachable again")
    assert "Traceback" not in caplog.text and not worker.outage.down


# ---------------------------------------------------------------- Daraja's answer survives an outage

def test_an_accepted_push_is_recorded_after_the_database_comes_back(db, payment, worker, monkeypatch):
    job = queue.claim(db, "w-test", 30)
    accept = flaky(records.record_push_accepted, 3)
    monkeypatch.setattr(records, "record_push_accepted", accept)
    worker._run_job(job)
    doc = records.get(db, payment["_id"])
    assert accept.calls["n"] == 4 and doc["status"] == "pending" and doc["checkout_request_id"] == "ws_CO_9"
    assert db.transactions.find_one({"_id": job.id})["status"] == "completed"


def test_without_the_worker_an_outage_after_the_push_is_an_error(db, payment, monkeypatch):
    job = queue.claim(db, "w-test", 30)
    monkeypatch.setattr(records, "record_push_accepted", flaky(records.record_push_accepted, 1))
    with pytest.raises(AutoReconnect):
        push_job.run(db, FakeClient(), {"PUBLIC_BASE_URL": "https://x.example", "SECRET_KEY": "unit-test-secret"}, job)


def test_push_marker_written_but_reply_lost_sends_nothing_and_retries(db, payment, worker, monkeypatch):
    job = queue.claim(db, "w-test", 30)
    real = records.claim_push

    def written_then_lost(*args):
        real(*args)
        raise AutoReconnect("reply lost")
    monkeypatch.setattr(records, "claim_push", written_then_lost)
    with pytest.raises(queue.Retry):
        push_job.run(db, worker.client, worker.settings, job, persist=worker._durably)
    doc = records.get(db, payment["_id"])
    assert worker.client.pushes == [] and "push_in_flight" not in doc and doc["status"] == "queued"


def test_push_marker_written_under_our_own_claim_is_recognised(db, payment, worker, monkeypatch):
    job = queue.claim(db, "w-test", 30)
    real = records.claim_push

    def written_but_answered_false(*args):
        real(*args)
        return records.get(db, payment["_id"]), False
    monkeypatch.setattr(records, "claim_push", written_but_answered_false)
    assert push_job.run(db, worker.client, worker.settings, job) == "prompt sent"
    assert len(worker.client.pushes) == 1


def test_an_unrecorded_push_expires_with_what_an_operator_must_check(db, payment, worker, settings):
    job = queue.claim(db, "w-test", 30)
    records.claim_push(db, payment["_id"], job.token)  # ...then the worker died
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"created_at": utcnow() - timedelta(hours=1)}})
    assert tasks.expire_overdue(db, settings) == 1
    doc = records.get(db, payment["_id"])
    assert doc["status"] == "expired" and "push_in_flight" not in doc
    assert "M-Pesa statement" in doc["result_desc"] and doc["reference"] in doc["result_desc"]
    # ...and the operator sees it in the console's "under review" list, with what to do.
    from app.admin.store import UNDER_REVIEW
    assert doc["needs_review"] and doc["review_reason"] == doc["result_desc"]
    assert [p["_id"] for p in db.payments.find(UNDER_REVIEW)] == [payment["_id"]]


def test_an_ordinary_expiry_is_not_put_under_review(db, payment, worker, settings):
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"created_at": utcnow() - timedelta(hours=1)}})
    assert tasks.expire_overdue(db, settings) == 1
    doc = records.get(db, payment["_id"])
    assert doc["status"] == "expired" and not doc.get("needs_review")


def test_an_unknown_push_settled_by_a_callback_meanwhile_is_not_left_flagged(db, payment, worker, settings,
                                                                             monkeypatch):
    from app.payments import settlement, states
    job = queue.claim(db, "w-test", 30)
    records.claim_push(db, payment["_id"], job.token)
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"created_at": utcnow() - timedelta(hours=1)}})
    real = settlement.settle

    def callback_first(db_, payment_id, outcome, **kw):
        real(db_, payment_id, states.Outcome(status="completed", via="callback", result_code="0",
                                             receipt="RKL51ZDR4F", amount=payment["amount"]))
        return real(db_, payment_id, outcome, **kw)
    monkeypatch.setattr(settlement, "settle", callback_first)
    assert tasks.expire_overdue(db, settings) == 0
    doc = records.get(db, payment["_id"])
    assert doc["status"] == "completed" and not doc.get("needs_review")


# ---------------------------------------------------------------- housekeeping and heartbeats

def test_housekeeping_survives_a_failing_step_and_stops_on_an_outage(worker, caplog):
    ran = []
    worker.housekeeping_steps = [("bug", lambda: 1 / 0), ("counts", lambda: ran.append("counts") or 2),
                                 ("outage", flaky(lambda: 0, 1)), ("after", lambda: ran.append("after") or 1)]
    assert worker.housekeeping() == 2
    assert ran == ["counts"] and worker.outage.down
    assert "ZeroDivisionError" in caplog.text


def test_housekeeping_checks_the_stop_flag_between_steps(worker):
    ran = []
    worker.housekeeping_steps = [("first", lambda: worker.stopping.set() or ran.append(1) or 1),
                                 ("second", lambda: ran.append(2) or 1)]
    worker.housekeeping()
    assert ran == [1]


def test_reconcile_stops_between_queries(db, settings):
    class NoCalls:
        def stk_query(self, *a, **k):
            raise AssertionError("queried while stopping")
    assert tasks.reconcile_due(db, NoCalls(), settings, should_stop=lambda: True) == 0


def test_a_failing_heartbeat_keeps_beating_and_a_lost_lease_is_abandoned(worker, monkeypatch):
    answers = iter([AutoReconnect("down"), RuntimeError("bug"), True, False])

    def beat(*_args):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer
    monkeypatch.setattr(queue, "heartbeat", beat)
    worker.lease = 0.03
    done, lost = threading.Event(), threading.Event()
    thread = threading.Thread(target=worker._heartbeat, args=(queue.Job({"_id": "j"}), done, lost))
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive() and lost.is_set() and not worker.outage.down


# ---------------------------------------------------------------- bounded shutdown

def test_give_back_releases_a_job_that_had_not_pushed(db, payment, worker):
    job = queue.claim(db, "w-test", 60)
    assert worker.give_back(job) == "released"
    doc = db.transactions.find_one({"_id": job.id})
    assert doc["status"] == "queued" and doc["attempts"] == 0 and queue.claim(db, "w2", 60) is not None


def test_give_back_mid_push_waits_for_mpesa_and_never_pushes_again(db, payment, worker):
    job = queue.claim(db, "w-test", 60)
    records.claim_push(db, payment["_id"], job.token)
    assert worker.give_back(job) == "unknown"
    assert db.transactions.find_one({"_id": job.id})["status"] == "completed"
    doc = records.get(db, payment["_id"])
    assert doc["status"] == "pending" and doc["push_outcome_unknown"]


def test_give_back_of_a_payment_settled_meanwhile_finishes_the_job(db, payment, worker):
    job = queue.claim(db, "w-test", 60)
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"status": "completed"}})
    assert worker.give_back(job) == "finished"
    assert db.transactions.find_one({"_id": job.id})["status"] == "completed"


def test_a_write_waiting_for_the_database_gives_up_when_the_bound_is_spent(worker):
    worker.hard_stop.set()
    with pytest.raises(worker_module.Stopped):
        worker._durably(flaky(lambda: 1, 100))


def test_start_up_waits_for_the_database_within_its_budget(db, monkeypatch):
    monkeypatch.setattr(worker_module, "init_db", flaky(lambda _db: [], 2))
    assert worker_module.wait_for_database(db, 5, threading.Event(), Outage(0.01))
    monkeypatch.setattr(worker_module, "init_db", flaky(lambda _db: [], 10 ** 6))
    assert not worker_module.wait_for_database(db, 0.05, threading.Event(), Outage(0.01))
    monkeypatch.setattr(worker_module, "init_db", flaky(lambda _db: [], 1, ValueError("a bug")))
    with pytest.raises(ValueError):
        worker_module.wait_for_database(db, 5, threading.Event(), Outage(0.01))


def test_configuration_error_exits_3(monkeypatch, capsys):
    monkeypatch.setenv("JOB_LEASE_SECONDS", "soon")
    monkeypatch.setattr(worker_module, "load_dotenv", lambda: None)
    assert worker_module.main() == 3
    assert "JOB_LEASE_SECONDS" in capsys.readouterr().err


# ---------------------------------------------------------------- idle costs

class RecordingEvent(threading.Event):
    def __init__(self, stop_after: int):
        super().__init__()
        self.waits, self.stop_after = [], stop_after

    def wait(self, timeout=None):
        self.waits.append(timeout)
        if len(self.waits) >= self.stop_after:
            self.set()
        return self.is_set()


def test_polling_backs_off_while_idle_up_to_the_cap(db):
    waker = Waker(db, Outage(), threading.Event(), poll_min=0.25, poll_max=2, safety_poll=30, use_stream=False)
    waker._kick = RecordingEvent(10 ** 6)
    for _ in range(6):
        waker.wait()
    assert waker._kick.waits == [0.25, 0.5, 1, 2, 2, 2]
    waker.worked()
    waker.wait()
    assert waker._kick.waits[-1] == 0.25


def test_a_stream_event_for_a_later_retry_wakes_the_worker_then(db):
    waker = Waker(db, Outage(), threading.Event(), poll_min=0.25, poll_max=2, safety_poll=30, use_stream=False)
    waker.streaming = True
    waker._seen({"operationType": "update",
                 "updateDescription": {"updatedFields": {"status": "queued", "run_at": utcnow() + timedelta(seconds=3)}}})
    assert waker._kick.is_set() and 2.5 < waker._next_timeout() < 3.5
    assert waker._next_timeout() == 30  # the safety look, once the retry is past


def test_the_mail_sender_looks_less_often_while_idle(db, monkeypatch):
    calls = []
    monkeypatch.setattr(outbox, "deliver_due", lambda *a, **k: calls.append(k["reap"]) or {"stopped": False})
    stopping = RecordingEvent(8)
    outbox.mail_loop(db, {"SMTP_HOST": "smtp.example", "SMTP_PORT": 25}, stopping, poll=2, idle_max=16)
    assert stopping.waits[:6] == [4, 8, 16, 16, 16, 16]
    assert calls[0] is True and not any(calls[1:])  # stale claims are reaped rarely


def test_the_mail_sender_stops_between_messages(db):
    for n in range(3):
        outbox.enqueue(db, key=f"k{n}", username="u", to="u@example.com", category="c", subject="s", text="t",
                       link=None, link_label="")

    class Sender:
        sent = 0

        def send(self, _email):
            Sender.sent += 1
    stop_after_first = lambda: Sender.sent >= 1  # noqa: E731
    outbox.deliver_due(db, {"SMTP_HOST": "x"}, sender=Sender(), should_stop=stop_after_first)
    assert Sender.sent == 1


# ---------------------------------------------------------------- the queue's own housekeeping

def test_completed_jobs_expire_and_dead_jobs_do_not(db):
    assert any(ix.document.get("expireAfterSeconds") == 0 for ix in INDEXES["transactions"])
    queue.enqueue(db, "stk_push", job_id="a", payment_id="a")
    queue.enqueue(db, "stk_push", job_id="b", payment_id="b", max_attempts=1)
    done = queue.claim(db, "w", 30)
    queue.complete(db, done, "ok", keep_seconds=3600)
    doc = db.transactions.find_one({"_id": "a"})
    assert doc["expire_at"] - doc["finished_at"] == timedelta(hours=1)
    dead = queue.claim(db, "w", 30)
    queue.retry_later(db, dead, "boom", 1)
    assert db.transactions.find_one({"_id": "b"})["status"] == "dead"
    assert "expire_at" not in db.transactions.find_one({"_id": "b"})


def test_stats_count_every_status_and_the_oldest_wait(db):
    for n in range(5):
        queue.enqueue(db, "stk_push", job_id=f"j{n}", payment_id=str(n))
    for _ in range(3):
        queue.complete(db, queue.claim(db, "w", 30), "ok")
    queue.claim(db, "w", 30)
    db.transactions.update_one({"status": "queued"}, {"$set": {"run_at": utcnow() - timedelta(seconds=90)}})
    stats = queue.stats(db)
    assert stats["counts"] == {"completed": 3, "processing": 1, "queued": 1}
    assert 89 < stats["oldest_queued_seconds"] < 120


def test_without_change_streams_the_worker_falls_back_to_polling(db, monkeypatch, caplog):
    from pymongo.errors import OperationFailure
    from app import wakeup
    opened = []

    def refuse(*_args):
        opened.append(1)
        raise OperationFailure("The $changeStream stage is only supported on replica sets", code=40573)
    monkeypatch.setattr(queue, "watch_runnable", refuse)
    waker = Waker(db, Outage(), threading.Event(), poll_min=0.25, poll_max=2, safety_poll=30)
    assert waker.streaming  # assumed until the server says otherwise
    with caplog.at_level(logging.INFO, logger="lipia.wakeup"):
        waker._follow()  # returns: no point asking again
    assert opened == [1] and not waker.streaming and waker._kick.is_set()
    assert "no change streams" in caplog.text
    assert waker._next_timeout() == 0.25
    assert wakeup.streams_unsupported(OperationFailure("x", code=40573))
    assert not wakeup.streams_unsupported(OperationFailure("history lost", code=286))


def test_a_broken_stream_is_reopened_and_wakes_the_worker(db, monkeypatch):
    from pymongo.errors import OperationFailure

    class NoPause(threading.Event):
        def wait(self, timeout=None):
            return self.is_set()
    stopping = NoPause()
    calls = []

    def broken_then_stop(*_args):
        calls.append(1)
        if len(calls) == 2:
            stopping.set()
        raise OperationFailure("resume token lost", code=286)
    monkeypatch.setattr(queue, "watch_runnable", broken_then_stop)
    waker = Waker(db, Outage(), stopping, poll_min=0.25, poll_max=2, safety_poll=30)
    waker._follow()
    assert len(calls) == 2 and waker._kick.is_set()


def test_a_job_whose_lease_was_lost_is_left_to_its_new_owner(db, payment, worker):
    job = queue.claim(db, "w-test", 30)
    lost = threading.Event()
    lost.set()
    worker._run_job(job, lost)
    # Daraja's answer is recorded on the payment; the job's end is not written over the successor.
    assert records.get(db, payment["_id"])["status"] == "pending"
    assert db.transactions.find_one({"_id": job.id})["status"] == "processing"
