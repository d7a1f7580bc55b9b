"""The shop's own pages: landing copy, terms, refund policy, merchant details on receipts,
the plan named at log-in, friendly 404/405, and password boxes that agree with their errors."""
import re
import uuid

import pytest

from app import create_app
from app.config import ConfigError, load_config
from app.db import database_for
from app.dbsetup import init_db
from app.plans.service import seed_plans
from tests.conftest import TEST_ENV

from tests.support.factories import login, make_user
from tests.support.factories import paid as buy

MERCHANT = {"MERCHANT_LEGAL_NAME": "Maneno Bora Ltd", "MERCHANT_TRADING_NAME": "Lipia",
            "MERCHANT_CONTACT_PHONE": "0722 000 111", "MERCHANT_CONTACT_EMAIL": "help@maneno.example",
            "MERCHANT_KRA_PIN": "P051234567X", "REFUND_WINDOW_DAYS": 10}


def _app(**settings):
    app = create_app({"MONGO_URI": f"mongomock://localhost/site_{uuid.uuid4().hex[:8]}",
                      "RATELIMIT_STORAGE_URI": "memory://", "WTF_CSRF_ENABLED": False, **settings},
                     environ=TEST_ENV)
    db = database_for(app.config["MONGO_URI"])
    init_db(db)
    seed_plans(db)
    return app


@pytest.fixture
def shop():
    return _app(**MERCHANT)


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _h1(html: str) -> str:
    return _text(re.search(r"<h1[^>]*>.*?</h1>", html, re.S).group(0))


# ---------------------------------------------------------------- landing, terms, refunds

def test_the_landing_page_says_what_words_are_for_who_sells_them_and_links_the_policies(shop):
    html = shop.test_client().get("/").text
    text = _text(html)
    assert "What you get" in text and "Spend words" in text and "do not expire" in text
    footer = _text(re.search(r"<footer.*?</footer>", html, re.S).group(0))
    assert "sold by Maneno Bora Ltd" in footer and "Paybill 174379" in footer
    assert "0722 000 111" in footer and "help@maneno.example" in footer
    assert 'href="tel:0722000111"' in html and 'href="mailto:help@maneno.example"' in html
    assert html.count('href="/terms"') >= 2 and html.count('href="/refunds"') >= 2
    # Logged out, choosing a plan goes to a log-in page that will continue to its checkout.
    assert 'href="/login?next=/checkout/basic"' in html


def test_logged_in_the_plan_buttons_go_straight_to_checkout(shop):
    db = database_for(shop.config["MONGO_URI"])
    client = shop.test_client()
    login(client, make_user(db))
    html = client.get("/").text
    assert 'href="/checkout/basic"' in html and "/login?next=" not in html


def test_terms_and_refund_pages_use_the_settings(shop):
    client = shop.test_client()
    terms = _text(client.get("/terms").text)
    assert "Terms of sale" in terms and "sold by Maneno Bora Ltd" in terms
    assert "Your words do not expire" in terms and "Paybill 174379" in terms and "help@maneno.example" in terms
    refunds = client.get("/refunds")
    assert refunds.status_code == 200
    text = _text(refunds.text)
    assert "within 10 days of paying" in text and "M-Pesa reversal" in text and "0722 000 111" in text


def test_without_contact_settings_no_empty_contact_is_shown():
    app = _app()
    html = app.test_client().get("/terms").text
    assert "Help:" not in html and 'href="tel:' not in html and "mailto:" not in html
    assert "not published its contact details" in _text(html)
    assert "within 14 days" in _text(app.test_client().get("/refunds").text)  # the default window


def test_an_operator_template_replaces_the_landing_copy_but_nothing_outside_site(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "_about.html").write_text("<p id='ours'>Words for translating sermons, by {{ merchant.trading_name }}.</p>")
    # Outside site/ an operator's file is ignored: payment pages stay as shipped.
    (tmp_path / "base.html").write_text("HIJACKED")
    app = _app(SITE_TEMPLATES_DIR=str(tmp_path), MERCHANT_TRADING_NAME="Maneno")
    html = app.test_client().get("/").text
    assert "Words for translating sermons, by Maneno." in html and "What you get" not in html
    assert "HIJACKED" not in html and "Choose Basic" in html


def test_a_missing_operator_folder_changes_nothing(tmp_path):
    html = _app(SITE_TEMPLATES_DIR=str(tmp_path / "absent")).test_client().get("/").text
    assert "What you get" in html


