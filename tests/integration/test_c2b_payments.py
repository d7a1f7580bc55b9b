"""Paying from the M-Pesa menu (paybill / till) across real processes; money invariants after each fault."""
import subprocess
import sys
import threading
import uuid

import pytest
import requests
from bson import ObjectId

from tests.support.invariants import assert_money_invariants
from tests.support.web import registered, wait_until

pytestmark = pytest.mark.integration

SHORTCODE = "174379"
PIN = "1234"


@pytest.fixture(scope="module")
def registered_urls(stack):
    """`flask mpesa register-urls` against the simulator, once for the module."""
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "mpesa", "register-urls"],
                          env=stack.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(autouse=True)
def clean_faults(stack, registered_urls):
    stack.sim("/_sim/c2b/faults", {})
    stack.sim("/_sim/faults", {})
    yield
    stack.sim("/_sim/c2b/faults", {})


@pytest.fixture
def customer(stack):
    return registered(stack.web_url)


def payment_doc(stack, payment_id):
    return stack.db.payments.find_one({"_id": ObjectId(payment_id)})


def balance(stack, customer):
    return stack.db.users.find_one({"username": customer.username})["words_remaining"]


def failed_order(stack, customer, code=1037):
    """An order whose STK prompt failed: the customer then pays from the menu."""
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": code, "after": 0.1})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, {"timeout", "failed", "cancelled"})
    return payment_id, payment_doc(stack, payment_id)["reference"]


def paybill(stack, phone, account, amount=100, pin=PIN, business=SHORTCODE):
    return requests.post(f"{stack.sim_url}/handset/api/paybill", timeout=15,
                         json={"phone": phone, "business": business, "account": account, "amount": amount,
                               "pin": pin})


def buygoods(stack, phone, amount=100, till=SHORTCODE):
    return requests.post(f"{stack.sim_url}/handset/api/buygoods", timeout=15,
                         json={"phone": phone, "business": till, "amount": amount, "pin": PIN})


def c2b_state(stack, trans_id, states=("credited", "review")):
    wait_until(lambda: (stack.db.c2b_payments.find_one({"_id": trans_id}) or {}).get("state") in states,
               what=f"C2B payment {trans_id} settled")
    return stack.db.c2b_payments.find_one({"_id": trans_id})


def inbox(stack, trans_id, count):
    def ready():
        rows = list(stack.db.callbacks.find({"kind": "c2b_confirmation", "trans_id": trans_id}))
        return len(rows) >= count and all(r["effect"] != "received" for r in rows)
    wait_until(ready, what=f"{count} confirmations of {trans_id}")
    return sorted(r["effect"] for r in stack.db.callbacks.find({"kind": "c2b_confirmation", "trans_id": trans_id}))


def test_register_urls_reports_darajas_answer(registered_urls, stack):
    assert "Daraja answered: 0 Success" in registered_urls
    assert "dev-c2b-url-secret" not in registered_urls  # the secret is never printed
    registrations = requests.get(f"{stack.sim_url}/_sim/c2b/registrations", timeout=5).json()
    assert registrations[SHORTCODE]["confirmation_url"].startswith(stack.web_url + "/pay/c2b/confirm/")


@pytest.mark.parametrize("typed", ["{ref}", "{low}", "{spaced}", "{tail}"])
def test_paybill_from_the_menu_credits_the_failed_order_once(stack, customer, typed):
    payment_id, ref = failed_order(stack, customer)
    account = typed.format(ref=ref, low=ref.lower(), spaced=ref[:5].lower() + " " + ref[5:], tail=ref[-7:].lower())
    answer = paybill(stack, customer.phone, account)
    assert answer.status_code == 200, answer.text
    trans_id = answer.json()["trans_id"]
    assert c2b_state(stack, trans_id)["state"] == "credited"
    state = customer.wait_for(payment_id, "completed")
    assert state["receipt"] == trans_id
    assert balance(stack, customer) == 10_000
    raw = stack.db.callbacks.find_one({"kind": "c2b_confirmation", "trans_id": trans_id})["raw"]
    assert '"TransAmount": "100.00"' in raw or '"TransAmount":"100.00"' in raw
    assert customer.phone not in raw  # v2 masks the payer
    assert_money_invariants(stack.db)


