"""The bell, the notices page, the profile's e-mail choices and the receipt page."""
import datetime as dt
import re

import pytest

from app import ledger
from app.payments import settlement
from app.notices import service

from tests.support.factories import ended_outcome, login, make_user, paid, prompted


@pytest.fixture(autouse=True)
def plain_forms(app):
    app.config["WTF_CSRF_ENABLED"] = False
    service.configure(None)


def _bell(html):
    match = re.search(r'<a class="nav-link nav-notices".*?</a>', html, re.S)
    return match.group(0) if match else None


# ---------------------------------------------------------------- bell and notices page

def test_the_bell_counts_unread_notices_and_mark_all_read_is_a_post(client, db):
    user = make_user(db, "amina", threshold=0)
    first = prompted(db, user)
    settlement.settle(db, first["_id"], ended_outcome("cancelled"))
    paid(db, user)
    login(client, user)
    bell = _bell(client.get("/").text)
    assert 'aria-label="Notices, 2 unread"' in bell and "data-unread-count>2<" in bell

    page = client.get("/notices").text
    titles = re.findall(r'<h2 class="h6 mb-1">([^<]+)</h2>', page)
    assert titles[0].startswith("Payment received") and titles[1] == "Payment cancelled"  # newest first
    assert page.count(">New</span>") == 2
    # Looking (a GET, which a link preview or prefetch may make) changes nothing.
    assert client.get("/notices").text.count(">New</span>") == 2
    assert db.notices.count_documents({"username": "amina", "read_at": None}) == 2
    assert "Mark all read" in page
    seen_at = re.search(r'name="seen_at" type="hidden" value="([^"]+)"', page).group(1)
    # A notice that arrives after the page was shown stays unread.
    db.notices.insert_one({"key": "late", "username": "amina", "kind": "x", "category": "receipt", "title": "Late",
                           "body": "b", "created_at": dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5),
                           "read_at": None})
    done = client.post("/notices/read", data={"seen_at": seen_at})
    assert done.status_code == 302
    assert db.notices.count_documents({"username": "amina", "read_at": None}) == 1
    after = client.get("/notices").text
    assert after.count(">New</span>") == 1 and "All notices are marked read." in after
    assert f'href="/payments/{first["_id"]}"' in page


def test_the_count_is_capped_for_the_nav(client, db):
    user = make_user(db, "amina")
    db.notices.insert_many([{"key": f"k{i}", "username": "amina", "kind": "x", "category": "problem",
                             "title": "t", "body": "b", "created_at": ledger.utcnow(), "read_at": None}
                            for i in range(120)])
    login(client, user)
    assert "data-unread-count>99+<" in _bell(client.get("/").text)


def test_each_customer_sees_only_their_own_notices(client, db):
    make_user(db, "other", threshold=0)
    paid(db, make_user(db, "other2", threshold=0))
    me = make_user(db, "amina", threshold=0)
    login(client, me)
    assert _bell(client.get("/").text) is not None and "data-unread-count" not in _bell(client.get("/").text)
    assert "No notices yet" in client.get("/notices").text


def test_logged_out_visitors_have_no_bell_and_no_notices_page(client):
    assert _bell(client.get("/").text) is None
    response = client.get("/notices")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


# ---------------------------------------------------------------- profile choices

def test_the_profile_stores_the_unticked_email_choices(client, db):
    user = make_user(db, "amina", email="amina@example.com")  # the same address, as typed below
    login(client, user)
    page = client.get("/profile").text
    for box in ("receipt", "problem", "adjustment", "low_balance"):
        assert f'<input checked class="form-check-input" id="email_{box}"' in page  # all on by default
    response = client.post("/profile", data={"phone_number": "0712345678", "email": "Amina@Example.com",
                                             "low_words_threshold": "2500", "email_receipt": "y",
                                             "email_adjustment": "y"})
    assert response.status_code == 302
    doc = db.users.find_one({"username": "amina"})
    assert doc["email"] == "amina@example.com" and doc["low_words_threshold"] == 2500
    assert doc["email_opt_out"] == ["problem", "low_balance"]
    page = client.get("/profile").text
    assert '<input checked class="form-check-input" id="email_receipt"' in page
    assert '<input class="form-check-input" id="email_problem"' in page


