"""Builders shared by the notices tests: users, payments and the outcomes M-Pesa sends."""
from __future__ import annotations

import uuid

from app.payments import records, settlement, states
from app.plans.service import get_plan
from app.users import create_user, get_by_username


def make_user(db, username: str = "amina", *, email: str | None = None, threshold: int | None = None,
              opt_out=None, role: str = "customer", phone: str = "254712345678"):
    create_user(db, username, "not-a-real-hash", phone, role=role)
    fields = {k: v for k, v in {"email": email, "low_words_threshold": threshold,
                                 "email_opt_out": opt_out}.items() if v is not None}
    if fields:
        db.users.update_one({"username": username}, {"$set": fields})
    return get_by_username(db, username)


def make_payment(db, user, plan: str = "basic") -> dict:
    """A payment whose prompt is on the phone, as the worker leaves it."""
    payment, _ = records.create(db, user=user, plan=get_plan(db, plan), phone=user.phone_number,
                                idempotency_key=uuid.uuid4().hex, reference_prefix="LIPIA")
    records.record_push_accepted(db, payment["_id"], merchant_request_id="m-" + uuid.uuid4().hex[:10],
                                 checkout_request_id="ws_CO_" + uuid.uuid4().hex[:12])
    return records.get(db, payment["_id"])


def paid(payment: dict, receipt: str | None = None) -> states.Outcome:
    return states.Outcome(status=states.COMPLETED, via="callback", result_code="0",
                          receipt=receipt or "R" + uuid.uuid4().hex[:9].upper(),
                          amount=payment["amount"], phone=payment["phone"])


def ended(status: str, message: str | None = None) -> states.Outcome:
    return states.Outcome(status=status, via="callback", result_code="1032", reason=status,
                          customer_message=message)


def buy(db, user, plan: str = "basic") -> dict:
    payment = make_payment(db, user, plan)
    settlement.settle(db, payment["_id"], paid(payment))
    return records.get(db, payment["_id"])


def notices_of(db, username: str, kind: str | None = None) -> list[dict]:
    query = {"username": username, **({"kind": kind} if kind else {})}
    return list(db.notices.find(query).sort("created_at", 1))


def login(client, user) -> None:
    # A real log-in of the account: the user loader accepts only open sessions.
    from app.db import database_for
    from app.users import open_session
    open_session(database_for(client.application.config["MONGO_URI"]), user)
    with client.session_transaction() as session:
        session["_user_id"] = user.get_id()
        session["_fresh"] = True
