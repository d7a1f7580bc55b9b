"""Every fault the money must survive, across real processes. After each, every invariant holds."""
import json
import threading
import time
from datetime import timedelta

import pytest
import requests

from app.db import utcnow
from tests.support.invariants import assert_money_invariants
from tests.support.web import registered, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def clean_faults(stack):
    stack.sim("/_sim/faults", {})
    yield
    stack.sim("/_sim/faults", {})


@pytest.fixture
def customer(stack):
    return registered(stack.web_url)


def pushes(stack, phone):
    response = requests.get(f"{stack.sim_url}/_sim/pushes", params={"phone": phone}, timeout=5)
    response.raise_for_status()
    return response.json()


def payment_doc(stack, payment_id):
    from bson import ObjectId
    return stack.db.payments.find_one({"_id": ObjectId(payment_id)})


def balance(stack, customer):
    return stack.db.users.find_one({"username": customer.username})["words_remaining"]



def callbacks_settled(stack, payment_id, count):
    """Every callback received for the payment has been processed (has an effect)."""
    rows = list(stack.db.callbacks.find({"payment_id": payment_id}))
    return len(rows) >= count and all(r["effect"] != "received" for r in rows)


RESULT_CODES = [
    (1, "failed", "insufficient_funds"), (2, "failed", "limit"), (17, "failed", "try_later"),
    (26, "failed", "try_later"), (1001, "failed", "busy"), (1019, "timeout", "expired"),
    (1025, "failed", "push_error"), (1032, "cancelled", "cancelled"), (1037, "timeout", "unreachable"),
    (2001, "failed", "wrong_pin"), (2028, "failed", "merchant_misconfigured"),
    ("SFC_IC0003", "failed", "merchant_misconfigured"), (8006, "failed", "pin_locked"), (4242, "failed", "unknown"),
]


@pytest.mark.parametrize("code,status,reason", RESULT_CODES, ids=[str(c[0]) for c in RESULT_CODES])
def test_each_result_code_ends_in_its_status_and_credits_nothing(stack, customer, code, status, reason):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": code, "after": 0.1})
    payment_id = customer.checkout()
    state = customer.wait_for(payment_id, status)
    assert state["final"] and state["can_retry"] and state["message"]
    assert payment_doc(stack, payment_id)["failure_reason"] == reason
    assert balance(stack, customer) == 0
    assert_money_invariants(stack.db)


@pytest.mark.parametrize("mode", ["twice", "concurrent"])
def test_duplicate_and_concurrent_callbacks_credit_once(stack, customer, mode):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1, "callback": mode})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "completed")
    wait_until(lambda: callbacks_settled(stack, payment_id, 2), what="both callbacks")
    effects = sorted(r["effect"] for r in stack.db.callbacks.find({"payment_id": payment_id}))
    assert effects == ["credited", "ignored: already completed"]
    assert balance(stack, customer) == 10_000
    assert stack.db.ledger.count_documents({"payment_id": payment_id}) == 1
    assert_money_invariants(stack.db)


def test_callback_before_push_response_is_stored_still_applies(stack, customer):
    # Daraja's reply to the push is held back; the callback overtakes it.
    stack.sim("/_sim/faults", {"push_delay": 1.5})
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.05})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "completed")
    wait_until(lambda: payment_doc(stack, payment_id).get("checkout_request_id") is not None
               and "push_in_flight" not in payment_doc(stack, payment_id), what="push response stored")
    doc = payment_doc(stack, payment_id)
    assert doc["status"] == "completed" and doc["credited"]
    assert [h["status"] for h in doc["history"]] == ["queued", "completed"]
    assert len(pushes(stack, customer.phone)) == 1
    assert_money_invariants(stack.db)


def test_missing_callback_is_resolved_by_the_reconciler(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1, "callback": "none"})
    payment_id = customer.checkout()
    state = customer.wait_for(payment_id, "completed", timeout=30)
    doc = payment_doc(stack, payment_id)
    assert doc["settled_via"] == "query" and doc["credited"] and state["words_remaining"] == 10_000
    assert stack.db.callbacks.count_documents({"payment_id": payment_id}) == 0
    assert_money_invariants(stack.db)


def test_query_answering_being_processed_leaves_payment_waiting(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 1032, "after": 0.1, "callback": "none"})
    stack.sim("/_sim/faults", {"query_processing_for": 7})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "pending")
    time.sleep(6)  # the reconciler asks (after 4 s) and hears "being processed"
    doc = payment_doc(stack, payment_id)
    assert doc["status"] == "pending"
    assert any(e.get("http_status") == 500 for e in doc["exchanges"])
    customer.wait_for(payment_id, "cancelled", timeout=20)
    assert_money_invariants(stack.db)