@pytest.mark.parametrize("name,value,problem", [
    ("MERCHANT_KRA_PIN", "12345", "KRA PIN"),
    ("MERCHANT_CONTACT_EMAIL", "not an address", "e-mail"),
    ("MERCHANT_LEGAL_NAME", "x" * 121, "at most 120"),
    ("MERCHANT_TRADING_NAME", "two\nlines", "one line"),
    ("REFUND_WINDOW_DAYS", "0", "at least 1"),
])
def test_bad_merchant_settings_stop_start_up_with_their_name(name, value, problem):
    with pytest.raises(ConfigError) as err:
        load_config({**TEST_ENV, name: value}, announce=False)
    assert name in str(err.value) and problem in str(err.value)


def test_a_kra_pin_is_kept_in_capitals():
    assert load_config({**TEST_ENV, "MERCHANT_KRA_PIN": " p051234567x "}, announce=False)["MERCHANT_KRA_PIN"] == "P051234567X"


# ---------------------------------------------------------------- receipts

def test_the_receipt_names_the_seller_paybill_contact_and_kra_pin(shop):
    db = database_for(shop.config["MONGO_URI"])
    client = shop.test_client()
    user = make_user(db)
    payment = buy(db, user)
    login(client, user)
    html = client.get(f"/payments/{payment['_id']}/receipt").text
    seller = _text(re.search(r"<section[^>]*data-receipt-merchant.*?</section>", html, re.S).group(0))
    assert "Maneno Bora Ltd" in seller and "M-Pesa Paybill 174379" in seller
    assert "KRA PIN P051234567X" in seller and "0722 000 111" in seller and "help@maneno.example" in seller
    # The link to the payment says what it is.
    assert ">Payment details</a>" in html and ">The payment<" not in html


def test_a_till_and_no_kra_pin_show_as_such():
    app = _app(MPESA_TRANSACTION_TYPE="CustomerBuyGoodsOnline", MPESA_PARTY_B="5123456")
    db = database_for(app.config["MONGO_URI"])
    client = app.test_client()
    user = make_user(db)
    payment = buy(db, user)
    login(client, user)
    html = client.get(f"/payments/{payment['_id']}/receipt").text
    seller = _text(re.search(r"<section[^>]*data-receipt-merchant.*?</section>", html, re.S).group(0))
    assert "M-Pesa Till number 5123456" in seller and "KRA PIN" not in seller and "Contact" not in seller
    assert "Business Lipia" in seller  # the trading name when no legal name is set


# ---------------------------------------------------------------- the chosen plan at log-in

def test_log_in_and_register_name_the_chosen_plan(shop):
    client = shop.test_client()
    assert _h1(client.get("/login?next=/checkout/premium").text) == "Log in to buy Premium — 50,000 words for KES 400"
    register = client.get("/register?next=/checkout/basic").text
    assert _h1(register) == "Create an account to buy Basic — 10,000 words for KES 100"
    # The log-in link on the register page keeps the plan.
    assert 'href="/login?next=/checkout/basic"' in register


@pytest.mark.parametrize("next_url", ["/checkout/nosuchplan", "//evil.example/checkout/basic",
                                      "https://evil.example/checkout/basic", "/history", "/checkout/basic/x", ""])
def test_anything_but_a_real_plan_checkout_gives_the_plain_heading(shop, next_url):
    assert _h1(shop.test_client().get("/login", query_string={"next": next_url}).text) == "Log in"


def test_the_log_in_page_still_opens_when_the_plan_cannot_be_read(shop, monkeypatch):
    from pymongo.errors import ServerSelectionTimeoutError
    import app.plans.intent as intent

    def unreachable(*args, **kwargs):
        raise ServerSelectionTimeoutError("no database")
    monkeypatch.setattr(intent, "get_plan", unreachable)
    response = shop.test_client().get("/login?next=/checkout/premium")
    assert response.status_code == 200 and _h1(response.text) == "Log in"


def test_a_direct_checkout_visit_lands_on_a_log_in_page_naming_the_plan(shop):
    client = shop.test_client()
    response = client.get("/checkout/premium")
    assert response.status_code == 302
    assert _h1(client.get(response.headers["Location"]).text).startswith("Log in to buy Premium")