@pytest.mark.parametrize("mode", ["twice", "concurrent"])
def test_duplicate_and_concurrent_confirmations_credit_once(stack, customer, mode):
    payment_id, ref = failed_order(stack, customer)
    stack.sim("/_sim/c2b/faults", {"confirmation": mode})
    trans_id = paybill(stack, customer.phone, ref).json()["trans_id"]
    effects = inbox(stack, trans_id, 2)
    assert effects.count("credited") == 1, (effects, stack.db.c2b_payments.find_one({"_id": trans_id}))
    customer.wait_for(payment_id, "completed")
    assert balance(stack, customer) == 10_000
    assert stack.db.ledger.count_documents({"payment_id": payment_id}) == 1
    assert_money_invariants(stack.db)


def test_late_redelivery_after_credit_changes_nothing(stack, customer):
    payment_id, ref = failed_order(stack, customer)
    trans_id = paybill(stack, customer.phone, ref).json()["trans_id"]
    c2b_state(stack, trans_id)
    stack.sim(f"/_sim/c2b/redeliver/{trans_id}")
    assert inbox(stack, trans_id, 2) == ["credited", "duplicate: already credited"]
    assert balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)


def test_paybill_for_an_order_already_paid_by_stk_goes_to_review(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.1})
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "completed")
    ref = payment_doc(stack, payment_id)["reference"]
    trans_id = paybill(stack, customer.phone, ref).json()["trans_id"]
    doc = c2b_state(stack, trans_id)
    assert doc["state"] == "review" and "already completed" in doc["review_reason"]
    assert balance(stack, customer) == 10_000  # never a double credit; the money is in review, not lost
    assert_money_invariants(stack.db)


def test_stk_success_and_paybill_racing_for_one_order_credit_once(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.4})
    payment_id = customer.checkout()
    wait_until(lambda: payment_doc(stack, payment_id)["status"] == "pending", what="prompt sent")
    ref = payment_doc(stack, payment_id)["reference"]
    trans_id = paybill(stack, customer.phone, ref).json()["trans_id"]
    customer.wait_for(payment_id, "completed")
    wait_until(lambda: stack.db.callbacks.count_documents({"payment_id": payment_id, "effect": {"$ne": "received"}})
               >= 1, what="STK callback settled")
    doc = c2b_state(stack, trans_id)
    payment = payment_doc(stack, payment_id)
    # Whichever came first credited the order; the other is held for an operator, never lost.
    assert (doc["state"] == "credited") == (payment["mpesa_receipt"] == trans_id)
    if doc["state"] == "credited":
        stk_receipt = next(p["receipt"] for p in requests.get(f"{stack.sim_url}/_sim/pushes",
                                                               params={"phone": customer.phone}, timeout=5).json())
        assert payment["needs_review"] and payment["extra_receipts"] == [stk_receipt]
    else:
        assert doc["state"] == "review"
    assert balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)


def test_wrong_amount_goes_to_review_and_the_order_stays_payable(stack, customer):
    payment_id, ref = failed_order(stack, customer)
    trans_id = paybill(stack, customer.phone, ref, amount=60).json()["trans_id"]
    doc = c2b_state(stack, trans_id)
    assert doc["state"] == "review" and doc["named_payment_id"] == payment_id
    assert payment_doc(stack, payment_id)["status"] == "timeout"
    # The right amount afterwards pays the order.
    good = paybill(stack, customer.phone, ref).json()["trans_id"]
    assert c2b_state(stack, good)["state"] == "credited"
    customer.wait_for(payment_id, "completed")
    assert balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)


def assign(stack, trans_id, payment_id):
    from app.admin import repairs
    from app.config import load_config
    return repairs.assign_menu_payment(stack.db, load_config(stack.env), trans_id, payment_id, actor="ops",
                                       reason="the payer called")


