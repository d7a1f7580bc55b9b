"""The worker's half of a reversal: one send per attempt, and the sweep that finishes what a crash left."""
from datetime import timedelta

import pytest

from app import ledger, queue
from app.db import utcnow
from app.mpesa.errors import DarajaNotAccepted
from app.payments import records, refunds, reversal_job
from tests.support.reversals import FakeDaraja, deliver, send_queued
from tests.unit.test_refund_claims import bought, customer  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def books_balance_after_each_test(db):
    yield
    assert ledger.check_invariants(db) == []


def request(app, db, payment, mode="whole"):
    return refunds.request(db, app.config, records.get(db, payment["_id"]), actor="ops", reason="asked",
                           words_mode=mode)


def aged(db, seconds=600):
    """As if everything was written `seconds` ago (the sweep waits out its grace period)."""
    then = utcnow() - timedelta(seconds=seconds)
    db.reversals.update_many({}, {"$set": {"created_at": then}})
    db.reversals.update_many({"finished_at": {"$exists": True}}, {"$set": {"finished_at": then}})
    db.payments.update_many({"refund": {"$exists": True}}, {"$set": {"refund.at": then}})
    db.c2b_payments.update_many({}, {"$set": {"updated_at": then}})


def sweep(db, app):
    return reversal_job.sweep(db, app.config, force=True)


def test_the_worker_runs_the_reversal_job_and_sweeps_refunds(app, db, bought):
    import worker
    kind = worker.JOB_KINDS[reversal_job.KIND]
    assert kind.give_up is reversal_job.give_up and kind.hand_back is reversal_job.hand_back
    rev = request(app, db, bought)
    daraja = FakeDaraja()
    w = worker.Worker(db, daraja, app.config, worker_id="w-test")
    assert "refunds" in [step[0] for step in w.housekeeping_steps]
    while w.run_once() == "worked":
        pass
    assert len(daraja.bodies) == 1 and refunds.latest(db, bought["_id"])["state"] == "sent"
    assert queue.get(db, rev["job_id"])["status"] == queue.COMPLETED


def test_a_job_run_twice_sends_once(app, db, bought):
    rev = request(app, db, bought)
    daraja = FakeDaraja()
    job = queue.Job({**queue.get(db, rev["job_id"]), "claim_token": "a"})
    assert reversal_job.run(db, daraja, app.config, job) == "sent"
    assert reversal_job.run(db, daraja, app.config, job).startswith("nothing to do")
    assert len(daraja.bodies) == 1


def test_a_send_cut_short_is_never_sent_again_its_words_stay_held(app, db, bought, customer):
    rev = request(app, db, bought)
    db.reversals.update_one({"_id": rev["_id"]}, {"$set": {"send_started": {"token": "dead-worker", "at": utcnow()}}})
    daraja = FakeDaraja()
    job = queue.Job({**queue.get(db, rev["job_id"]), "claim_token": "successor"})
    assert reversal_job.run(db, daraja, app.config, job) == "send outcome unknown"
    assert daraja.bodies == [] and refunds.latest(db, bought["_id"])["state"] == "unknown"
    assert ledger.balance(db, customer.username) == 0
    assert deliver(db, app.config, refunds.latest(db, bought["_id"])) == "completed"  # a late result still books it


def test_a_retryable_error_clears_the_send_mark_and_retries(app, db, bought):
    rev = request(app, db, bought)
    job = queue.Job({**queue.get(db, rev["job_id"]), "claim_token": "a"})
    with pytest.raises(queue.Retry):
        reversal_job.run(db, FakeDaraja(DarajaNotAccepted("connection refused")), app.config, job)
    assert "send_started" not in refunds.latest(db, bought["_id"])
    assert reversal_job.run(db, FakeDaraja(), app.config, job) == "sent"


