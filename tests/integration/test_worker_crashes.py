"""Workers that die, stop or crash between two money writes; and a seeded storm of faults."""
import random
import signal
import threading
import time

import pytest
import requests
from bson import ObjectId

from app import ledger, queue
from app.payments import settlement, states
from tests.support.invariants import assert_money_invariants
from tests.support.stack import start_stack
from tests.support.web import registered, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bare(mongo_base):
    """A stack with no worker running: each test starts and kills its own."""
    stack = start_stack(mongo_base, workers=0, JOB_LEASE_SECONDS="5", MPESA_READ_TIMEOUT="10")
    yield stack
    stack.stop()


@pytest.fixture
def customer(bare):
    bare.sim("/_sim/faults", {})
    return registered(bare.web_url)


def payment(stack, payment_id):
    return stack.db.payments.find_one({"_id": ObjectId(payment_id)})


def job(stack, payment_id):
    return stack.db.transactions.find_one({"payment_id": payment_id})


def pushes(stack, phone):
    return requests.get(f"{stack.sim_url}/_sim/pushes", params={"phone": phone}, timeout=5).json()



def test_worker_killed_mid_push_is_taken_over_without_a_second_push(bare, customer):
    bare.sim("/_sim/faults", {"push_delay": 3})  # the worker sits inside the push
    bare.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.5, "callback": "none"})
    payment_id = customer.checkout()
    first = bare.start_worker("doomed")
    # Kill it while Daraja holds the reply: the prompt already reached the phone.
    wait_until(lambda: len(pushes(bare, customer.phone)) == 1, what="push received by Daraja")
    assert "push_in_flight" in payment(bare, payment_id)
    first.kill()
    second = bare.start_worker("successor")
    wait_until(lambda: job(bare, payment_id)["status"] == "completed", timeout=20, what="takeover")
    taken = job(bare, payment_id)
    assert taken["attempts"] == 2 and taken["outcome"] == "push outcome unknown after takeover"
    assert taken["worker_id"].endswith(str(second.pid))
    doc = payment(bare, payment_id)
    assert doc["status"] == "pending" and doc["push_outcome_unknown"]
    time.sleep(1)
    assert len(pushes(bare, customer.phone)) == 1  # never pushed again
    second.stop()
    assert_money_invariants(bare.db)


def test_job_claimed_by_a_worker_that_died_before_pushing_is_pushed_by_another(bare, customer):
    bare.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1})
    payment_id = customer.checkout()
    # A worker claimed the job and died at once: its lease is all that is left of it.
    ghost = queue.claim(bare.db, "ghost:1", lease_seconds=2)
    assert ghost.payment_id == payment_id
    survivor = bare.start_worker("survivor")
    customer.wait_for(payment_id, "completed", timeout=20)
    done = job(bare, payment_id)
    assert done["attempts"] == 2 and done["status"] == "completed" and done["worker_id"] != "ghost:1"
    assert len(pushes(bare, customer.phone)) == 1
    survivor.stop()
    assert_money_invariants(bare.db)


def test_sigterm_lets_the_current_job_finish(bare, customer):
    bare.sim("/_sim/faults", {"push_delay": 2})
    bare.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 5, "callback": "none"})
    payment_id = customer.checkout()
    worker = bare.start_worker("graceful")
    wait_until(lambda: "push_in_flight" in (payment(bare, payment_id) or {}), what="push in flight")
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=15) == 0
    assert job(bare, payment_id)["status"] == "completed"
    doc = payment(bare, payment_id)
    assert doc["status"] == "pending" and doc["checkout_request_id"]
    assert_money_invariants(bare.db)


