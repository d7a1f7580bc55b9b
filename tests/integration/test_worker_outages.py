"""The worker against the faults a host brings: the database killed and restarted from disk,
SIGTERM in the middle of a push, and a start while the database is still down.

The database here is a SecantusDB server on a storage directory, so it can be SIGKILLed
and restarted on the same port with the same data, as a real outage would leave it.
"""
import signal
import time

import pymongo
import pytest
import requests
from bson import ObjectId

from tests.support.invariants import assert_money_invariants
from tests.support.stack import DiskDatabase, start_stack
from tests.support.web import registered, wait_until

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 20
DOWN_LINE = "database unreachable"
UP_LINE = "database reachable again"


@pytest.fixture(scope="module")
def disk_db(tmp_path_factory):
    db = DiskDatabase(tmp_path_factory.mktemp("secantus-data")).start()
    yield db
    db.stop()


@pytest.fixture(scope="module")
def bare(disk_db):
    """Simulator and web on the restartable database; each test starts its own workers."""
    stack = start_stack(disk_db.base, workers=0, JOB_LEASE_SECONDS="6", MPESA_READ_TIMEOUT="10",
                        WORKER_OUTAGE_BACKOFF_MAX_SECONDS="1", WORKER_SHUTDOWN_SECONDS="4",
                        WORKER_POLL_MAX_SECONDS="1", PAYMENT_EXPIRE_AFTER_SECONDS="300")
    stack.client = pymongo.MongoClient(disk_db.base, tz_aware=True, serverSelectionTimeoutMS=2000)
    yield stack
    stack.stop()
    stack.client.close()


@pytest.fixture
def db(bare):
    return bare.client[bare.db_name]


@pytest.fixture(autouse=True)
def no_faults(bare, disk_db):
    if not disk_db.proc.alive():
        disk_db.start()
    bare.sim("/_sim/faults", {})


def payment(db, payment_id):
    return db.payments.find_one({"_id": ObjectId(payment_id)})


def job(db, payment_id):
    return db.transactions.find_one({"payment_id": payment_id})


def pushes(stack, phone):
    return requests.get(f"{stack.sim_url}/_sim/pushes", params={"phone": phone}, timeout=5).json()


def assert_credited_once(db, customer, payment_id, words):
    # The status is written a moment before the credit is booked.
    wait_until(lambda: payment(db, payment_id).get("credited") is True, timeout=10, what="credit booked")
    assert payment(db, payment_id)["status"] == "completed"
    assert db.ledger.count_documents({"payment_id": payment_id}) == 1
    assert db.users.find_one({"username": customer.username})["words_remaining"] == words


def settle_then_die(db, payment_id, phone):
    """Run the settle path here, with a success callback, and die between the settling write
    and the credit: what a process killed at that instant leaves behind."""
    from app import ledger
    from app.payments import settlement
    from app.mpesa.callback import parse_callback
    from app.payments.outcomes import from_callback

    class Crash(BaseException):
        pass

    def crash(*_args, **_kwargs):
        raise Crash("process died after settling, before crediting")
    doc = payment(db, payment_id)
    body = {"Body": {"stkCallback": {
        "MerchantRequestID": doc["merchant_request_id"], "CheckoutRequestID": doc["checkout_request_id"],
        "ResultCode": 0, "ResultDesc": "ok", "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 100.0}, {"Name": "MpesaReceiptNumber", "Value": f"UNB{payment_id[-7:].upper()}"},
            {"Name": "PhoneNumber", "Value": int(phone)}]}}}}
    real = ledger.credit_payment
    ledger.credit_payment = crash
    try:
        with pytest.raises(Crash):
            settlement.settle(db, payment_id, from_callback(parse_callback(body)))
    finally:
        ledger.credit_payment = real


