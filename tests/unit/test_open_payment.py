"""One payment waiting on the phone per customer, the balance a status poll shows, spend retries."""
from datetime import timedelta
from decimal import Decimal

import pytest

from app import ledger
from app.auth.service import register
from app.db import utcnow
from app.dbsetup import init_db
from app.payments import checkout, records, settlement
from app.payments.outcomes import expired, from_result
from app.payments.status import balance_to_show
from app.plans.service import get_plan

SETTINGS = {"PROMPT_TIMEOUT_SECONDS": 60, "MPESA_ACCOUNT_REFERENCE": "LIPIA", "JOB_MAX_ATTEMPTS": 5}


@pytest.fixture
def user(app, db):
    init_db(db)  # the open slot is the unique index's work
    with app.app_context():
        return register(db, "alice", "password123", "254712345678")


def start(db, user, key, plan="basic"):
    return checkout.start(db, SETTINGS, user=user, plan=get_plan(db, plan), phone=user.phone_number,
                          idempotency_key=key)


def test_the_index_itself_refuses_a_second_open_payment(db, user):
    """What a race comes down to: two inserts that both hold the slot; the second is refused."""
    plan = get_plan(db, "basic")
    records.create(db, user=user, plan=plan, phone=user.phone_number, idempotency_key="form-1",
                   reference_prefix="LIPIA", hold_slot=True)
    with pytest.raises(records.SlotTaken):
        records.create(db, user=user, plan=plan, phone=user.phone_number, idempotency_key="form-2",
                       reference_prefix="LIPIA", hold_slot=True)
    assert db.payments.count_documents({"username": "alice"}) == 1


def test_a_settled_payment_frees_the_slot(db, user):
    first = start(db, user, "form-1")
    assert start(db, user, "form-2").reason == "waiting"
    settlement.settle(db, first.payment["_id"], from_result(1032, "cancelled", via="callback"))
    assert "open_slot" not in records.get(db, first.payment["_id"])
    second = start(db, user, "form-3")
    assert second.created and second.payment["_id"] != first.payment["_id"]
    # A resubmitted form of the settled payment still answers with that payment.
    again = start(db, user, "form-1")
    assert again.reason == "resubmitted" and again.payment["_id"] == first.payment["_id"]
    assert db.payments.count_documents({"username": "alice"}) == 2


def test_every_final_status_frees_the_slot(db, user):
    for i, outcome in enumerate([expired("late"), from_result(0, "ok", via="callback", receipt="R00000001",
                                                             amount=Decimal(100), phone=user.phone_number)]):
        payment = start(db, user, f"form-{i}").payment
        settlement.settle(db, payment["_id"], outcome)
        assert "open_slot" not in records.get(db, payment["_id"])
    review = start(db, user, "form-review").payment
    settlement.settle(db, review["_id"], from_result(0, "ok", via="callback", receipt="R00000002", amount=Decimal(1),
                                                phone=user.phone_number))
    assert records.get(db, review["_id"])["status"] == "review"
    assert start(db, user, "form-after").created


def test_a_prompt_still_on_the_phone_keeps_the_slot_and_a_stale_one_gives_it_up(db, user):
    first = start(db, user, "form-1").payment
    records.record_push_accepted(db, first["_id"], merchant_request_id="m-1", checkout_request_id="ws_CO_1")
    assert start(db, user, "form-2").reason == "waiting"
    db.payments.update_one({"_id": first["_id"]}, {"$set": {"pushed_at": utcnow() - timedelta(seconds=61)}})
    second = start(db, user, "form-3")
    assert second.created
    old = records.get(db, first["_id"])
    assert old["status"] == "pending" and "open_slot" not in old  # still settles when M-Pesa answers
    assert start(db, user, "form-4").reason == "waiting"


def test_the_poll_shows_the_newer_of_the_two_balances_it_read(db, user):
    payment = start(db, user, "form-1").payment
    before = db.users.find_one({"username": "alice"})  # the session's read, before the credit
    settlement.settle(db, payment["_id"], from_result(0, "ok", via="callback", receipt="R00000003",
                                                      amount=Decimal(100), phone=user.phone_number))
    credited = records.get(db, payment["_id"])
    assert credited["credited"] is True and credited["balance_after"] == 10_000
    assert balance_to_show(credited, before) == 10_000
    ledger.spend(db, "alice", 300, "later-spend", channel="web")
    after = db.users.find_one({"username": "alice"})  # a later request: the user is newer
    assert balance_to_show(credited, after) == 9_700
    assert balance_to_show(records.get(db, start(db, user, "form-2").payment["_id"]), after) == 9_700


def test_a_retried_spend_answers_the_first_time_even_when_the_balance_is_low_now(db, user):
    ledger.adjust(db, "alice", 500, actor="ops", reason="start")
    first = ledger.spend(db, "alice", 400, "spend-key-1", channel="api", available=500)
    again = ledger.spend(db, "alice", 400, "spend-key-1", channel="api", available=100)
    assert again.replayed and again.entry_id == first.entry_id and ledger.balance(db, "alice") == 100
    with pytest.raises(ledger.InsufficientWords):
        ledger.spend(db, "alice", 400, "spend-key-2", channel="api", available=100)
    # A stale `available` never lets a spend through that the balance cannot carry.
    with pytest.raises(ledger.InsufficientWords):
        ledger.spend(db, "alice", 400, "spend-key-3", channel="api", available=10_000)
    assert ledger.balance(db, "alice") == 100 and ledger.check_invariants(db) == []
