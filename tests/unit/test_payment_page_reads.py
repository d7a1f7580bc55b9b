"""What the page a checkout redirects to reads: the customer's session, and neither the payment
the checkout just wrote nor a receipt claim a queued payment cannot have."""
import re
from datetime import timedelta

import pytest

from app.db import utcnow
from app.dbsetup import init_db
from app.payments import claims, handover, records
from tests.support.factories import login, make_user, new_payment, pushed


@pytest.fixture
def shopper(app, db, client):
    init_db(db)  # the open slot is the unique index's work
    app.config["WTF_CSRF_ENABLED"] = False
    user = make_user(db, phone="254712345678")
    login(client, user)
    return user


@pytest.fixture
def reads(monkeypatch):
    """Which payment-page reads ran: the payment by its owner, and the latest receipt claim."""
    seen = []
    real_owned, real_claim = records.get_for_owner, claims.latest
    monkeypatch.setattr(records, "get_for_owner", lambda *a, **k: seen.append("payment") or real_owned(*a, **k))
    monkeypatch.setattr(claims, "latest", lambda *a, **k: seen.append("claim") or real_claim(*a, **k))
    return seen


def checkout(client, key="form-0001"):
    response = client.post("/checkout/basic", data={"phone_number": "0712 345 678", "idempotency_key": key})
    assert response.status_code == 302
    return response.headers["Location"]


def main_part(html: str) -> str:
    """The page's content, without what differs between two renders (tokens, nonces)."""
    body = html[html.index("<main"):html.index("</main>")]
    return re.sub(r'(name="csrf_token"[^>]*value=")[^"]+"|nonce="[^"]+"', r"\1", body)


def test_the_page_a_checkout_redirects_to_reads_neither_the_payment_nor_a_claim(client, shopper, reads):
    page = client.get(checkout(client))
    assert page.status_code == 200 and "Payment for" in page.text
    assert reads == []
    # Handed over once: a reload reads the payment, and a queued payment still has no claim to look for.
    assert client.get(page.request.path).status_code == 200
    assert reads == ["payment"]


def test_the_handed_over_page_is_the_page_the_database_gives(client, shopper, monkeypatch):
    now = utcnow()
    for module in ("app.payments.status", "app.payments.actions", "app.payments.c2b"):
        monkeypatch.setattr(f"{module}.utcnow", lambda: now)
    location = checkout(client)
    handed = client.get(location).text
    from_database = client.get(location).text
    assert main_part(handed) == main_part(from_database)


def test_a_pending_payment_page_still_shows_its_receipt_claim(db, client, shopper, reads):
    payment = pushed(db, new_payment(db, shopper, with_job=False))
    db.receipt_claims.insert_one({"payment_id": str(payment["_id"]), "username": shopper.username,
                                  "receipt": "RKL51ZDR4F", "state": "asked", "created_at": utcnow()})
    page = client.get(f"/payments/{payment['_id']}")
    assert reads == ["payment", "claim"] and 'data-claim-state="asked"' in page.text


def test_a_handover_serves_only_its_own_fresh_queued_payment_once(app, db, shopper):
    payment = new_payment(db, shopper, with_job=False)
    with app.test_request_context("/"):
        from flask import session
        handover.hand_over(payment)
        assert "callback_secret" not in str(session[handover.KEY])  # the cookie is signed, not encrypted
        assert handover.take(payment["_id"], "someone-else") is None
        handover.hand_over(payment)
        taken = handover.take(payment["_id"], shopper.username)
        assert taken["_id"] == payment["_id"] and taken["reference"] == payment["reference"]
        assert taken["created_at"] == payment["created_at"].replace(tzinfo=taken["created_at"].tzinfo)
        assert handover.take(payment["_id"], shopper.username) is None  # once
        handover.hand_over({**payment, "created_at": utcnow() - timedelta(seconds=30)})
        assert handover.take(payment["_id"], shopper.username) is None  # a late visit reads the database
        handover.hand_over({**payment, "status": "pending"})
        assert handover.take(payment["_id"], shopper.username) is None
