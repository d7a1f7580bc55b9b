"""Refunds across real processes: operators in the console (gunicorn, two workers), the worker that
sends each Reversal, the simulator's M-Pesa answering, and the customer spending meanwhile.

What issue 21 found, each replayed here as an operator, a customer and M-Pesa would:
findings 3 and 4 (a reversal's words spent while its money went back), finding 5 (two operators
refunding one payment at the same instant), a failed reversal that could never be tried again,
and a reversal a crash left `requested` forever.
"""
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import requests
from bson import ObjectId

from tests.support.invariants import assert_money_invariants
from tests.support.web import Customer, registered, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_PASSWORD = "operator password " + uuid.uuid4().hex[:8]
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


@pytest.fixture(autouse=True)
def status_faults(stack):
    stack.sim("/_sim/status/faults", {})
    yield lambda **faults: stack.sim("/_sim/status/faults", faults)
    stack.sim("/_sim/status/faults", {})


def _operator_named(stack, username):
    made = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "create-admin", username],
                          env={**os.environ, **stack.env, "LIPIA_ADMIN_PASSWORD": OPERATOR_PASSWORD}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    operator = Customer(stack.web_url, username=username)
    operator.password = OPERATOR_PASSWORD
    assert operator.login().status_code == 302
    return operator


@pytest.fixture(scope="module")
def operators(stack):
    """Two operators, each logged in to the console in its own session."""
    return [_operator_named(stack, f"ops.{name}.{uuid.uuid4().hex[:6]}") for name in ("amani", "wanjiru")]


@pytest.fixture
def customer(stack):
    return registered(stack.web_url)


def paid_order(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "completed")
    return payment_id


def balance(stack, customer):
    return stack.db.users.find_one({"username": customer.username})["words_remaining"]


def console_post(operator, payment_id, action, data):
    """One press of a console button: the form's own CSRF token, the POST, and the page it lands on."""
    page = operator.get(f"/admin/payments/{payment_id}")
    page.raise_for_status()
    token = _CSRF.search(page.text).group(1)
    reply = operator.http.post(f"{operator.base}/admin/payments/{payment_id}/{action}",
                               data={"csrf_token": token, **data}, timeout=20, allow_redirects=True)
    return reply


def reverse(operator, payment_id, words_mode="whole", reason="customer asked"):
    return console_post(operator, payment_id, "reverse",
                        {"reverse-words_mode": words_mode, "reverse-reason": reason})


def refund_by_hand(operator, payment_id, words=10_000, amount_kes=100, reason="paid back in cash"):
    return console_post(operator, payment_id, "refund", {"refund-words": words, "refund-amount_kes": amount_kes,
                                                         "refund-reason": reason, "refund-confirmed": "yes"})


def reversals(stack, payment_id):
    return list(stack.db.reversals.find({"payment_id": payment_id}).sort("created_at", 1))


def reversal_in(stack, payment_id, states, attempt=1):
    def reached():
        found = [r for r in reversals(stack, payment_id) if r.get("attempt", 1) == attempt]
        return found and found[0]["state"] in states
    wait_until(reached, what=f"reversal attempt {attempt} {states}")
    return [r for r in reversals(stack, payment_id) if r.get("attempt", 1) == attempt][0]


def api_key(customer):
    customer.post_form("/profile/api-key", {}, form_path="/profile/api-key")
    page = customer.get("/profile/api-key")
    return re.search(r'id="new-api-key" readonly value="([^"]+)"', page.text).group(1)


def spend(stack, key, words, tag):
    return requests.post(f"{stack.web_url}/api/v1/usage", json={"words": words}, timeout=20,
                         headers={"Authorization": f"Bearer {key}", "Idempotency-Key": tag}).status_code


def check_ledger(stack):
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "check-ledger"], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)


# ---------------------------------------------------------------- findings 3 and 4: words held while money goes back

