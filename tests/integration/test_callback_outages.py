"""No callback is lost and no stranger's post is kept unbounded, with real processes.

The stack here has its own SecantusDB on a directory, so the database can be killed
(SIGKILL) and restarted from disk on the same port while the web app keeps answering.
"""
import json
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import bson
import pytest
import requests
from bson import ObjectId

from app.db import utcnow
from app.payments import callback_signing
from tests.support.invariants import assert_money_invariants
from tests.support.stack import DiskDatabase, start_stack
from tests.support.web import registered, wait_until

pytestmark = pytest.mark.integration

FORGED_PER_ADDRESS = 10


@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    root = tmp_path_factory.mktemp("callback-outage")
    database = DiskDatabase(root / "db")
    database.start()
    spool_dir = root / "spool"
    # No STK Query for ten minutes: only the callback can settle these payments.
    crash_file = root / "crash-after-storing-a-callback"
    stack = start_stack(database.base, workers=1, RECONCILE_AFTER_SECONDS="600", CALLBACK_SPOOL_DIR=str(spool_dir),
                        CALLBACK_FORGED_RATE_LIMIT=f"{FORGED_PER_ADDRESS} per minute",
                        CALLBACK_REPROCESS_AFTER_SECONDS="3", TEST_CRASH_FILE=str(crash_file))
    stack.database, stack.spool_dir, stack.crash_file = database, spool_dir, crash_file
    yield stack
    stack.stop()
    database.stop()


def ensure_worker(stack):
    """A worker that died of the outage (the worker's own tests cover that) is started again."""
    if not any(p.alive() for p in stack.procs if p.name.startswith("worker")):
        stack.start_worker(f"worker-{uuid.uuid4().hex[:4]}")


@pytest.fixture(autouse=True)
def worker_running(outage):
    ensure_worker(outage)
    yield


def payment(stack, payment_id):
    return stack.db.payments.find_one({"_id": ObjectId(payment_id)})


def spooled(stack):
    return sorted(p.name for p in stack.spool_dir.glob("*.callback.json")) if stack.spool_dir.exists() else []


def sim_push(stack, phone):
    pushes = requests.get(f"{stack.sim_url}/_sim/pushes", params={"phone": phone}, timeout=5).json()
    assert len(pushes) == 1
    return pushes[0]


def test_success_callback_during_a_database_outage_is_spooled_and_credited_once_with_its_receipt(outage):
    customer = registered(outage.web_url)
    receipt = "SP" + uuid.uuid4().hex[:8].upper()
    # The phone approves at once; Daraja's callback comes 6 s later, into the outage.
    outage.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1,
                                "callback_delay": 6, "receipt": receipt})
    payment_id = customer.checkout()
    wait_until(lambda: payment(outage, payment_id)["status"] == "pending", timeout=20, what="push sent")
    # The push job is finished before the outage: only the callback is in flight.
    wait_until(lambda: outage.db.transactions.count_documents({"payment_id": payment_id, "status": "completed"}),
               timeout=20, what="the push job to finish")
    outage.database.kill()
    wait_until(lambda: spooled(outage), timeout=30, what="the callback to be spooled")
    push = sim_push(outage, customer.phone)
    assert push["request"]["CallBackURL"].endswith(f"/{payment_id}/{callback_signing.token(outage.env, payment_id)}")
    wait_until(lambda: sim_push(outage, customer.phone)["callbacks"], timeout=10, what="Daraja's answer")
    answer = sim_push(outage, customer.phone)["callbacks"][0]
    assert answer["status"] == 200 and json.loads(answer["response"]) == {"ResultCode": 0, "ResultDesc": "Accepted"}
    time.sleep(2)  # the database stays away a while longer; the spool waits
    assert len(spooled(outage)) == 1

    outage.database.start()
    ensure_worker(outage)
    wait_until(lambda: (payment(outage, payment_id) or {}).get("credited") is True, timeout=60, what="the replay")
    wait_until(lambda: not spooled(outage), timeout=10, what="the spool to empty")
    done = payment(outage, payment_id)
    assert done["status"] == "completed" and done["mpesa_receipt"] == receipt
    wait_until(lambda: outage.db.callbacks.find_one({"payment_id": payment_id, "effect": "credited"}),
               timeout=10, what="the callback's effect")
    rows = list(outage.db.callbacks.find({"payment_id": payment_id}))
    assert len(rows) == 1 and rows[0]["effect"] == "credited" and rows[0]["spooled"]
    user = outage.db.users.find_one({"username": customer.username})
    assert user["words_remaining"] == done["words"]
    assert outage.db.ledger.count_documents({"username": customer.username}) == 1
    assert_money_invariants(outage.db)


def test_web_process_killed_between_storing_and_settling_a_callback_is_settled_by_the_worker(outage):
    customer = registered(outage.web_url)
    receipt = "RP" + uuid.uuid4().hex[:8].upper()
    outage.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1, "receipt": receipt})
    outage.crash_file.touch()  # the web process that stores the next callback dies right after
    payment_id = customer.checkout()
    wait_until(lambda: not outage.crash_file.exists(), timeout=20, what="the web process to die")
    wait_until(lambda: sim_push(outage, customer.phone)["callbacks"], timeout=10, what="Daraja's attempt")
    assert sim_push(outage, customer.phone)["callbacks"][0].get("error")  # no answer: the process died
    wait_until(lambda: outage.db.callbacks.find_one({"payment_id": payment_id, "effect": "credited"}),
               timeout=30, what="the worker to settle the stored callback")
    rows = list(outage.db.callbacks.find({"payment_id": payment_id}))
    assert len(rows) == 1 and rows[0]["attempts"] >= 1  # taken by reprocessing, not by the web
    assert payment(outage, payment_id)["mpesa_receipt"] == receipt
    assert customer.status(payment_id)["status"] == "completed"  # gunicorn replaced its worker
    assert_money_invariants(outage.db)


