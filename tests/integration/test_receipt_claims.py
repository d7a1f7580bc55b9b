"""One M-Pesa payment, one credit: an STK payment whose callback was lost cannot be claimed again
by its receipt on another order, across real processes (simulator, web, worker)."""
import pytest
import requests
from bson import ObjectId

from tests.support.invariants import assert_money_invariants
from tests.support.web import registered, wait_until

pytestmark = pytest.mark.integration

FINISHED = ("credited", "review", "not_verified", "timeout", "failed", "already_credited")


@pytest.fixture(autouse=True)
def clean_faults(stack):
    stack.sim("/_sim/faults", {})
    stack.sim("/_sim/status/faults", {})
    yield
    stack.sim("/_sim/faults", {})
    stack.sim("/_sim/status/faults", {})


@pytest.fixture
def customer(stack):
    return registered(stack.web_url)


def payment_doc(stack, payment_id):
    return stack.db.payments.find_one({"_id": ObjectId(payment_id)})


def balance(stack, customer):
    return stack.db.users.find_one({"username": customer.username})["words_remaining"]


def paid_pushes(stack, phone):
    pushes = requests.get(f"{stack.sim_url}/_sim/pushes", params={"phone": phone}, timeout=5).json()
    return [p for p in pushes if p.get("receipt")]


def claim(customer, payment_id, receipt):
    reply = customer.post_form(f"/payments/{payment_id}/claim", {"receipt": receipt},
                               form_path=f"/payments/{payment_id}")
    assert reply.status_code == 302, reply.text[:300]


def claim_answered(stack, payment_id):
    def latest():
        return stack.db.receipt_claims.find_one({"payment_id": payment_id}, sort=[("created_at", -1)]) or {}
    wait_until(lambda: latest().get("state") in FINISHED, what="receipt claim answered")
    return latest()


@pytest.mark.xfail(strict=True, reason="issue 21: the claim credits one payment a second time")
def test_a_query_settled_payment_cannot_be_claimed_again_on_a_second_order(stack, customer):
    # The STK callback is lost: the worker's STK Query settles the order, and learns no receipt.
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1, "callback": "none"})
    first = customer.checkout()
    customer.wait_for(first, "completed", timeout=30)
    assert payment_doc(stack, first)["settled_via"] == "query"
    [push] = paid_pushes(stack, customer.phone)
    receipt = push["receipt"]
    # A second order, cancelled on the phone, then "I have paid" with the first payment's receipt.
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 1032, "after": 0.1})
    second = customer.checkout()
    customer.wait_for(second, "cancelled")
    claim(customer, second, receipt)
    answer = claim_answered(stack, second)
    # One KES 100 payment, one credit: the receipt now sits on the order it paid.
    assert balance(stack, customer) == 10_000, answer
    assert answer["state"] == "already_credited", answer
    assert payment_doc(stack, second)["status"] == "cancelled"
    first_doc = payment_doc(stack, first)
    assert first_doc["mpesa_receipt"] == receipt and "receipt_pending" not in first_doc
    page = customer.get(f"/payments/{second}").text
    assert first_doc["reference"] in page and "already added" in page
    assert stack.db.receipts.find_one({"_id": receipt})["payment_id"] == first
    # The customer tries once more: refused at once, nothing asked of M-Pesa.
    claim(customer, second, receipt)
    assert "already been used" in customer.get(f"/payments/{second}").text
    assert balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)