def test_database_killed_for_twenty_seconds_with_payments_in_every_phase(bare, disk_db, db):
    worker = bare.start_worker("outlives-the-database")
    # Completed, not yet credited (just before the outage): a process dies between the
    # settling write and the credit.
    unbooked = registered(bare.web_url)
    bare.sim("/_sim/script", {"phone": unbooked.phone, "result_code": 1032, "after": 60})  # no answer before the crash
    unbooked_id = unbooked.checkout()
    unbooked.wait_for(unbooked_id, "pending", timeout=30)
    # Pending: the prompt is on the phone; the customer pays while the database is gone.
    waiting = registered(bare.web_url)
    bare.sim("/_sim/script", {"phone": waiting.phone, "result_code": 0, "after": 2})
    waiting_id = waiting.checkout()
    waiting.wait_for(waiting_id, "pending")
    # In flight: Daraja holds the push reply until the database is down.
    in_flight = registered(bare.web_url)
    bare.sim("/_sim/faults", {"push_delay": 3})
    bare.sim("/_sim/script", {"phone": in_flight.phone, "result_code": 0, "after": 1})
    in_flight_id = in_flight.checkout()
    wait_until(lambda: len(pushes(bare, in_flight.phone)) == 1, what="push reached Daraja")
    # Queued: the worker is busy with the push in flight.
    queued = registered(bare.web_url)
    bare.sim("/_sim/script", {"phone": queued.phone, "result_code": 0, "after": 0.5})
    queued_id = queued.checkout()
    assert payment(db, queued_id)["status"] == "queued"
    settle_then_die(db, unbooked_id, unbooked.phone)  # the repair pass waits 5 s before finishing it
    assert payment(db, unbooked_id)["status"] == "completed" and payment(db, unbooked_id)["credited"] is False
    # The state this phase models must be on disk before the server dies: a second (still
    # inside the repair pass's grace) rather than racing the embedded server's own sync.
    time.sleep(1)

    disk_db.kill()
    time.sleep(OUTAGE_SECONDS)
    assert worker.alive(), worker.output()[-3000:]
    disk_db.start()

    paid = ((waiting, waiting_id), (in_flight, in_flight_id), (queued, queued_id), (unbooked, unbooked_id))
    for customer, payment_id in paid:
        customer.wait_for(payment_id, "completed", timeout=60)
        assert_credited_once(db, customer, payment_id, 10_000)
        assert len(pushes(bare, customer.phone)) == 1
    # Callbacks that came while the database was gone were spooled, not lost: the receipts
    # M-Pesa sent are on the payments (an STK Query alone would not have told them).
    for customer, payment_id in paid:
        wait_until(lambda: payment(db, payment_id).get("mpesa_receipt"), timeout=30, what=f"receipt of {payment_id}")
    # Daraja's answer to the push in flight was kept through the outage, not lost.
    assert payment(db, in_flight_id)["checkout_request_id"] and not payment(db, in_flight_id).get("push_outcome_unknown")
    # A new customer after the outage goes through.
    later = registered(bare.web_url)
    bare.sim("/_sim/script", {"phone": later.phone, "result_code": 0, "after": 0.2})
    later_id = later.checkout()
    later.wait_for(later_id, "completed", timeout=30)
    assert_credited_once(db, later, later_id, 10_000)

    assert worker.alive()
    log = worker.output()
    assert log.count(DOWN_LINE) == 1 and log.count(UP_LINE) == 1, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    worker.stop()
    assert worker.proc.returncode == 0
    assert_money_invariants(db)


def test_sigterm_mid_push_exits_within_the_bound_and_never_pushes_twice(bare, db):
    customer = registered(bare.web_url)
    # The push takes longer than the shutdown bound (4 s); the customer pays after the worker is gone.
    bare.sim("/_sim/faults", {"push_delay": 7})
    bare.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 4.5})  # under the simulated prompt timeout (6 s)
    payment_id = customer.checkout()
    worker = bare.start_worker("deployed-away")
    wait_until(lambda: "push_in_flight" in (payment(db, payment_id) or {}), what="push in flight")
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=4 + 3) == 0, worker.output()[-3000:]
    assert "shutdown bound of 4s reached" in worker.output()
    # Given back honestly: the push may have reached the phone, so it waits for M-Pesa.
    done = job(db, payment_id)
    assert done["status"] == "completed" and done["outcome"].startswith("push outcome unknown"), (done, worker.output()[-3000:])
    assert payment(db, payment_id)["push_outcome_unknown"]
    successor = bare.start_worker("successor")
    # The callback (its URL names the payment) settles it; nobody pushes again.
    customer.wait_for(payment_id, "completed", timeout=30)
    assert_credited_once(db, customer, payment_id, 10_000)
    time.sleep(1)
    assert len(pushes(bare, customer.phone)) == 1
    successor.stop()
    assert_money_invariants(db)