def test_a_dead_job_fails_the_reversal_and_releases_its_words(app, db, bought, customer):
    rev = request(app, db, bought)
    job = queue.Job({**queue.get(db, rev["job_id"]), "claim_token": "a"})
    reversal_job.give_up(db, job, "could not connect to Daraja")
    rev = refunds.latest(db, bought["_id"])
    assert rev["state"] == "failed" and "could not send" in rev["detail"]
    assert ledger.balance(db, customer.username) == 10_000 and rev["release_entry"] == f"release:{rev['_id']}"
    assert records.get(db, bought["_id"])["refund"]["state"] == "failed"


def test_a_stopping_worker_mid_send_leaves_it_unknown(app, db, bought):
    rev = request(app, db, bought)
    doc = {**queue.get(db, rev["job_id"]), "claim_token": "mine", "status": queue.PROCESSING}
    db.transactions.update_one({"_id": doc["_id"]}, {"$set": {"status": queue.PROCESSING, "claim_token": "mine"}})
    job = queue.Job(doc)
    assert reversal_job.hand_back(db, job, 60) is None  # nothing sent yet: the queue takes it back
    db.reversals.update_one({"_id": rev["_id"]}, {"$set": {"send_started": {"token": "mine", "at": utcnow()}}})
    assert reversal_job.hand_back(db, job, 60) == "unknown"
    assert refunds.latest(db, bought["_id"])["state"] == "unknown"


def test_a_reversal_whose_claim_moved_on_is_not_sent(app, db, bought, customer):
    rev = request(app, db, bought)
    db.payments.update_one({"_id": bought["_id"]}, {"$set": {"refund.id": "someone-else"}})
    daraja = FakeDaraja()
    assert send_queued(db, app.config, daraja)[0].startswith("not sent")
    assert daraja.bodies == [] and ledger.balance(db, customer.username) == 10_000
    db.payments.update_one({"_id": bought["_id"]}, {"$set": {"refund.id": rev["_id"]}})  # the books are whole again


# ---------------------------------------------------------------- the sweep

def test_a_request_that_died_before_queueing_its_send_is_sent_by_the_sweep(app, db, bought, customer, monkeypatch):
    monkeypatch.setattr(refunds, "enqueue", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("web died")))
    with pytest.raises(ConnectionError):
        request(app, db, bought)
    monkeypatch.undo()
    assert db.transactions.count_documents({"kind": reversal_job.KIND}) == 0
    assert ledger.balance(db, customer.username) == 0  # held, recorded, no job
    assert sweep(db, app) == 0  # within the grace period: the request may still be alive
    aged(db)
    assert sweep(db, app) == 1
    assert send_queued(db, app.config, FakeDaraja()) == ["sent"]
    assert deliver(db, app.config, refunds.latest(db, bought["_id"])) == "completed"


def test_a_request_that_died_before_holding_is_held_by_the_worker(app, db, bought, customer, monkeypatch):
    monkeypatch.setattr(refunds, "hold_words", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("web died")))
    with pytest.raises(ConnectionError):
        request(app, db, bought)
    monkeypatch.undo()
    assert ledger.balance(db, customer.username) == 10_000
    aged(db)
    sweep(db, app)
    assert send_queued(db, app.config, FakeDaraja()) == ["sent"]
    assert ledger.balance(db, customer.username) == 0  # held before it was sent


def test_a_claim_whose_reversal_was_never_recorded_is_closed(app, db, bought, customer, monkeypatch):
    monkeypatch.setattr(refunds, "_record", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("web died")))
    with pytest.raises(ConnectionError):
        request(app, db, bought)
    monkeypatch.undo()
    claimed = records.get(db, bought["_id"])["refund"]
    assert claimed["state"] == "requested"
    aged(db)
    assert sweep(db, app) == 1
    closed = db.reversals.find_one({"_id": claimed["id"]})
    assert closed["state"] == "failed" and "interrupted" in closed["detail"] and "followup" not in closed
    assert records.get(db, bought["_id"])["refund"]["state"] == "failed"
    # The interrupted request cannot record it now; a new request is a new attempt.
    with pytest.raises(refunds.RefundRefused, match="closed"):
        refunds._record(db, app.config, {"_id": claimed["id"], "payment_id": str(bought["_id"]), "words_held": 0})
    assert request(app, db, bought)["attempt"] == 2 and ledger.balance(db, customer.username) == 0