def test_a_reversal_holds_its_words_at_once_the_worker_sends_it_and_spends_meanwhile_are_refused(
        stack, customer, operators, status_faults):
    payment_id = paid_order(stack, customer)
    key = api_key(customer)
    status_faults(delay=3)  # M-Pesa takes its time to answer: the customer tries to spend meanwhile
    page = reverse(operators[0], payment_id)
    assert page.status_code == 200 and "queued" in page.text  # the web request never waits on Daraja
    assert balance(stack, customer) == 0  # held the moment it was requested
    assert spend(stack, key, 1, "during-reversal") == 402
    sent = reversal_in(stack, payment_id, ("sent",))
    assert sent["words_held"] == 10_000 and sent["amount"] == 100
    done = reversal_in(stack, payment_id, ("completed",))
    assert balance(stack, customer) == 0 and spend(stack, key, 1, "after-reversal") == 402
    hold = stack.db.ledger.find_one({"_id": done["hold_entry"]})
    assert hold["state"] == "applied" and hold["delta"] == -10_000
    assert stack.db.ledger.count_documents({"_id": f"release:{done['_id']}"}) == 0
    assert_money_invariants(stack.db)
    checked = check_ledger(stack)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_spends_racing_a_reversal_never_leave_the_customer_with_money_and_words(stack, customer, operators,
                                                                                status_faults):
    payment_id = paid_order(stack, customer)
    key = api_key(customer)
    status_faults(delay=1)
    results, start = [], threading.Barrier(21)

    def spender(i):
        start.wait()
        results.append(spend(stack, key, 700, f"race-{i:03d}"))

    threads = [threading.Thread(target=spender, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    start.wait()
    reverse(operators[0], payment_id, words_mode="unspent")
    for t in threads:
        t.join()
    done = reversal_in(stack, payment_id, ("completed", "failed"))
    spent = 700 * results.count(200)
    assert set(results) <= {200, 402} and spent <= 10_000
    if done["state"] == "completed":
        # What was held is what was unspent when it was held; nothing was left to spend after it.
        assert done["words_held"] == 10_000 - spent and balance(stack, customer) == 0
        assert done["amount"] == done["words_held"] * 100 // 10_000
    else:
        # A spend landed between the console's figures and the hold: refused, nothing held or sent.
        assert "spent while they were being held" in done["detail"] and balance(stack, customer) == 10_000 - spent
    assert_money_invariants(stack.db)


# ---------------------------------------------------------------- finding 5: two operators at the same instant

def test_two_operators_refunding_one_payment_at_the_same_instant_refund_it_once(stack, operators):
    for round_ in range(4):
        customer = registered(stack.web_url)
        payment_id = paid_order(stack, customer)
        start, pages = threading.Barrier(2), {}

        def press(name, action):
            start.wait()
            pages[name] = action()

        presses = [threading.Thread(target=press, args=("reverse", lambda: reverse(operators[0], payment_id))),
                   threading.Thread(target=press, args=("by hand", lambda: refund_by_hand(operators[1], payment_id)))]
        if round_ % 2:
            presses.reverse()
        for t in presses:
            t.start()
        for t in presses:
            t.join()
        refused = [name for name, page in pages.items() if "Nothing was changed" in page.text]
        assert len(refused) == 1, {name: page.status_code for name, page in pages.items()}
        claim = stack.db.payments.find_one({"_id": ObjectId(payment_id)})["refund"]
        booked = stack.db.ledger.count_documents({"payment_id": payment_id, "kind": "refund"})
        sent = [r for r in reversals(stack, payment_id) if r["state"] != "failed"]
        assert booked + len(sent) == 1 and claim["kind"] == ("ledger" if booked else "reversal")
        assert balance(stack, customer) == 0
    assert_money_invariants(stack.db)


# ---------------------------------------------------------------- a failed reversal is tried again

def test_a_refused_reversal_gives_the_words_back_once_and_can_be_sent_again(stack, customer, operators,
                                                                             status_faults):
    payment_id = paid_order(stack, customer)
    status_faults(reversal_code="21", reversal_desc="The initiator is not allowed to initiate this request")
    reverse(operators[0], payment_id)
    failed = reversal_in(stack, payment_id, ("failed",))
    assert "not allowed" in failed["detail"]
    wait_until(lambda: balance(stack, customer) == 10_000, what="the held words released")
    status_faults()
    page = reverse(operators[1], payment_id)
    assert "Nothing was changed" not in page.text
    again = reversal_in(stack, payment_id, ("completed",), attempt=2)
    assert again["_id"] == f"reversal:{payment_id}:2" and balance(stack, customer) == 0
    assert stack.db.payments.find_one({"_id": ObjectId(payment_id)})["refund"]["state"] == "completed"
    assert_money_invariants(stack.db)


def test_a_reversal_whose_answer_never_comes_keeps_its_words_held(stack, customer, operators, status_faults):
    payment_id = paid_order(stack, customer)
    status_faults(result="timeout")
    reverse(operators[0], payment_id)
    unknown = reversal_in(stack, payment_id, ("unknown",))
    assert balance(stack, customer) == 0 and unknown["words_held"] == 10_000  # M-Pesa may yet have sent it
    page = reverse(operators[1], payment_id)
    assert "Nothing was changed" in page.text  # not sent twice while the first may have gone through
    assert_money_invariants(stack.db)


# ---------------------------------------------------------------- a crash between the request's writes

def test_a_reversal_left_requested_by_a_crash_is_sent_by_the_worker(mongo_base):
    """The console recorded the reversal and held its words, then died before queueing its send
    (the old code left it `requested` forever, blocking every refund of the payment)."""
    from app.admin.reversals import reverse_payment
    from app.config import load_config
    from app.payments import refunds
    from tests.support.stack import start_stack
    stack = start_stack(mongo_base, REVERSAL_RESEND_AFTER_SECONDS="2")
    try:
        customer = registered(stack.web_url)
        payment_id = paid_order(stack, customer)
        real_enqueue = refunds.enqueue
        refunds.enqueue = lambda *a, **k: (_ for _ in ()).throw(SystemExit("the console died here"))
        try:
            with pytest.raises(SystemExit):
                reverse_payment(stack.db, load_config(stack.env), payment_id, actor="ops",
                                        reason="customer asked", words_mode="whole")
        finally:
            refunds.enqueue = real_enqueue
        assert reversals(stack, payment_id)[0]["state"] == "requested" and balance(stack, customer) == 0
        done = reversal_in(stack, payment_id, ("completed",))
        assert done["_id"] == f"reversal:{payment_id}:1" and balance(stack, customer) == 0
        assert_money_invariants(stack.db)
    finally:
        stack.stop()
