"""What the worker spends on the database per event: a job announced by the change stream wakes
one claim and no housekeeping; housekeeping steps run when due, not on a common beat; the
queue watcher sends no getMore while a job is in hand, and spaces them on a server that
answers at every write."""
import threading
import time

import pytest
from pymongo.errors import AutoReconnect

import worker as worker_module
from app import queue
from app.config import load_config
from app.db import utcnow
from app.mpesa.client import PushAccepted
from app.outage import Outage
from app.wakeup import Waker
from tests.support.factories import make_user, new_payment


class FakeClient:
    def __init__(self):
        self.pushes = []

    def stk_push(self, **kwargs):
        self.pushes.append(kwargs)
        return PushAccepted(merchant_request_id="1-2-3", checkout_request_id="ws_CO_9", response_code="0",
                            response_description="ok", customer_message="ok", exchange={"endpoint": "push"})


@pytest.fixture
def settings():
    return {**load_config({"LIPIA_ENV": "test"}), "PUBLIC_BASE_URL": "https://lipia.example.com",
            "WORKER_OUTAGE_BACKOFF_MAX_SECONDS": 0.01}


class Waits(threading.Event):
    """The waker's doorbell, recording each wait instead of sleeping."""

    def __init__(self):
        super().__init__()
        self.waits = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return True


@pytest.fixture
def worker(db, settings):
    w = worker_module.Worker(db, FakeClient(), settings, worker_id="w-test")
    w.waker.streaming = True  # as when its change stream is open (no thread here)
    w.waker._kick = Waits()
    return w


@pytest.fixture
def claims(monkeypatch):
    made = []
    real = queue.claim
    monkeypatch.setattr(queue, "claim", lambda *a, **k: made.append(1) or real(*a, **k))
    return made


def inserted(job_id) -> dict:
    return {"operationType": "insert", "documentKey": {"_id": job_id},
            "fullDocument": {"_id": job_id, "status": "queued", "run_at": utcnow()}}


def recording_steps(worker, found: dict | None = None):
    ran = []
    worker.housekeeping_steps = [(name, (lambda n=name: ran.append(n) or (found or {}).get(n, 0)))
                                 for name in ("reconcile", "expire", "repair")]
    return ran


def test_a_stream_event_for_a_job_wakes_one_claim_and_no_housekeeping(db, worker, claims):
    user = make_user(db, phone="254712345678")
    payment = new_payment(db, user)
    job = db.transactions.find_one({"payment_id": str(payment["_id"])})
    ran = recording_steps(worker)
    worker.housekeeping(due_only=True)  # the pass at start: every step once
    ran.clear()
    worker.waker._seen(inserted(job["_id"]))
    assert worker.step() == "worked"
    assert len(claims) == 1 and len(worker.waker._kick.waits) == 1  # pushed, then waits: no second claim
    assert worker.client.pushes and db.transactions.find_one({"_id": job["_id"]})["status"] == "completed"
    worker.housekeeping(due_only=True)
    assert ran == []  # the push made the STK Query and the expiry due later, not now
    # ... at their own times: a regular run finds them otherwise (each step looks again after a while).
    now = time.monotonic()
    [query_at] = worker._hints["reconcile"]
    [expiry_at] = worker._hints["expire"]
    assert query_at - now == pytest.approx(worker.settings["RECONCILE_AFTER_SECONDS"] + 1, abs=2)
    assert expiry_at - now == pytest.approx(worker.settings["PAYMENT_EXPIRE_AFTER_SECONDS"] + 1, abs=2)


def test_after_a_job_the_worker_looks_again_unless_the_stream_says_nothing_waits(settings, db):
    waker = Waker(db, Outage(), threading.Event(), poll_min=0.25, poll_max=2, safety_poll=30, use_stream=False)
    assert waker.more_expected()  # polling: nothing to go by
    waker.streaming = True
    waker._seen(inserted("a"))
    waker._seen(inserted("b"))
    waker.worked("a")
    assert waker.more_expected()  # b is waiting
    waker.worked("b")
    assert not waker.more_expected()
    waker.worked("c")  # a job the stream never announced (a lease that ran out): others may be like it
    assert waker.more_expected()
    waker.nothing_runnable()
    waker._seen(inserted("d"))
    waker.worked("d")
    assert not waker.more_expected()


def test_housekeeping_steps_run_when_due_and_an_outage_makes_all_due_when_it_ends(worker):
    ran = recording_steps(worker, found={"repair": 3})
    worker.housekeeping(due_only=True)
    assert ran == ["reconcile", "expire", "repair"]
    ran.clear()
    worker.housekeeping(due_only=True)
    assert ran == []
    now = time.monotonic()
    idle = worker.settings["WORKER_HOUSEKEEPING_MAX_SECONDS"]
    assert worker._next_due("reconcile", now) - now == pytest.approx(idle, abs=1)  # found nothing: looks rarely
    assert worker._next_due("repair", now) - now == pytest.approx(worker_module.HOUSEKEEPING_EVERY, abs=1)
    assert worker._until_next_due() == pytest.approx(worker_module.HOUSEKEEPING_EVERY, abs=1)
    worker.outage.failed(AutoReconnect("down"), "claiming a job")
    worker.outage.ok()
    assert worker._until_next_due() == 0
    worker.housekeeping(due_only=True)
    assert ran == ["reconcile", "expire", "repair"]


def test_a_step_with_its_own_pace_and_a_step_cut_short_by_an_outage(worker):
    calls = {"n": 0}

    def down_once():
        calls["n"] += 1
        if calls["n"] == 1:
            raise AutoReconnect("down")
        return 0
    worker.housekeeping_steps = [("flaky", down_once), ("paced", lambda: 0, 7.0)]
    worker.housekeeping(due_only=True)
    assert worker._until_next_due() == 0  # the outage left every step due
    worker.housekeeping(due_only=True)
    now = time.monotonic()
    assert worker._next_due("paced", now) - now == pytest.approx(7.0, abs=1)


class EarlyStream:
    """A change stream on a server that answers every waiting getMore at once, empty."""

    def __init__(self):
        self.alive, self.getmores = True, 0

    def try_next(self):
        self.getmores += 1
        return None


def test_the_watcher_spaces_getmores_a_server_answers_early_and_rests_while_a_job_is_in_hand(db):
    stopping = threading.Event()
    waker = Waker(db, Outage(), stopping, poll_min=0.25, poll_max=2, safety_poll=600)
    stream = EarlyStream()
    listener = threading.Thread(target=waker._listen, args=(stream,), daemon=True)
    listener.start()
    time.sleep(0.4)
    # Pauses of 0.05, 0.1, 0.2 s...: a handful, where one per write would be thousands.
    assert 1 <= stream.getmores <= 8
    waker.worked("a-job")
    time.sleep(0.6)  # a pause in progress may end with one more
    resting = stream.getmores
    time.sleep(0.3)
    assert stream.getmores == resting
    stopping.set()
    waker.resting()
    listener.join(timeout=5)
    assert not listener.is_alive()
