"""What a customer can do to a waiting payment: cancel it, send the prompt again, try again; what the page says."""
from datetime import timedelta
from decimal import Decimal

import pytest

from app import ledger
from app.db import utcnow
from app.dbsetup import init_db
from app.mpesa.phone import display_phone
from app.payments import records, settlement
from app.payments.outcomes import from_result
from app.payments.status import describe
from tests.support.factories import login, make_user, new_payment, pushed


@pytest.fixture
def shopper(app, db, client):
    init_db(db)  # the open slot is the unique index's work
    app.config["WTF_CSRF_ENABLED"] = False
    user = make_user(db, phone="254712345678")
    login(client, user)
    return user


def checkout(client, phone="0712 345 678", key="form-0001"):
    return client.post("/checkout/basic", data={"phone_number": phone, "idempotency_key": key})


def payment_of(db, user, **extra):
    return db.payments.find_one({"username": user.username, **extra}, sort=[("created_at", -1)])


def test_cancel_ends_the_payment_frees_the_slot_and_a_late_success_still_credits(app, db, client, shopper):
    checkout(client)
    first = pushed(db, payment_of(db, shopper))
    # While it waits, a checkout to another number only finds the waiting payment.
    checkout(client, phone="0722 000 111", key="form-0002")
    assert db.payments.count_documents({"username": shopper.username}) == 1

    response = client.post(f"/payments/{first['_id']}/cancel", data={"then": "another"})
    assert response.status_code == 302 and "/checkout/basic?phone=other" in response.headers["Location"]
    cancelled = records.get(db, first["_id"])
    assert cancelled["status"] == "cancelled" and cancelled["failure_reason"] == "abandoned"
    assert "open_slot" not in cancelled and cancelled["history"][-1]["via"] == "customer"
    # The form after "Use another number" starts empty.
    assert 'value="0712 345 678"' not in client.get("/checkout/basic?phone=other").get_data(as_text=True)

    checkout(client, phone="0722 000 111", key="form-0003")
    second = payment_of(db, shopper, phone="254722000111")
    assert second is not None and second["status"] == "queued" and second["open_slot"] == shopper.username

    # The customer approves the old prompt after all: M-Pesa's success outranks our cancel.
    result = settlement.settle(db, first["_id"], from_result(0, "ok", via="callback", receipt="RKL0000001",
                                                             amount=Decimal(100), phone="254712345678"))
    assert result.credited and records.get(db, first["_id"])["status"] == "completed"
    assert ledger.balance(db, shopper.username) == 10_000
    assert ledger.check_invariants(db) == []


def test_cancel_of_an_ended_payment_changes_nothing(db, client, shopper):
    payment = new_payment(db, shopper, with_job=False)
    settlement.settle(db, payment["_id"], from_result(2001, "wrong pin", via="callback"))
    before = records.get(db, payment["_id"])
    client.post(f"/payments/{payment['_id']}/cancel", data={"then": "stay"})
    assert records.get(db, payment["_id"])["history"] == before["history"]


def test_cancel_refuses_an_unknown_next_step_and_another_customers_payment(db, client, shopper):
    payment = new_payment(db, shopper, with_job=False)
    client.post(f"/payments/{payment['_id']}/cancel", data={"then": "elsewhere"})
    assert records.get(db, payment["_id"])["status"] == "queued"
    other = new_payment(db, make_user(db), with_job=False)
    assert client.post(f"/payments/{other['_id']}/cancel", data={"then": "stay"}).status_code == 404
    assert records.get(db, other["_id"])["status"] == "queued"


def test_send_again_waits_a_little_then_replaces_the_prompt_once(db, client, shopper):
    checkout(client)
    first = pushed(db, payment_of(db, shopper))
    response = client.post(f"/payments/{first['_id']}/again", follow_redirects=True)
    assert "you can send a new one in" in response.get_data(as_text=True)
    assert records.get(db, first["_id"])["status"] == "pending"

    db.payments.update_one({"_id": first["_id"]}, {"$set": {"pushed_at": utcnow() - timedelta(seconds=30)}})
    for _ in range(2):  # a double tap makes one new payment
        client.post(f"/payments/{first['_id']}/again")
    assert records.get(db, first["_id"])["status"] == "cancelled"
    rows = list(db.payments.find({"username": shopper.username}))
    assert len(rows) == 2
    new = next(p for p in rows if p["_id"] != first["_id"])
    assert new["status"] == "queued" and new["phone"] == first["phone"] and new["plan_code"] == first["plan_code"]
    assert db.transactions.count_documents({"payment_id": str(new["_id"])}) == 1  # its push job


def test_try_again_after_a_failure_is_one_tap(db, client, shopper):
    payment = new_payment(db, shopper, with_job=False)
    settlement.settle(db, payment["_id"], from_result(1032, "cancelled by user", via="callback"))
    response = client.post(f"/payments/{payment['_id']}/again")
    new = payment_of(db, shopper, status="queued")
    assert new is not None and response.headers["Location"].endswith(f"/payments/{new['_id']}")
    assert new["phone"] == payment["phone"] and new["amount"] == payment["amount"]


