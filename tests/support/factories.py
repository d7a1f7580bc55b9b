"""Builders for unit tests: users, logins, and payments in each state a test needs.

Payments are plain dicts as `records.get` returns them; outcomes (what M-Pesa says about a
payment, before it is settled) are named `*_outcome` so the two are never confused.
"""
from __future__ import annotations

import uuid
from decimal import Decimal

from app import queue, users
from app.payments import outcomes, push_job, records
from app.plans.service import get_plan
from app.payments import settlement
from app.payments import states

FAKE_HASH = "$2b$12$" + "x" * 53  # never checked: tests log in through the session


# ---------------------------------------------------------------- users and logins

def make_user(db, name: str | None = None, *, role: str = "customer", phone: str | None = None,
              email: str | None = None, threshold: int | None = None, opt_out=None) -> users.User:
    """An account; a random name and phone unless given (an admin has no phone unless given)."""
    name = name or "u" + uuid.uuid4().hex[:8]
    if phone is None and role != "admin":
        phone = "2547" + str(uuid.uuid4().int)[:8]
    user = users.create_user(db, name, FAKE_HASH, phone, role=role)
    fields = {k: v for k, v in {"email": email, "low_words_threshold": threshold,
                                 "email_opt_out": opt_out}.items() if v is not None}
    if fields:
        db.users.update_one({"username": name}, {"$set": fields})
        user = users.get_by_username(db, name)
    return user


def login(client, user: users.User) -> None:
    """Log the test client in as `user`, as a real log-in would (the user loader accepts only open sessions)."""
    from app.db import database_for
    from app.users import open_session
    open_session(database_for(client.application.config["MONGO_URI"]), user)
    with client.session_transaction() as session:
        session["_user_id"] = user.get_id()
        session["_fresh"] = True


# ---------------------------------------------------------------- payments, from queued to settled

def receipt() -> str:
    """A fresh M-Pesa receipt number."""
    return "S" + uuid.uuid4().hex[:9].upper()


def new_payment(db, user: users.User, plan: str = "basic", *, with_job: bool = True) -> dict:
    """A queued payment, with its push job unless `with_job=False`."""
    payment, _ = records.create(db, user=user, plan=get_plan(db, plan), phone=user.phone_number or "254700000001",
                                idempotency_key=uuid.uuid4().hex, reference_prefix="LIPIA")
    if with_job:
        push_job.enqueue(db, {"JOB_MAX_ATTEMPTS": 2}, payment)
    return payment


def pushed(db, payment: dict) -> dict:
    """As if Daraja accepted the push: pending, with Daraja's ids and the exchange on record."""
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


def prompted(db, user: users.User, plan: str = "basic") -> dict:
    """A payment whose prompt is on the phone, as the worker leaves it (its push job done)."""
    return pushed(db, new_payment(db, user, plan, with_job=False))


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


def paid_from_another_phone(db, user: users.User) -> dict:
    """M-Pesa confirmed the order's amount from another phone: held for review, approvable."""
    payment = pushed(db, new_payment(db, user))
    return settlement.settle(db, payment["_id"], outcomes.from_result(
        "0", "ok", via="callback", receipt=receipt(), amount=Decimal(payment["amount"]), phone="254799999999",
        checkout_request_id=payment["checkout_request_id"])).payment


def expired(db, user: users.User) -> dict:
    """No answer from the phone in time: expired, nothing credited."""
    payment = pushed(db, new_payment(db, user))
    return settlement.settle(db, payment["_id"], outcomes.expired("no answer")).payment


def dead_push_job(db, payment: dict, *, give_up: bool = True) -> str:
    """Run the payment's push job to the dead letter, as the worker does after its last attempt."""
    job = queue.claim(db, "test-worker", 30)
    assert job is not None and job.payment_id == str(payment["_id"])
    queue.dead(db, job, "could not connect to Daraja")
    if give_up:
        push_job.give_up(db, job, "could not connect to Daraja")
    return job.id


# ---------------------------------------------------------------- outcomes (not yet settled)

def paid_outcome(payment: dict, receipt: str | None = None) -> states.Outcome:
    """The callback of a successful payment, matching it in amount and phone."""
    return states.Outcome(status=states.COMPLETED, via="callback", result_code="0",
                          receipt=receipt or "R" + uuid.uuid4().hex[:9].upper(),
                          amount=payment["amount"], phone=payment["phone"])


def ended_outcome(status: str, message: str | None = None) -> states.Outcome:
    """The callback of a payment that ended without money (cancelled, failed...)."""
    return states.Outcome(status=status, via="callback", result_code="1032", reason=status,
                          customer_message=message)


# ---------------------------------------------------------------- through checkout, as a customer starts one

CHECKOUT_SETTINGS = {"PROMPT_TIMEOUT_SECONDS": 60, "MPESA_ACCOUNT_REFERENCE": "LIPIA", "JOB_MAX_ATTEMPTS": 5}


def checkout_payment(db, user: users.User, key: str = "k-00000001", plan: str = "basic") -> dict:
    """A payment started by the customer's checkout (queued, with its push job)."""
    from app.payments import checkout
    return checkout.start(db, CHECKOUT_SETTINGS, user=user, plan=get_plan(db, plan), phone=user.phone_number,
                          idempotency_key=key).payment


def success_outcome(receipt: str = "ABC1234567", amount=100, phone: str = "254712345678",
                    via: str = "callback") -> states.Outcome:
    """M-Pesa's word that a payment succeeded, before it is matched to one (defaults fit a basic plan)."""
    return outcomes.from_result(0, "ok", via=via, receipt=receipt, amount=Decimal(amount), phone=phone)


def notices_of(db, username: str, kind: str | None = None) -> list[dict]:
    """A customer's notices, oldest first (of one kind, if given)."""
    query = {"username": username, **({"kind": kind} if kind else {})}
    return list(db.notices.find(query).sort("created_at", 1))
