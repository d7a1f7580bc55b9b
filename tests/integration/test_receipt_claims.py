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


def test_a_claim_before_the_query_settles_the_push_goes_to_review_and_the_push_is_credited_once(stack, customer):
    """The other order: the receipt is claimed (on another account of the same payer) while STK
    Query still hears "being processed"; the query then settles the push it paid."""
    stack.sim("/_sim/faults", {"query_processing_for": 12})
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1, "callback": "none"})
    first = customer.checkout()
    wait_until(lambda: paid_pushes(stack, customer.phone), what="push paid on the phone")
    receipt = paid_pushes(stack, customer.phone)[0]["receipt"]
    same_payer = registered_with_phone(stack, customer.phone)
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 1032, "after": 0.1})
    second = same_payer.checkout()
    same_payer.wait_for(second, "cancelled")
    assert payment_doc(stack, first)["status"] == "pending"
    claim(same_payer, second, receipt)
    answer = claim_answered(stack, second)
    assert balance(stack, same_payer) == 0, answer
    assert answer["state"] == "review" and payment_doc(stack, second)["status"] == "review"
    assert "checking it by hand" in same_payer.get(f"/payments/{second}").text
    customer.wait_for(first, "completed", timeout=40)
    assert balance(stack, customer) == 10_000 and balance(stack, same_payer) == 0
    assert_money_invariants(stack.db)


def registered_with_phone(stack, phone):
    from tests.support.web import Customer
    other = Customer(stack.web_url, phone=phone)
    assert other.register().status_code == 302
    return other


def test_a_menu_payment_sent_back_cannot_be_claimed_on_a_new_order(stack, customer):
    import subprocess
    import sys

    from app.admin import reversals
    from app.config import load_config
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "mpesa", "register-urls"],
                          env=stack.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    stack.sim("/_sim/c2b/faults", {})
    paid = requests.post(f"{stack.sim_url}/handset/api/paybill", timeout=15,
                         json={"phone": customer.phone, "business": "174379", "account": "NOT-AN-ORDER",
                               "amount": 100, "pin": "1234"})
    trans_id = paid.json()["trans_id"]
    wait_until(lambda: (stack.db.c2b_payments.find_one({"_id": trans_id}) or {}).get("state") == "review",
               what="unmatched menu payment under review")
    reversals.reverse_menu_payment(stack.db, load_config(stack.env), trans_id, actor="ops", reason="unknown payer")
    wait_until(lambda: stack.db.c2b_payments.find_one({"_id": trans_id})["state"] == "refunded", what="sent back")
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 1032, "after": 0.1})
    order = customer.checkout()
    customer.wait_for(order, "cancelled")
    claim(customer, order, trans_id)
    assert "sent back" in customer.get(f"/payments/{order}").text
    assert stack.db.receipt_claims.count_documents({"payment_id": order}) == 0
    assert balance(stack, customer) == 0
    assert_money_invariants(stack.db)