def test_a_stranger_paying_kes_1_to_an_account_number_cannot_sink_the_order(stack, customer):
    """Finding 6: KES 1 to a victim's account number held the victim's order in review, and the
    victim's own STK payment was then ignored ("already review")."""
    from app.admin.repairs import RepairError
    attacker = registered(stack.web_url)
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 3})
    payment_id = customer.checkout()
    wait_until(lambda: payment_doc(stack, payment_id)["status"] == "pending", what="prompt on the victim's phone")
    ref = payment_doc(stack, payment_id)["reference"]

    trans_id = paybill(stack, attacker.phone, ref, amount=1).json()["trans_id"]
    doc = c2b_state(stack, trans_id)
    assert payment_doc(stack, payment_id)["status"] == "pending"  # untouched, still waiting on the phone
    assert doc["state"] == "review" and doc["named_payment_id"] == payment_id and "payment_id" not in doc
    with pytest.raises(RepairError, match="exactly KES 1"):
        assign(stack, trans_id, payment_id)  # an operator cannot make KES 1 pay for it either

    state = customer.wait_for(payment_id, "completed")  # the victim's PIN: credited as usual
    assert state["receipt"] != trans_id and balance(stack, customer) == 10_000
    assert stack.db.c2b_payments.find_one({"_id": trans_id})["state"] == "review"  # the KES 1 waits, never lost
    with pytest.raises(RepairError):
        assign(stack, trans_id, payment_id)
    attackers_order, _ = failed_order(stack, attacker)
    with pytest.raises(RepairError, match="exactly KES 1"):
        assign(stack, trans_id, attackers_order)  # nor buy the attacker a KES 100 plan
    assert balance(stack, customer) == 10_000 and balance(stack, attacker) == 0
    assert_money_invariants(stack.db)


def test_orders_from_both_web_workers_get_distinct_references(stack):
    """The stack's gunicorn runs two workers forked from one master (WEB_CONCURRENCY=2): the old
    references, the ObjectId's counter, came out alike in both (on a fresh stack, 4 pairs in 12)."""
    customers, ids = [], []
    for _ in range(12):  # one after another, as new customers come
        customers.append(registered(stack.web_url))
        stack.sim("/_sim/script", {"phone": customers[-1].phone, "result_code": 1032, "after": 0.1})
        ids.append(customers[-1].checkout())
    orders = [payment_doc(stack, payment_id) for payment_id in ids]
    references = [o["reference"] for o in orders]
    assert len(set(references)) == len(references), references
    assert all(len(r) <= 12 and r == "LIPIA" + o.get("reference_code", "?") for r, o in zip(references, orders))
    assert stack.db.payments.index_information()["reference_code_unique"]["unique"]  # and the database says so
    for customer, payment_id in zip(customers, ids):
        customer.wait_for(payment_id, {"cancelled", "failed"})
    assert_money_invariants(stack.db)


def test_unknown_account_number_is_kept_for_review(stack, customer):
    failed_order(stack, customer)
    trans_id = paybill(stack, customer.phone, "NOT-AN-ORDER").json()["trans_id"]
    doc = c2b_state(stack, trans_id)
    assert doc["state"] == "review" and "unknown account" in doc["review_reason"]
    assert balance(stack, customer) == 0
    assert_money_invariants(stack.db)


def test_validation_rejects_unknown_accounts_and_wrong_amounts(stack, customer):
    payment_id, ref = failed_order(stack, customer)
    stack.sim("/_sim/c2b/faults", {"validation": True})
    unknown = paybill(stack, customer.phone, "NOT-AN-ORDER")
    assert unknown.status_code == 409 and unknown.json()["validation"]["ResultCode"] == "C2B00012"
    wrong = paybill(stack, customer.phone, ref, amount=99)
    assert wrong.status_code == 409 and wrong.json()["validation"]["ResultCode"] == "C2B00013"
    good = paybill(stack, customer.phone, ref)
    assert good.status_code == 200
    customer.wait_for(payment_id, "completed")
    assert balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)


def _same_mask(phone):
    """Another payer whose v2 mask ("2547 ***** 126") is this phone's: same first four, same last three."""
    return phone[:4] + ("2" if phone[4] != "2" else "3") + phone[5:9] + phone[-3:]


def test_a_till_payer_behind_a_v2_mask_is_never_matched(stack, customer):
    """The mask of a stranger with the same last three digits paying the same amount used to
    credit the customer's lone open order."""
    payment_id, _ref = failed_order(stack, customer)
    stranger = _same_mask(customer.phone)
    trans_id = buygoods(stack, stranger).json()["trans_id"]
    doc = c2b_state(stack, trans_id)
    raw = stack.db.callbacks.find_one({"kind": "c2b_confirmation", "trans_id": trans_id})["raw"]
    assert f"{customer.phone[:4]} ***** {customer.phone[-3:]}" in raw  # what v2 really sends
    assert doc["state"] == "review" and "masked phone" in doc["review_reason"] and "payment_id" not in doc
    assert payment_doc(stack, payment_id)["status"] == "timeout" and balance(stack, customer) == 0
    assert_money_invariants(stack.db)