def test_forged_flood_keeps_bounded_bytes_and_a_genuine_callback_still_settles(outage):
    customer = registered(outage.web_url)
    outage.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1, "callback": "none"})
    payment_id = customer.checkout()
    wait_until(lambda: payment(outage, payment_id)["status"] == "pending", timeout=20, what="push sent")
    before = outage.db.callbacks.count_documents({})
    junk = b'{"Body": "' + b"x" * 200_000 + b'"}'
    targets = [payment_id] * 20 + [str(ObjectId()) for _ in range(20)] + ["not-an-id"] * 10
    with requests.Session() as http:
        for target in targets:
            answer = http.post(f"{outage.web_url}/payments/callback/{target}/{'0' * 40}", data=junk,
                               headers={"Content-Type": "application/json"}, timeout=10)
            assert answer.status_code == 200 and answer.json()["ResultDesc"] == "Accepted"
    kept = list(outage.db.callbacks.find({"received_at": {"$gte": utcnow() - timedelta(minutes=5)},
                                          "effect": {"$regex": "^forged"}}))
    assert 0 < len(kept) <= FORGED_PER_ADDRESS
    assert sum(len(bson.encode(row)) for row in kept) <= FORGED_PER_ADDRESS * 1024
    assert outage.db.callbacks.count_documents({}) == before + len(kept)
    assert payment(outage, payment_id)["status"] == "pending"

    # Daraja's genuine callback, even from the flooding address, is kept whole and settles.
    push = sim_push(outage, customer.phone)
    genuine = json.dumps(push["callback_body"]).encode()
    requests.post(push["request"]["CallBackURL"], data=genuine, headers={"Content-Type": "application/json"}, timeout=10)
    wait_until(lambda: outage.db.callbacks.find_one({"payment_id": payment_id, "effect": "credited"}),
               timeout=20, what="the genuine callback")
    row = outage.db.callbacks.find_one({"payment_id": payment_id, "effect": "credited"})
    assert row["raw"] == genuine.decode() and "expires_at" not in row
    assert_money_invariants(outage.db)


def test_menu_payment_confirmed_during_a_database_outage_is_spooled_and_credited_once(outage):
    """A C2B confirmation (sent twice, as Daraja may) arrives while the database is down: Daraja
    gets its C2B answer, the spool keeps both deliveries, and the order is credited once."""
    registration = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "mpesa", "register-urls"],
                                  env=outage.env, capture_output=True, text=True, timeout=60)
    assert registration.returncode == 0, registration.stdout + registration.stderr
    customer = registered(outage.web_url)
    outage.sim("/_sim/script", {"phone": customer.phone, "result_code": 1037, "after": 0.1})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, {"timeout", "failed", "cancelled"})
    reference = payment(outage, payment_id)["reference"]
    outage.sim("/_sim/c2b/faults", {"confirmation": "twice"})
    before = set(spooled(outage))

    outage.database.kill()
    try:
        paid = requests.post(f"{outage.sim_url}/handset/api/paybill", timeout=15,
                             json={"phone": customer.phone, "business": "174379", "account": reference,
                                   "amount": 100, "pin": "1234"})
    finally:
        outage.sim("/_sim/c2b/faults", {})
    assert paid.status_code == 200, paid.text
    trans_id = paid.json()["trans_id"]

    def deliveries():
        listed = requests.get(f"{outage.sim_url}/_sim/c2b/payments", params={"phone": customer.phone},
                              timeout=5).json()
        return next(p for p in listed if p["TransID"] == trans_id)["confirmations"]
    wait_until(lambda: len(deliveries()) == 2, timeout=30, what="both confirmations to be answered")
    assert all(d["status"] == 200 and json.loads(d["response"]) == {"ResultCode": 0, "ResultDesc": "Success"}
               for d in deliveries())
    assert len(set(spooled(outage)) - before) == 2
    entry = json.loads((outage.spool_dir / sorted(set(spooled(outage)) - before)[0]).read_bytes())
    assert entry["kind"] == "c2b_confirmation"

    outage.database.start()
    ensure_worker(outage)
    wait_until(lambda: (outage.db.c2b_payments.find_one({"_id": trans_id}) or {}).get("state") == "credited",
               timeout=60, what="the replayed confirmation to credit the order")
    wait_until(lambda: not spooled(outage), timeout=20, what="the spool to empty")
    rows = list(outage.db.callbacks.find({"kind": "c2b_confirmation", "trans_id": trans_id}))
    assert sorted(r["effect"] for r in rows) == ["credited", "duplicate: already credited"]
    assert all(r["spooled"] for r in rows)
    done = payment(outage, payment_id)
    assert done["status"] == "completed" and done["mpesa_receipt"] == trans_id and done["credited"] is True
    assert outage.db.ledger.count_documents({"username": customer.username}) == 1
    assert outage.db.users.find_one({"username": customer.username})["words_remaining"] == done["words"]
    assert_money_invariants(outage.db)