def test_an_idle_worker_exits_at_once_on_sigterm(bare, db):
    """Its housekeeping thread slept till its next step (a minute when idle) and held the exit for
    the whole shutdown bound: every deploy waited it out, or killed the worker at its end."""
    worker = bare.start_worker("idle", WORKER_HOUSEKEEPING_MAX_SECONDS="60")
    wait_until(lambda: "started" in worker.output(), what="worker started")
    time.sleep(1)  # its first housekeeping pass is done: the thread sleeps till its next step
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=10) == 0, worker.output()[-3000:]
    assert time.monotonic() - started < 2, worker.output()[-2000:]


def test_sigterm_before_the_push_gives_the_job_back_at_once(bare, db):
    customer = registered(bare.web_url)
    bare.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.2})
    payment_id = customer.checkout()
    # A worker claimed the job and is told to stop before pushing: give_back releases it.
    from app import queue
    from worker import Worker
    from app.config import load_config
    settings = load_config({k: v for k, v in bare.env.items() if k.isupper()})
    held = queue.claim(db, "stopping-worker", lease_seconds=60)
    assert held.payment_id == payment_id
    assert Worker(db, None, settings, worker_id="stopping-worker").give_back(held) == "released"
    released = job(db, payment_id)
    assert released["status"] == "queued" and released["attempts"] == 0
    worker = bare.start_worker("picks-it-up")
    customer.wait_for(payment_id, "completed", timeout=30)  # not after a 60 s lease
    assert len(pushes(bare, customer.phone)) == 1
    worker.stop()
    assert_money_invariants(db)


def test_worker_started_while_the_database_is_down_waits_then_works(bare, disk_db, db):
    disk_db.kill()
    early = bare.start_worker("early", WORKER_STARTUP_WAIT_SECONDS="60")
    hopeless = bare.start_worker("hopeless", WORKER_STARTUP_WAIT_SECONDS="1")
    assert hopeless.proc.wait(timeout=20) == 1
    assert "database unreachable for 1s at start-up" in hopeless.output()
    assert "Traceback" not in hopeless.output()
    time.sleep(2)
    assert early.alive()
    disk_db.start()
    customer = registered(bare.web_url)
    bare.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.2})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "completed", timeout=40)
    assert_credited_once(db, customer, payment_id, 10_000)
    # A second outage while the worker idles: its claims fail, and it waits again.
    disk_db.kill()
    time.sleep(15)  # longer than a driver's server selection (5 s) and a stream's resume attempt
    assert early.alive()
    disk_db.start()
    second = registered(bare.web_url)
    bare.sim("/_sim/script", {"phone": second.phone, "result_code": 0, "after": 0.2})
    second_id = second.checkout()
    second.wait_for(second_id, "completed", timeout=40)
    assert_credited_once(db, second, second_id, 10_000)
    log = early.output()
    assert log.count(DOWN_LINE) == 2 and log.count(UP_LINE) == 2 and "Traceback" not in log, log[-3000:]
    early.stop()
    assert_money_invariants(db)


def test_configuration_error_exits_3_with_one_clear_message(bare):
    broken = bare.start_worker("misconfigured", JOB_LEASE_SECONDS="soon")
    assert broken.proc.wait(timeout=20) == 3
    out = broken.output()
    assert "JOB_LEASE_SECONDS" in out and "Traceback" not in out