def test_a_till_payer_named_exactly_by_a_v1_hash_is_matched(stack, customer):
    """v1 confirmations carry the SHA-256 of the payer's number: one payer, so it can be matched."""
    from simulator.c2b_state import BUY_GOODS, confirmation_body
    payment_id, _ref = failed_order(stack, customer)
    registrations = requests.get(f"{stack.sim_url}/_sim/c2b/registrations", timeout=5).json()
    body = confirmation_body(trans_id="TILLV1" + uuid.uuid4().hex[:8].upper(), kind=BUY_GOODS, amount=100,
                             shortcode=SHORTCODE, account="", phone=customer.phone, version="v1")
    reply = requests.post(registrations[SHORTCODE]["confirmation_url"], json=body, timeout=10)
    assert reply.json() == {"ResultCode": 0, "ResultDesc": "Success"}
    assert c2b_state(stack, body["TransID"])["state"] == "credited"
    customer.wait_for(payment_id, "completed")
    assert balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)


def test_till_payment_from_an_unknown_phone_goes_to_review(stack, customer):
    failed_order(stack, customer)
    trans_id = buygoods(stack, "254799000111", amount=100).json()["trans_id"]
    assert c2b_state(stack, trans_id)["state"] == "review"
    assert balance(stack, customer) == 0
    assert_money_invariants(stack.db)


def test_lost_confirmation_credits_nothing_and_a_late_one_still_does(stack, customer):
    payment_id, ref = failed_order(stack, customer)
    stack.sim("/_sim/c2b/faults", {"confirmation": "none"})
    trans_id = paybill(stack, customer.phone, ref).json()["trans_id"]
    assert stack.db.c2b_payments.count_documents({"_id": trans_id}) == 0
    assert_money_invariants(stack.db)
    stack.sim(f"/_sim/c2b/redeliver/{trans_id}")  # the confirmation turns up late
    assert c2b_state(stack, trans_id)["state"] == "credited"
    customer.wait_for(payment_id, "completed")
    assert balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)


def test_forged_confirmations_change_nothing(stack, customer):
    payment_id, ref = failed_order(stack, customer)
    forged = {"TransactionType": "Pay Bill", "TransID": "FAKE123456", "TransTime": "20261126120000",
              "TransAmount": "100.00", "BusinessShortCode": SHORTCODE, "BillRefNumber": ref, "MSISDN": "2547 ***** 000"}

    def send(secret):
        return requests.post(f"{stack.web_url}/pay/c2b/confirm/{secret}", json=forged, timeout=10)

    replies = []
    threads = [threading.Thread(target=lambda s=s: replies.append(send(s))) for s in ("wrong", "x" * 200, "")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in replies if r.status_code == 200]  # Daraja still gets its answer
    assert all(r.json() == {"ResultCode": 0, "ResultDesc": "Success"} for r in replies if r.status_code == 200)
    assert stack.db.c2b_payments.count_documents({"_id": "FAKE123456"}) == 0
    assert payment_doc(stack, payment_id)["status"] != "completed" and balance(stack, customer) == 0
    assert_money_invariants(stack.db)


# ---------------------------------------------------------------- "I have paid" receipt claims

@pytest.fixture
def status_faults(stack):
    stack.sim("/_sim/status/faults", {})
    yield lambda **faults: stack.sim("/_sim/status/faults", faults)
    stack.sim("/_sim/status/faults", {})


def claim(customer, payment_id, receipt):
    reply = customer.post_form(f"/payments/{payment_id}/claim", {"receipt": receipt},
                               form_path=f"/payments/{payment_id}")
    assert reply.status_code == 302, reply.text[:300]


def claim_state(stack, payment_id, states=("credited", "review", "not_verified", "timeout", "failed")):
    wait_until(lambda: (stack.db.receipt_claims.find_one({"payment_id": payment_id}, sort=[("created_at", -1)])
                        or {}).get("state") in states, what="receipt claim answered")
    return stack.db.receipt_claims.find_one({"payment_id": payment_id}, sort=[("created_at", -1)])


@pytest.mark.parametrize("values", ["numbers", "strings"])
def test_lost_confirmation_recovered_by_a_receipt_claim(stack, customer, status_faults, values):
    status_faults(values=values)
    payment_id, ref = failed_order(stack, customer)
    stack.sim("/_sim/c2b/faults", {"confirmation": "none"})
    trans_id = paybill(stack, customer.phone, ref).json()["trans_id"]
    claim(customer, payment_id, trans_id.lower())
    assert claim_state(stack, payment_id)["state"] == "credited"
    customer.wait_for(payment_id, "completed")
    assert balance(stack, customer) == 10_000
    page = customer.get(f"/payments/{payment_id}").text
    assert trans_id in page
    # The confirmation turns up after all: recognised, never a second credit.
    stack.sim(f"/_sim/c2b/redeliver/{trans_id}")
    assert c2b_state(stack, trans_id)["state"] == "credited"
    assert balance(stack, customer) == 10_000
    assert_money_invariants(stack.db)


