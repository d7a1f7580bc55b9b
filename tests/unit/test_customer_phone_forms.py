"""Phones as customers write them (0712 345 678) on every page they see; masked in that
same shape on a receipt, which may be printed or forwarded (0712 ••• 052)."""
import re

import pytest

from app import ledger
from app.mpesa.phone import masked_display_phone
from tests.support.factories import login, make_user, paid, prompted

STORED = "254712344052"
SHOWN = "0712 344 052"
UNWANTED = (STORED, "0712344052", "+254")


@pytest.mark.parametrize("stored, masked", [
    ("254712344052", "0712 ••• 052"),
    ("254110345678", "0110 ••• 678"),
    (254712344052, "0712 ••• 052"),           # Daraja sends PhoneNumber as a number
    ("0712344052", "07*****052"),             # not the stored form: masked as logs mask it
    ("2547*****052", "***"),                  # already masked by Safaricom: nothing to show
    ("junk", "***"),
    (None, ""), ("", ""),
])
def test_masked_display_phone(stored, masked):
    assert masked_display_phone(stored) == masked


def test_the_masked_form_never_holds_the_hidden_digits():
    masked = masked_display_phone(STORED)
    assert "344" not in masked and "4052" not in masked and STORED not in masked


@pytest.fixture
def customer(client, db):
    user = make_user(db, phone=STORED)
    login(client, user)
    return user


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_the_receipt_shows_the_phone_masked_in_the_customers_shape(client, db, customer):
    payment = paid(db, customer)
    html = client.get(f"/payments/{payment['_id']}/receipt").text
    assert "Paid from 0712 ••• 052" in _text(html)
    for form in (*UNWANTED, SHOWN, "2547****4052"):
        assert form not in html


@pytest.mark.parametrize("page", ["checkout", "waiting", "history", "profile", "notices"])
def test_every_customer_page_shows_the_phone_as_typed_never_as_stored(client, db, customer, page):
    waiting = prompted(db, customer)
    ledger.adjust(db, customer.username, 500, actor="ops", reason="goodwill")  # a notice to list
    path = {"checkout": "/checkout/basic", "waiting": f"/payments/{waiting['_id']}", "history": "/history",
            "profile": "/profile", "notices": "/notices"}[page]
    response = client.get(path)
    assert response.status_code == 200
    for form in UNWANTED:
        assert form not in response.text, f"{path} shows {form}"
    if page != "notices":  # notices name no phone at all
        assert SHOWN in response.text


def test_e_mails_never_carry_the_stored_form(app, db):
    app.config.update({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": 2525, "MAIL_FROM": "Lipia <no-reply@lipia.example>",
                       "PUBLIC_BASE_URL": "https://lipia.example"})
    with app.app_context():
        user = make_user(db, phone=STORED, email="wanjiku@example.com")
        paid(db, user)
        ledger.adjust(db, user.username, -100, actor="ops", reason="part refund", kind="refund")
    mails = list(db.outbox.find({"username": user.username}))
    assert len(mails) >= 2
    for mail in mails:
        for form in UNWANTED:
            assert form not in str(mail)