def test_a_dead_job_the_give_up_missed_is_failed_and_released_by_the_sweep(app, db, bought, customer):
    rev = request(app, db, bought)
    db.transactions.update_one({"_id": rev["job_id"]}, {"$set": {"status": queue.DEAD, "error": "gone"}})
    aged(db)
    sweep(db, app)
    assert refunds.latest(db, bought["_id"])["state"] == "failed"
    assert ledger.balance(db, customer.username) == 10_000


def test_an_end_whose_follow_up_a_crash_cut_short_is_finished(app, db, bought, customer, monkeypatch):
    request(app, db, bought)
    send_queued(db, app.config, FakeDaraja())
    monkeypatch.setattr(refunds, "follow_up", lambda *a, **k: None)  # the process dies right after the end
    deliver(db, app.config, refunds.latest(db, bought["_id"]), "R000002")
    monkeypatch.undo()
    rev = refunds.latest(db, bought["_id"])
    assert rev["state"] == "failed" and rev["followup"] and ledger.balance(db, customer.username) == 0
    aged(db)
    assert sweep(db, app) >= 1
    assert "followup" not in refunds.latest(db, bought["_id"]) and ledger.balance(db, customer.username) == 10_000
    assert records.get(db, bought["_id"])["refund"]["state"] == "failed"
    sweep(db, app)
    assert db.ledger.count_documents({"kind": "release"}) == 1  # once


def test_a_ledger_only_refund_interrupted_after_its_claim_is_booked_by_the_sweep(app, db, bought, customer,
                                                                              monkeypatch):
    from app.admin import repairs
    from app.payments import refund_claims
    monkeypatch.setattr(refund_claims, "book_ledger", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("died")))
    with pytest.raises(ConnectionError):
        repairs.refund_payment(db, bought["_id"], actor="ops", reason="by hand", words=4_000, amount_kes=40)
    monkeypatch.undo()
    assert ledger.balance(db, customer.username) == 10_000
    aged(db)
    sweep(db, app)
    assert ledger.balance(db, customer.username) == 6_000
    assert records.get(db, bought["_id"])["refund"]["state"] == "completed"
    assert "KES 40 refunded" in db.ledger.find_one({"_id": f"refund:{bought['_id']}"})["reason"]


def test_a_menu_payment_left_refunding_without_its_reversal_goes_back_to_review(app, db, bought, monkeypatch):
    import json
    from tests.unit.test_c2b import body
    app.test_client().post("/pay/c2b/confirm/dev-c2b-url-secret", data=json.dumps(body(ref="NOPE")),
                           content_type="application/json")
    monkeypatch.setattr(refunds, "_record", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("web died")))
    with pytest.raises(ConnectionError):
        refunds.request_unmatched(db, app.config, "RKL51ZDR4F", actor="ops", reason="unknown payer")
    monkeypatch.undo()
    assert db.c2b_payments.find_one({"_id": "RKL51ZDR4F"})["state"] == "refunding"
    aged(db)
    sweep(db, app)
    assert db.c2b_payments.find_one({"_id": "RKL51ZDR4F"})["state"] == "review"
    assert db.reversals.find_one({"_id": "reversal:c2b:RKL51ZDR4F:1"})["state"] == "failed"


def test_the_sweep_waits_half_its_grace_period_between_passes(app, db):
    assert sweep(db, app) == 0
    assert reversal_job.sweep(db, app.config) == 0  # within half the grace period: not even the reads
