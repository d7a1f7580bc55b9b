"""The push job's decision for each kind of answer from Daraja (a fake client stands in)."""
import pytest

from app import queue
from app.auth.service import register
from app.config import load_config
from app.mpesa.client import PushAccepted
from app.mpesa.errors import DarajaConfigError, DarajaError, DarajaNotAccepted, DarajaOutcomeUnknown, DarajaRejected
from app.payments import callback_signing, checkout, push_job, records
from app.plans.service import get_plan

SETTINGS = {"PROMPT_TIMEOUT_SECONDS": 60, "MPESA_ACCOUNT_REFERENCE": "LIPIA", "JOB_MAX_ATTEMPTS": 5,
            "PUBLIC_BASE_URL": "https://lipia.example.com", "SECRET_KEY": "unit-test-secret"}


class FakeClient:
    def __init__(self, answer):
        self.answer, self.pushes = answer, []

    def stk_push(self, **kwargs):
        self.pushes.append(kwargs)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def job(app, db):
    with app.app_context():
        user = register(db, "alice", "password123", "254712345678")
    checkout.start(db, SETTINGS, user=user, plan=get_plan(db, "basic"), phone="254712345678",
                   idempotency_key="k-00000001")
    return queue.claim(db, "w1", lease_seconds=30)


def status_of(db, job):
    return records.get(db, job.payment_id)


def test_accepted_push_waits_for_the_phone(db, job):
    accepted = PushAccepted(merchant_request_id="1-2-3", checkout_request_id="ws_CO_1", response_code="0",
                            response_description="ok", customer_message="ok", exchange={"endpoint": "push"})
    client = FakeClient(accepted)
    assert push_job.run(db, client, SETTINGS, job) == "prompt sent"
    payment = status_of(db, job)
    assert payment["status"] == "pending" and payment["checkout_request_id"] == "ws_CO_1"
    assert client.pushes[0]["callback_url"].endswith(f"/{payment['_id']}/{callback_signing.token(SETTINGS, payment['_id'])}")
    assert push_job.run(db, client, SETTINGS, job).startswith("nothing to do") and len(client.pushes) == 1


@pytest.mark.parametrize("error", [DarajaRejected("Invalid PhoneNumber", http_status=400, error_code="400.002.02"),
                                   ValueError("bad amount")])
def test_final_refusals_fail_the_payment(db, job, error):
    assert push_job.run(db, FakeClient(error), SETTINGS, job).startswith("refused")
    payment = status_of(db, job)
    assert payment["status"] == "failed" and payment["failure_reason"] == "rejected"
    assert "push_in_flight" not in payment


def test_not_accepted_clears_the_push_so_a_retry_may_send_it(db, job):
    with pytest.raises(queue.Retry):
        push_job.run(db, FakeClient(DarajaNotAccepted("429")), SETTINGS, job)
    payment = status_of(db, job)
    assert payment["status"] == "queued" and "push_in_flight" not in payment


def test_a_phone_busy_with_an_earlier_prompt_is_tried_again_over_a_prompts_life(db, job):
    """All five attempts used to fall in the first seconds (the backoff of a flaky network),
    while the prompt a customer had cancelled here kept the phone busy for its whole minute."""
    with pytest.raises(queue.Retry) as raised:
        push_job.run(db, FakeClient(DarajaNotAccepted("another transaction is in progress for this phone",
                                                      error_code="500.001.1001")), SETTINGS, job)
    assert raised.value.base_delay == 15
    with pytest.raises(queue.Retry) as raised:
        push_job.run(db, FakeClient(DarajaNotAccepted("429")), SETTINGS, job)
    assert raised.value.base_delay is None  # the worker's own backoff


def test_unknown_outcome_is_never_pushed_again(db, job):
    client = FakeClient(DarajaOutcomeUnknown("read timeout"))
    assert push_job.run(db, client, SETTINGS, job) == "push outcome unknown"
    payment = status_of(db, job)
    assert payment["status"] == "pending" and payment["push_outcome_unknown"]
    assert push_job.run(db, client, SETTINGS, job).startswith("nothing to do") and len(client.pushes) == 1