def test_the_first_poll_after_the_prompt_closes_asks_mpesa_once(app, db, client, shopper):
    payment = pushed(db, new_payment(db, shopper, with_job=False))
    url = f"/payments/{payment['_id']}/status.json"
    assert client.get(url).get_json()["title"] == "Check your phone"
    assert "asked_after_prompt" not in records.get(db, payment["_id"])

    db.payments.update_one({"_id": payment["_id"]},
                           {"$set": {"pushed_at": utcnow() - timedelta(seconds=61), "next_query_at": utcnow()
                                     + timedelta(seconds=60)}})
    state = client.get(url).get_json()
    assert state["title"] == "Checking with M-Pesa" and "asking M-Pesa whether you paid" in state["message"]
    stored = records.get(db, payment["_id"])
    asked = stored["asked_after_prompt"]
    assert stored["query_requested_at"]
    # A worker is woken for it at once (a job), rather than at its next housekeeping pass...
    woken = list(db.transactions.find({"kind": "stk_query", "payment_id": str(payment["_id"])}))
    assert len(woken) == 1
    # ...and the reconciler takes it now, though the normal schedule (90 s) has not come yet.
    assert records.claim_due_query(db, utcnow(), reconcile_after=90, every=30)["_id"] == payment["_id"]
    client.get(url)
    assert records.get(db, payment["_id"])["asked_after_prompt"] == asked  # once only
    assert db.transactions.count_documents({"kind": "stk_query"}) == 1


def test_check_again_wakes_a_worker_that_sends_the_query_at_once(app, db, client, shopper):
    from app import queue
    from app.payments import tasks

    class Daraja:
        asked = []

        def stk_query(self, checkout_request_id, payment_id):
            self.asked.append(checkout_request_id)
            from app.mpesa.client import QueryResult
            return QueryResult(pending=False, result_code="1032", result_desc="Request cancelled by user",
                               merchant_request_id=None, checkout_request_id=checkout_request_id)

    payment = pushed(db, new_payment(db, shopper, with_job=False))
    app.config["WTF_CSRF_ENABLED"] = False
    assert client.post(f"/payments/{payment['_id']}/check").status_code == 302
    job = queue.claim(db, "w1", 30)
    assert job is not None and job.kind == tasks.QUERY_JOB
    settings = {**app.config, "RECONCILE_AFTER_SECONDS": 90, "RECONCILE_EVERY_SECONDS": 30}
    assert tasks.run_query_job(db, Daraja(), settings, job) == "1 STK queries sent"
    assert Daraja.asked == [payment["checkout_request_id"]]
    assert records.get(db, payment["_id"])["status"] == "cancelled"


def test_a_paid_payment_without_receipt_says_where_the_receipt_is():
    now = utcnow()
    base = {"_id": "p1", "amount": 100, "words": 10_000, "phone": "254712345678", "pushed_at": now}
    state = describe({**base, "status": "completed", "credited": True}, prompt_timeout=60)
    assert state["receipt"] is None and "SMS M-Pesa sent to 0712 345 678" in state["receipt_note"]
    state = describe({**base, "status": "completed", "credited": True, "mpesa_receipt": "RKL51ZDR4F"}, prompt_timeout=60)
    assert state["receipt"] == "RKL51ZDR4F" and state["receipt_note"] == ""


def test_an_outage_at_daraja_is_said_at_once():
    base = {"_id": "p1", "amount": 100, "words": 10_000, "phone": "254712345678", "status": "queued",
            "created_at": utcnow()}
    assert describe({**base, "exchanges": []}, prompt_timeout=60)["title"].startswith("Sending the prompt")
    state = describe({**base, "exchanges": [{"http_status": 503}]}, prompt_timeout=60)
    assert state["title"] == "M-Pesa is not answering" and "no money has been taken" in state["message"]
    assert state["can_cancel"] and not state["final"]


def test_waiting_page_shows_help_cancel_and_no_receipt_row(db, client, shopper):
    payment = pushed(db, new_payment(db, shopper, with_job=False))
    html = client.get(f"/payments/{payment['_id']}").get_data(as_text=True)
    assert "Didn&#39;t get the prompt?" in html or "Didn't get the prompt?" in html
    assert "Use another number" in html and "Cancel payment" in html
    assert "0712 345 678" in html and "254712345678" not in html
    receipt_row = html[html.index("M-Pesa receipt") - 80:html.index("M-Pesa receipt")]
    assert "d-none" in receipt_row


@pytest.mark.parametrize("stored, shown", [("254712345678", "0712 345 678"), ("254110123456", "0110 123 456"),
                                           (None, ""), ("12345", "12345")])
def test_phones_are_shown_as_customers_write_them(stored, shown):
    assert display_phone(stored) == shown


def test_history_shows_words_per_row_with_adjustments_and_refunds(db, client, shopper):
    payment = new_payment(db, shopper, with_job=False)
    settlement.settle(db, payment["_id"], from_result(0, "ok", via="callback", receipt="RKL0000009",
                                                      amount=Decimal(100), phone=payment["phone"]))
    ledger.spend(db, shopper.username, 250, "spend-0001", channel="api", note="summary")
    ledger.adjust(db, shopper.username, 500, actor="ops", reason="goodwill for a slow prompt")
    ledger.adjust(db, shopper.username, -1000, actor="ops", reason="refund of part", kind="refund")
    html = client.get("/history").get_data(as_text=True)
    assert "10,000 words</div>" in html  # the payment row says what it bought
    rows = html[html.index('id="usage-heading"'):]
    for label, amount in [("Bought", "+10,000 words"), ("Spent", "−250 words"),
                          ("Adjusted by Lipia", "+500 words"), ("Refunded", "−1,000 words")]:
        assert label in rows and amount in rows
    assert "goodwill for a slow prompt" in rows and "via api" in rows


def test_an_unknown_page_answers_in_the_shops_words(client, shopper):
    response = client.get("/no-such-page")
    text = response.get_data(as_text=True)
    assert response.status_code == 404 and "We could not find that page" in text
    assert "requested URL" not in text