def _post_callback(stack, payment_id, secret, body):
    return requests.post(f"{stack.web_url}/payments/callback/{payment_id}/{secret}",
                         data=body if isinstance(body, (bytes, str)) else json.dumps(body),
                         headers={"Content-Type": "application/json"}, timeout=5)


def _success_body(checkout_id, amount=100, receipt="QWE1RTY2UI", phone=254700000000):
    return {"Body": {"stkCallback": {
        "MerchantRequestID": "1-2-3", "CheckoutRequestID": checkout_id, "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": amount},
                                      {"Name": "MpesaReceiptNumber", "Value": receipt},
                                      {"Name": "TransactionDate", "Value": 20261122143102},
                                      {"Name": "PhoneNumber", "Value": phone}]}}}}


def test_forged_and_malformed_callbacks_change_nothing_but_are_kept(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 1032})  # waits on the handset
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "pending")
    doc = payment_doc(stack, payment_id)
    forged = _success_body(doc["checkout_request_id"], phone=int(customer.phone))
    answers = [
        _post_callback(stack, payment_id, "not-the-secret", forged),
        _post_callback(stack, "0" * 24, doc["callback_secret"], forged),
        _post_callback(stack, "not-an-id", "x", forged),
        _post_callback(stack, payment_id, doc["callback_secret"], b"{not json"),
        _post_callback(stack, payment_id, doc["callback_secret"], {"Body": {"stkCallback": {"ResultCode": 0}}}),
        _post_callback(stack, payment_id, doc["callback_secret"], _success_body("ws_CO_other", phone=int(customer.phone))),
    ]
    assert all(a.status_code == 200 and a.json() == {"ResultCode": 0, "ResultDesc": "Accepted"} for a in answers)
    effects = [r["effect"] for r in stack.db.callbacks.find({"payment_id": {"$in": [payment_id, "0" * 24, "not-an-id"]}})]
    assert sum(e.startswith("forged") for e in effects) == 3
    assert sum(e.startswith("malformed") for e in effects) == 2
    assert sum(e.startswith("ignored: CheckoutRequestID") for e in effects) == 1
    assert payment_doc(stack, payment_id)["status"] == "pending" and balance(stack, customer) == 0
    assert_money_invariants(stack.db)


def test_amount_mismatch_goes_to_review_not_to_the_balance(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1, "amount": 1})
    payment_id = customer.checkout()
    state = customer.wait_for(payment_id, "review")
    doc = payment_doc(stack, payment_id)
    assert "KES 1" in doc["review_reason"] and doc.get("mpesa_receipt") is None
    assert balance(stack, customer) == 0 and state["final"]
    assert_money_invariants(stack.db)


def test_phone_mismatch_goes_to_review(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1,
                               "phone_in_callback": "254711000111"})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "review")
    assert balance(stack, customer) == 0
    assert_money_invariants(stack.db)


def test_push_timing_out_after_being_sent_is_never_pushed_again(stack, customer):
    # The reply comes after the client's 3 s read timeout, but the prompt was created.
    stack.sim("/_sim/faults", {"push_delay": 4})
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 5})
    payment_id = customer.checkout()
    wait_until(lambda: payment_doc(stack, payment_id).get("push_outcome_unknown"), what="outcome unknown")
    customer.wait_for(payment_id, "completed", timeout=30)
    assert len(pushes(stack, customer.phone)) == 1
    job = stack.db.transactions.find_one({"payment_id": payment_id})
    assert job["status"] == "completed" and job["attempts"] == 1
    assert_money_invariants(stack.db)


@pytest.mark.parametrize("fault", [
    {"push_status": 429, "push_times": 2},
    {"push_status": 500, "push_times": 2,
     "push_body": json.dumps({"requestId": "1", "errorCode": "500.003.02", "errorMessage": "System is busy"})},
], ids=["429", "500-busy"])
def test_daraja_refusals_are_retried_with_backoff_then_pay(stack, customer, fault):
    stack.sim("/_sim/faults", fault)
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "completed", timeout=30)
    job = stack.db.transactions.find_one({"payment_id": payment_id})
    assert job["attempts"] == 3 and job["status"] == "completed"
    assert len(pushes(stack, customer.phone)) == 1  # only the accepted one reached a phone
    assert_money_invariants(stack.db)