@pytest.mark.parametrize("error, status", [
    (DarajaNotAccepted("429"), "failed"),  # surely not sent: nothing was taken
    # An error nobody expected, after the push was marked in flight: it may have reached
    # the phone, so the payment waits for M-Pesa's answer instead of saying nothing was taken.
    (RuntimeError("a bug"), "pending"),
])
def test_last_failed_attempt_dead_letters_the_job(app, db, error, status):
    from worker import Worker
    with app.app_context():
        user = register(db, "bob", "password123", "254712345679")
    payment = checkout.start(db, {**SETTINGS, "JOB_MAX_ATTEMPTS": 1}, user=user, plan=get_plan(db, "basic"),
                             phone="254712345679", idempotency_key="k-00000002").payment
    worker = Worker(db, FakeClient(error), {**load_config({"LIPIA_ENV": "test"}), **SETTINGS, "JOB_BACKOFF_SECONDS": 1})
    assert worker.run_once() == "worked"
    assert db.transactions.find_one({"payment_id": str(payment["_id"])})["status"] == "dead"
    after = records.get(db, payment["_id"])
    assert after["status"] == status
    assert bool(after.get("push_outcome_unknown")) == (status == "pending")


class Flagged(DarajaError):
    """An error class the push job has never heard of: only its flags can tell it what to do."""


@pytest.mark.parametrize("retryable, unknown, outcome", [
    (True, False, "retry"), (False, True, "push outcome unknown"), (True, True, "push outcome unknown")])
def test_the_decision_comes_from_the_error_flags(db, job, retryable, unknown, outcome):
    error = Flagged("?", http_status=503)
    error.retryable, error.outcome_unknown = retryable, unknown
    if outcome == "retry":
        with pytest.raises(queue.Retry):
            push_job.run(db, FakeClient(error), SETTINGS, job)
        assert status_of(db, job)["status"] == "queued" and "push_in_flight" not in status_of(db, job)
    else:
        assert push_job.run(db, FakeClient(error), SETTINGS, job) == outcome
        assert status_of(db, job)["push_outcome_unknown"]


def test_a_configuration_error_is_never_retried(app, db):
    from worker import Worker
    with app.app_context():
        user = register(db, "dora", "password123", "254712345677")
    payment = checkout.start(db, SETTINGS, user=user, plan=get_plan(db, "basic"),
                             phone="254712345677", idempotency_key="k-00000003").payment
    client = FakeClient(DarajaConfigError("MPESA_BASE_URL is not a usable URL", error_code="invalid_url"))
    worker = Worker(db, client, {**load_config({"LIPIA_ENV": "test"}), **SETTINGS, "JOB_BACKOFF_SECONDS": 1})
    assert worker.run_once() == "worked"
    job = db.transactions.find_one({"payment_id": str(payment["_id"])})
    assert job["status"] == "dead" and job["attempts"] == 1 and "MPESA_BASE_URL" in job["error"]
    failed = records.get(db, payment["_id"])
    assert failed["status"] == "failed" and failed["failure_reason"] == "mpesa_unreachable"
    assert "push_in_flight" not in failed and len(client.pushes) == 1


# ---------------------------------------------------------------- orphans (a crash between the two inserts)

def orphan(app, db, name: str, phone: str, key: str, age_seconds: float) -> dict:
    """A queued payment as a crash after its insert leaves it: no push job."""
    from datetime import timedelta

    from app.db import utcnow
    with app.app_context():
        user = register(db, name, "password123", phone)
    payment = checkout.start(db, SETTINGS, user=user, plan=get_plan(db, "basic"), phone=phone,
                             idempotency_key=key).payment
    db.transactions.delete_one({"payment_id": str(payment["_id"])})
    db.payments.update_one({"_id": payment["_id"]},
                           {"$set": {"created_at": utcnow() - timedelta(seconds=age_seconds)}})
    return payment


def test_orphans_get_their_job_with_two_queries_whatever_their_number(app, db, monkeypatch):
    old = [orphan(app, db, f"orphan{i}", f"25471234560{i}", f"k-orphan-0{i}", 120) for i in range(3)]
    young = orphan(app, db, "young", "254712345609", "k-orphan-09", 1)   # may still be between its two inserts
    with_job = orphan(app, db, "hasjob", "254712345608", "k-orphan-08", 120)
    push_job.enqueue(db, SETTINGS, records.get(db, with_job["_id"]))
    reads = []
    for name in ("find", "find_one", "count_documents"):
        real = getattr(db.transactions, name)
        monkeypatch.setattr(db.transactions, name, lambda *a, _real=real, _name=name, **k: reads.append(_name) or _real(*a, **k))
    assert push_job.requeue_orphans(db, SETTINGS) == 3
    assert reads == ["find"]   # one read of the queue for every candidate together
    jobs = {doc["payment_id"]: doc for doc in db.transactions.find()}
    assert all(jobs[str(p["_id"])]["_id"] == push_job.job_id(p["_id"]) for p in old)
    assert jobs[str(old[0]["_id"])]["username"] == "orphan0" and jobs[str(old[0]["_id"])]["amount"] == old[0]["amount"]
    assert str(young["_id"]) not in jobs and len(jobs) == 4
    assert push_job.requeue_orphans(db, SETTINGS) == 0
