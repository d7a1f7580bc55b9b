"""Helpers for the operator console's unit tests: users, logins and payments in any state."""
from __future__ import annotations

import uuid
from decimal import Decimal

from app import queue, users
from app.payments import outcomes, records, settlement, tasks
from app.payments.checkout import enqueue_push
from app.plans.service import get_plan

FAKE_HASH = "$2b$12$" + "x" * 53  # never checked: tests log in through the session


def make_user(db, name: str | None = None, *, role: str = "customer", phone: str | None = None) -> users.User:
    name = name or "u" + uuid.uuid4().hex[:8]
    phone = phone if phone is not None else "2547" + str(uuid.uuid4().int)[:8]
    return users.create_user(db, name, FAKE_HASH, phone if role != "admin" else None, role=role)


def login(client, user: users.User) -> None:
    # A real log-in of the account: the user loader accepts only open sessions.
    from app.db import database_for
    from app.users import open_session
    open_session(database_for(client.application.config["MONGO_URI"]), user)
    with client.session_transaction() as session:
        session["_user_id"] = user.get_id()
        session["_fresh"] = True


def new_payment(db, user: users.User, plan: str = "basic", *, with_job: bool = True) -> dict:
    payment, _ = records.create(db, user=user, plan=get_plan(db, plan), phone=user.phone_number or "254700000001",
                                idempotency_key=uuid.uuid4().hex, reference_prefix="LIPIA")
    if with_job:
        enqueue_push(db, {"JOB_MAX_ATTEMPTS": 2}, payment)
    return payment


def pushed(db, payment: dict) -> dict:
    """As if Daraja accepted the push: pending, with Daraja's ids."""
    checkout = "ws_CO_" + uuid.uuid4().hex[:16]
    records.record_push_accepted(db, payment["_id"], merchant_request_id="mr-" + uuid.uuid4().hex[:8],
                                 checkout_request_id=checkout)
    records.record_exchange(db, payment["_id"], {
        "endpoint": "/mpesa/stkpush/v1/processrequest", "http_status": 200, "elapsed_ms": 12,
        "at": "2025-01-01T10:00:00+00:00",
        "request": {"CallBackURL": "https://lipia.example/payments/callback/x/***", "PhoneNumber": "2547****1234",
                    "Password": "***"},
        "response": {"CheckoutRequestID": checkout, "ResponseCode": "0"}})
    return records.get(db, payment["_id"])


def receipt() -> str:
    return "S" + uuid.uuid4().hex[:9].upper()


def paid(db, user: users.User, plan: str = "basic", **outcome_fields) -> dict:
    """A completed, credited payment, settled by a (stored) callback."""
    payment = pushed(db, new_payment(db, user, plan))
    records.store_callback(db, payment_id=str(payment["_id"]),
                           raw=b'{"Body": {"stkCallback": {"ResultCode": 0}}}', remote_addr="127.0.0.1",
                           content_type="application/json")
    fields = {"receipt": receipt(), "amount": Decimal(payment["amount"]), "phone": payment["phone"],
              "checkout_request_id": payment["checkout_request_id"], **outcome_fields}
    result = settlement.settle(db, payment["_id"], outcomes.from_result("0", "ok", via="callback", **fields))
    return result.payment


def under_review(db, user: users.User) -> dict:
    """M-Pesa confirmed a different amount: held for review, nothing credited."""
    payment = pushed(db, new_payment(db, user))
    return settlement.settle(db, payment["_id"], outcomes.from_result(
        "0", "ok", via="callback", receipt=receipt(), amount=Decimal(1), phone=payment["phone"],
        checkout_request_id=payment["checkout_request_id"])).payment


def expired(db, user: users.User) -> dict:
    payment = pushed(db, new_payment(db, user))
    return settlement.settle(db, payment["_id"], outcomes.expired("no answer")).payment


def dead_push_job(db, payment: dict, *, give_up: bool = True) -> str:
    """Run the payment's push job to the dead letter, as the worker does after its last attempt."""
    job = queue.claim(db, "test-worker", 30)
    assert job is not None and job.payment_id == str(payment["_id"])
    queue.dead(db, job, "could not connect to Daraja")
    if give_up:
        tasks.give_up_push(db, job, "could not connect to Daraja")
    return job.id