def test_a_bad_email_is_refused_and_changes_nothing(client, db):
    user = make_user(db, "amina")
    login(client, user)
    response = client.post("/profile", data={"phone_number": "0712345678", "email": "not-an-address"})
    assert response.status_code == 400 and "Enter a valid e-mail address" in response.text
    assert "email" not in db.users.find_one({"username": "amina"})


# ---------------------------------------------------------------- receipts

def test_the_owner_sees_a_printable_receipt(client, db):
    user = make_user(db, "amina", phone="254712345678")
    payment = paid(db, user)
    login(client, user)
    response = client.get(f"/payments/{payment['_id']}/receipt")
    assert response.status_code == 200
    html = response.text
    assert payment["mpesa_receipt"] in html and "KES 100" in html and "Basic" in html and "10,000" in html
    assert "0712 ••• 678" in html and "254712345678" not in html and "0712 345 678" not in html
    assert payment["reference"] in html and " EAT" in html
    assert "js/receipt." in html and "data-print" in html and "css/app." in html  # hashed names; app.css has the print rules
    assert "<script>" not in html and " style=" not in html


def test_receipts_are_linked_from_history_and_the_paid_payment_page(client, db):
    user = make_user(db, "amina")
    payment = paid(db, user)
    waiting = prompted(db, user)
    login(client, user)
    link = f'href="/payments/{payment["_id"]}/receipt"'
    assert link in client.get("/history").text
    assert f'href="/payments/{waiting["_id"]}/receipt"' not in client.get("/history").text
    shown = client.get(f"/payments/{payment['_id']}").text
    assert re.search(r'<a class="btn btn-outline-secondary " data-show-when="paid"\s+' + re.escape(link), shown)
    pending_page = client.get(f"/payments/{waiting['_id']}").text
    assert 'btn-outline-secondary d-none" data-show-when="paid"' in pending_page


def test_another_customer_gets_404_and_an_admin_gets_the_receipt(client, db):
    owner = make_user(db, "amina")
    payment = paid(db, owner)
    url = f"/payments/{payment['_id']}/receipt"
    login(client, make_user(db, "mallory", phone="254799999999"))
    assert client.get(url).status_code == 404
    login(client, make_user(db, "ops", role="admin", phone="254711111111"))
    response = client.get(url)
    assert response.status_code == 200 and payment["mpesa_receipt"] in response.text and "amina" in response.text


@pytest.mark.parametrize("status", ["pending", "cancelled"])
def test_no_receipt_for_an_unpaid_payment(client, db, status):
    user = make_user(db, "amina")
    payment = prompted(db, user)
    if status != "pending":
        settlement.settle(db, payment["_id"], ended_outcome(status))
    login(client, user)
    assert client.get(f"/payments/{payment['_id']}/receipt").status_code == 404


def test_nonsense_ids_and_logged_out_visitors_get_no_receipt(client, db):
    user = make_user(db, "amina")
    payment = paid(db, user)
    assert client.get(f"/payments/{payment['_id']}/receipt").status_code == 302
    login(client, user)
    assert client.get("/payments/not-an-id/receipt").status_code == 404
    assert client.get("/payments/" + "f" * 24 + "/receipt").status_code == 404


def test_changing_the_email_address_needs_the_password_and_cancels_reset_links(app, client, db):
    from app import users
    from app.auth.service import hash_password
    with app.app_context():
        user = users.create_user(db, "baraka", hash_password("kahawa chungu 42"), "254712345678",
                                 email="baraka@example.com")
    nonce = users.reset_nonce(db, user.id)  # a reset link out to the old address
    login(client, user)
    form = {"phone_number": "0712345678", "email": "thief@example.com", "low_words_threshold": ""}
    refused = client.post("/profile", data=form)
    assert refused.status_code == 400 and "type your current password" in refused.text
    assert db.users.find_one({"username": "baraka"})["email"] == "baraka@example.com"
    wrong = client.post("/profile", data={**form, "email_password": "not it at all"})
    assert wrong.status_code == 400 and db.users.find_one({"username": "baraka"})["email"] == "baraka@example.com"
    assert client.post("/profile", data={**form, "email_password": "kahawa chungu 42"}).status_code == 302
    assert db.users.find_one({"username": "baraka"})["email"] == "thief@example.com"
    assert not users.has_reset_nonce(db, user.id, nonce)