def test_crash_between_two_money_writes_is_finished_by_the_repair_pass(bare, customer, monkeypatch):
    bare.sim("/_sim/script", {"phone": customer.phone, "result_code": 1032})  # waits on the handset
    payment_id = customer.checkout()
    helper = bare.start_worker("pusher")
    customer.wait_for(payment_id, "pending")
    helper.stop()

    class Crash(BaseException):
        pass

    import pymongo.collection
    real_insert = pymongo.collection.Collection.insert_one

    def crash(collection, *args, **kwargs):
        if collection.name == "ledger":
            raise Crash("process died after the words went onto the balance, before the entry was written")
        return real_insert(collection, *args, **kwargs)

    # The settle path runs here, in the test, and dies between the balance and the ledger entry
    # (a purchase is journaled by its payment, `credited: false`, until the entry is written).
    from app.payments.outcomes import from_callback
    from app.mpesa.callback import parse_callback
    body = {"Body": {"stkCallback": {
        "MerchantRequestID": payment(bare, payment_id)["merchant_request_id"],
        "CheckoutRequestID": payment(bare, payment_id)["checkout_request_id"], "ResultCode": 0,
        "ResultDesc": "ok", "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 100.0}, {"Name": "MpesaReceiptNumber", "Value": "CRASH12345"},
            {"Name": "PhoneNumber", "Value": int(customer.phone)}]}}}}
    monkeypatch.setattr(pymongo.collection.Collection, "insert_one", crash)
    with pytest.raises(Crash):
        settlement.settle(bare.db, payment_id, from_callback(parse_callback(body)))
    monkeypatch.undo()
    assert payment(bare, payment_id)["status"] == "completed" and payment(bare, payment_id)["credited"] is False
    assert bare.db.ledger.find_one({"payment_id": payment_id}) is None
    assert bare.db.users.find_one({"username": customer.username})["words_remaining"] == 10_000
    assert ledger.check_invariants(bare.db) == []  # in flight: the payment says what the ledger lacks
    bare.db.payments.update_one({"_id": ObjectId(payment_id)},
                                {"$set": {"settled_at": ledger.utcnow() - ledger.REPAIR_GRACE}})

    # Second window: applied to the balance, crashed before the entry was marked applied.
    key = f"spend:{customer.username}:half-done"
    bare.db.ledger.insert_one(ledger._entry_doc(key, customer.username, 5, "adjustment",
                                                actor="test", reason="crash drill"))
    bare.db.users.update_one({"username": customer.username},
                             {"$inc": {"words_remaining": 5}, "$push": {"applied_keys": key}})
    bare.db.ledger.update_many({"state": "pending"}, {"$set": {"created_at": ledger.utcnow() - ledger.REPAIR_GRACE}})

    repairer = bare.start_worker("repairer")
    wait_until(lambda: bare.db.ledger.count_documents({"state": "pending"}) == 0
               and payment(bare, payment_id)["credited"] is True, timeout=20, what="repair")
    assert bare.db.ledger.find_one({"payment_id": payment_id})["state"] == "applied"
    assert bare.db.users.find_one({"username": customer.username})["words_remaining"] == 10_005
    repairer.stop()
    assert_money_invariants(bare.db)


def test_seeded_storm_of_faults_over_many_payments(bare):
    """Many customers, three workers, and a random mix of every fault; the books must balance."""
    rng = random.Random(20261123)
    bare.sim("/_sim/faults", {})
    workers = [bare.start_worker(f"storm{i}") for i in range(3)]
    customers = [registered(bare.web_url) for _ in range(8)]
    codes = [0, 0, 0, 0, 1032, 1037, 2001, 1, 26]
    payments = []
    for round_no in range(3):
        for c in customers:
            code = rng.choice(codes)
            script = {"phone": c.phone, "result_code": code, "after": round(rng.uniform(0, 0.5), 2),
                      "callback": rng.choice(["normal", "normal", "none", "twice", "concurrent"])}
            if code == 0 and rng.random() < 0.1:
                script["amount"] = 1
            bare.sim("/_sim/script", script)
            if rng.random() < 0.15:
                bare.sim("/_sim/faults", {"push_status": rng.choice([429, 500]), "push_times": 1})
            payments.append((c, c.checkout(rng.choice(["basic", "premium"]))))
        time.sleep(0.5)
        # Spends race the credits.
        threads = [threading.Thread(target=_spend_some, args=(c, rng.randint(1, 4000))) for c in customers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c, pid in payments[-len(customers):]:
            c.wait_for(pid, set(states.FINAL_STATUSES), timeout=45)
        if round_no == 1:
            workers[0].kill()  # one worker dies mid-storm
    for c, pid in payments:
        c.wait_for(pid, set(states.FINAL_STATUSES), timeout=45)
    for w in workers[1:]:
        w.stop()
    assert_money_invariants(bare.db)
    for c in customers:
        user = bare.db.users.find_one({"username": c.username})
        paid = sum(p["words"] for p in bare.db.payments.find({"username": c.username, "status": "completed"}))
        spent = -sum(e["delta"] for e in bare.db.ledger.find({"username": c.username, "kind": "spend",
                                                               "state": "applied"}))
        assert user["words_remaining"] == paid - spent >= 0


def _spend_some(customer, words):
    page = customer.get("/spend")
    if page.status_code == 200:
        customer.post_form("/spend", {"text": "word " * words})