def test_a_receipt_claimed_twice_and_by_another_customer_credits_once(stack, customer, status_faults):
    payment_id, ref = failed_order(stack, customer)
    stack.sim("/_sim/c2b/faults", {"confirmation": "none"})
    trans_id = paybill(stack, customer.phone, ref).json()["trans_id"]
    claim(customer, payment_id, trans_id)
    assert claim_state(stack, payment_id)["state"] == "credited"
    other = registered(stack.web_url)
    other_payment, _ = failed_order(stack, other)
    claim(other, other_payment, trans_id)
    assert "already been used" in other.get(f"/payments/{other_payment}").text
    assert stack.db.receipt_claims.count_documents({"payment_id": other_payment}) == 0
    assert balance(stack, customer) == 10_000 and balance(stack, other) == 0
    assert_money_invariants(stack.db)


def test_a_receipt_for_another_shortcode_is_refused_in_plain_words(stack, customer, status_faults):
    status_faults(credit_party="999999 - ANOTHER SHOP")
    payment_id, ref = failed_order(stack, customer)
    stack.sim("/_sim/c2b/faults", {"confirmation": "none"})
    trans_id = paybill(stack, customer.phone, ref).json()["trans_id"]
    claim(customer, payment_id, trans_id)
    assert claim_state(stack, payment_id)["state"] == "not_verified"
    assert "another business" in customer.get(f"/payments/{payment_id}").text
    assert balance(stack, customer) == 0
    assert_money_invariants(stack.db)


def test_unknown_receipt_and_a_lost_result_leave_the_order_open(stack, customer, status_faults):
    payment_id, _ref = failed_order(stack, customer)
    claim(customer, payment_id, "ZZZ9ZZZZZZ")
    assert claim_state(stack, payment_id)["state"] == "not_verified"
    status_faults(result="timeout")
    claim(customer, payment_id, "ZZZ9ZZZZZY")
    assert claim_state(stack, payment_id)["state"] == "timeout"
    assert payment_doc(stack, payment_id)["status"] == "timeout" and balance(stack, customer) == 0
    assert_money_invariants(stack.db)


def test_forged_status_results_change_nothing(stack, customer, status_faults):
    status_faults(result="none")
    payment_id, ref = failed_order(stack, customer)
    stack.sim("/_sim/c2b/faults", {"confirmation": "none"})
    trans_id = paybill(stack, customer.phone, ref).json()["trans_id"]
    claim(customer, payment_id, trans_id)
    pending = claim_state(stack, payment_id, states=("asked",))
    forged = {"Result": {"ResultCode": 0, "ResultParameters": {"ResultParameter": [
        {"Key": "ReceiptNo", "Value": trans_id}, {"Key": "Amount", "Value": 100},
        {"Key": "TransactionStatus", "Value": "Completed"}, {"Key": "CreditPartyName", "Value": "174379 - X"}]}}}
    reply = requests.post(f"{stack.web_url}/pay/status/result/{pending['_id']}/wrong", json=forged, timeout=10)
    assert reply.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    assert claim_state(stack, payment_id, states=("asked",))["state"] == "asked"
    assert balance(stack, customer) == 0
    assert_money_invariants(stack.db)


# ---------------------------------------------------------------- sent back by M-Pesa Reversal
# (refunds of paid orders: test_refunds_http.py)

def test_an_unmatched_menu_payment_is_sent_back_through_mpesa(stack, customer, status_faults):
    from app.admin import reversals
    from app.config import load_config
    failed_order(stack, customer)
    trans_id = paybill(stack, customer.phone, "WHO-KNOWS").json()["trans_id"]
    assert c2b_state(stack, trans_id)["state"] == "review"
    reversals.reverse_menu_payment(stack.db, load_config(stack.env), trans_id, actor="ops", reason="unknown payer")
    c2b_state(stack, trans_id, states=("refunded",))
    assert stack.db.reversals.find_one({"_id": f"reversal:c2b:{trans_id}:1"})["state"] == "completed"
    assert balance(stack, customer) == 0
    assert_money_invariants(stack.db)