def test_unreadable_500_leaves_outcome_unknown_and_no_second_push(stack, customer):
    stack.sim("/_sim/faults", {"push_status": 500, "push_body": "<html>Bad gateway</html>"})
    payment_id = customer.checkout()
    wait_until(lambda: payment_doc(stack, payment_id).get("push_outcome_unknown"), what="outcome unknown")
    job = stack.db.transactions.find_one({"payment_id": payment_id})
    wait_until(lambda: stack.db.transactions.find_one({"payment_id": payment_id})["status"] == "completed")
    assert job["attempts"] == 1
    doc = payment_doc(stack, payment_id)
    assert doc["status"] == "pending" and "checkout_request_id" not in doc
    # Without a CheckoutRequestID nothing can be queried: it expires, and a late success still credits.
    stack.db.payments.update_one({"_id": doc["_id"]}, {"$set": {"created_at": utcnow() - timedelta(hours=1)}})
    customer.wait_for(payment_id, "expired", timeout=15)
    late = _success_body("ws_CO_late_success", receipt="LATE123456", phone=int(customer.phone))
    assert _post_callback(stack, payment_id, doc["callback_secret"], late).status_code == 200
    customer.wait_for(payment_id, "completed")
    assert balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)


def test_dead_lettered_push_fails_the_payment(stack, customer):
    stack.sim("/_sim/faults", {"push_status": 429, "push_times": 10})
    payment_id = customer.checkout()
    state = customer.wait_for(payment_id, "failed", timeout=30)
    job = stack.db.transactions.find_one({"payment_id": payment_id})
    assert job["status"] == "dead" and job["attempts"] == 5 and job["error"]
    assert "No money was taken" in state["message"]
    assert pushes(stack, customer.phone) == []
    assert_money_invariants(stack.db)


def test_query_never_downgrades_a_success(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "completed")
    from app.payments import settlement
    from app.payments.outcomes import from_result
    result = settlement.settle(stack.db, payment_id, from_result("1032", "Request cancelled by user", via="query"))
    assert result.effect == "flagged for review"
    doc = payment_doc(stack, payment_id)
    assert doc["status"] == "completed" and doc["needs_review"] and balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)


def test_check_again_button_asks_daraja_now(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 1032, "after": 0.1, "callback": "none"})
    stack.db.payments.create_index("username")  # harmless; keeps the shared db realistic
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "pending")
    time.sleep(0.5)
    response = customer.post_form(f"/payments/{payment_id}/check", {}, form_path=f"/payments/{payment_id}")
    assert response.status_code == 302
    state = customer.wait_for(payment_id, "cancelled", timeout=4)  # well before the 4 s reconcile age
    assert state["final"]


def test_expired_payment_credited_by_late_success(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 30})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "pending")
    stack.db.payments.update_one({"_id": payment_doc(stack, payment_id)["_id"]},
                                 {"$set": {"created_at": utcnow() - timedelta(hours=1)}})
    customer.wait_for(payment_id, "expired", timeout=15)
    doc = payment_doc(stack, payment_id)
    late = _success_body(doc["checkout_request_id"], receipt="LATE654321", phone=int(customer.phone))
    _post_callback(stack, payment_id, doc["callback_secret"], late)
    customer.wait_for(payment_id, "completed")
    assert [h["status"] for h in payment_doc(stack, payment_id)["history"]] == ["queued", "pending", "expired", "completed"]
    assert balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)


def test_receipt_reused_on_another_payment_is_not_credited_twice(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1, "receipt": "SAME000001"})
    first = customer.checkout()
    customer.wait_for(first, "completed")
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1, "receipt": "SAME000001"})
    second = customer.checkout()
    customer.wait_for(second, "review")
    assert "already used" in payment_doc(stack, second)["review_reason"]
    assert balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)


def test_fifty_concurrent_spends_race_a_credit(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1})
    customer.wait_for(customer.checkout(), "completed")
    api_key = _api_key(customer)
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.3})
    second = customer.checkout()  # its credit lands while the spends run
    results, start = [], threading.Barrier(50)

    def spend(i):
        start.wait()
        r = requests.post(f"{stack.web_url}/api/v1/usage", json={"words": 300},
                          headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": f"race-{i:04d}"},
                          timeout=30)
        results.append(r.status_code)

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    customer.wait_for(second, "completed")
    ok = results.count(200)
    assert set(results) <= {200, 402} and ok >= 33  # 10,000 words cover 33 spends before the credit
    assert balance(stack, customer) == 20_000 - 300 * ok >= 0
    assert_money_invariants(stack.db)


def _api_key(customer):
    import re
    # Post, redirect, show once: the key is on the page the POST redirects to.
    customer.post_form("/profile/api-key", {}, form_path="/profile/api-key")
    page = customer.get("/profile/api-key")
    return re.search(r'id="new-api-key" readonly value="([^"]+)"', page.text).group(1)