def test_registering_continues_to_the_chosen_plans_checkout(shop):
    client = shop.test_client()
    response = client.post("/register", data={"username": "wanjiku", "password": "mvua ya jioni 7",
                                              "confirm": "mvua ya jioni 7", "phone_number": "0712345678",
                                              "next": "/checkout/premium"})
    assert response.status_code == 302 and response.headers["Location"] == "/checkout/premium"
    assert "Premium" in client.get("/checkout/premium").text


def test_logging_in_continues_to_the_chosen_plans_checkout(shop):
    client = shop.test_client()
    client.post("/register", data={"username": "wanjiku", "password": "mvua ya jioni 7",
                                   "confirm": "mvua ya jioni 7", "phone_number": "0712345678"})
    client.post("/logout")
    login_page = client.get("/login?next=/checkout/premium").text
    assert 'name="next" type="hidden" value="/checkout/premium"' in login_page
    response = client.post("/login", data={"username": "wanjiku", "password": "mvua ya jioni 7",
                                           "next": "/checkout/premium"})
    assert response.status_code == 302 and response.headers["Location"] == "/checkout/premium"


# ---------------------------------------------------------------- 404 and 405

def test_an_unknown_address_gets_the_shops_404_with_ways_back(shop):
    response = shop.test_client().get("/no/such/page")
    assert response.status_code == 404
    text = _text(response.text)
    assert "Page not found" in text and "We could not find that page" in text
    assert "requested URL" not in text and "server" not in text.lower()
    assert 'href="/"' in response.text and "0722 000 111" in text


def test_opening_a_button_address_gets_the_shops_405(shop):
    response = shop.test_client().get("/logout")
    assert response.status_code == 405
    text = _text(response.text)
    assert "not a page to open" in text and "Nothing was changed" in text
    assert "method is not allowed" not in text.lower() and ">Back to the plans<" in response.text


def test_a_views_own_404_reason_is_kept_and_a_customer_gets_a_way_to_history(shop):
    db = database_for(shop.config["MONGO_URI"])
    client = shop.test_client()
    login(client, make_user(db))
    response = client.get("/checkout/nosuchplan")
    assert response.status_code == 404 and "There is no such plan" in response.text
    assert 'href="/history"' in response.text


def test_json_callers_still_get_json_errors(shop):
    response = shop.test_client().get("/api/no-such-thing")
    assert response.status_code == 404 and response.is_json


# ---------------------------------------------------------------- password boxes and their errors

def _password_boxes(html):
    return {m.group(1): m.group(0) for m in re.finditer(r'<input[^>]*id="(\w+)"[^>]*type="password"[^>]*>', html)}


def test_a_password_mismatch_empties_both_boxes_and_says_so_truthfully(shop):
    response = shop.test_client().post("/register", data={
        "username": "wanjiku", "password": "mvua ya jioni 7", "confirm": "mvua ya jioni 8", "phone_number": "0712345678"})
    assert response.status_code == 400
    html = response.text
    boxes = _password_boxes(html)
    assert all('value=""' in box for box in boxes.values()) and set(boxes) == {"password", "confirm"}
    assert "do not match" not in html
    assert "The two passwords you typed were different. Type the password again in both boxes." in html
    # The repeat box is not marked wrong; it says why it is empty.
    assert "is-invalid" in boxes["password"] and "is-invalid" not in boxes["confirm"]
    assert 'aria-describedby="confirm-retype"' in boxes["confirm"]
    assert database_for(shop.config["MONGO_URI"]).users.count_documents({}) == 0


def test_boxes_emptied_for_another_fields_error_say_why(shop):
    response = shop.test_client().post("/register", data={
        "username": "x", "password": "mvua ya jioni 7", "confirm": "mvua ya jioni 7", "phone_number": "0712345678"})
    assert response.status_code == 400
    html = response.text
    assert "A username has 3 to 32 characters." in html
    assert html.count("We emptied this box for your safety") == 2
    # A box left empty on purpose gets its own error, not the note.
    empty = shop.test_client().post("/register", data={"username": "wanjiku", "password": "", "confirm": "",
                                                       "phone_number": "0712345678"}).text
    assert "Choose a password." in empty and "We emptied this box" not in empty


def test_a_password_change_mismatch_reads_the_same(shop):
    db = database_for(shop.config["MONGO_URI"])
    client = shop.test_client()
    login(client, make_user(db))
    response = client.post("/profile/password", data={"current_password": "whatever", "new_password": "mvua ya jioni 7",
                                                      "confirm": "mvua ya jioni 9"})
    assert response.status_code == 400
    assert "The two passwords you typed were different." in response.text and "do not match" not in response.text
