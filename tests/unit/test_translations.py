"""English and Swahili: the catalog is whole and well-formed, and pages speak the chosen language."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from app.i18n import COOKIE
from tests.support.factories import login, make_user, new_payment, pushed

ROOT = Path(__file__).resolve().parents[2]
SW_DIR = ROOT / "app" / "translations" / "sw" / "LC_MESSAGES"
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")
TAG = re.compile(r"<[^>]+>")


def catalog():
    with open(SW_DIR / "messages.po", "rb") as f:
        return read_po(f, locale="sw")


def entries():
    return [m for m in catalog() if m.id]


def forms(message) -> tuple[list[str], list[str]]:
    """(English forms, Swahili forms) of an entry, plural or not."""
    ids = list(message.id) if isinstance(message.id, (list, tuple)) else [message.id]
    strings = list(message.string) if isinstance(message.string, (list, tuple)) else [message.string]
    return ids, strings


def test_every_entry_has_a_swahili_translation():
    untranslated = [m.id for m in entries() if m.fuzzy or not all(forms(m)[1])]
    assert untranslated == []


def test_placeholders_and_markup_match_in_every_translation():
    wrong = []
    for m in entries():
        english, swahili = forms(m)
        want_places = set(PLACEHOLDER.findall(english[-1]))
        want_tags = sorted(TAG.findall(english[-1]))
        for text in swahili:
            if set(PLACEHOLDER.findall(text)) != want_places or sorted(TAG.findall(text)) != want_tags:
                wrong.append((english[0], text))
            # A stray % would break the formatting of the whole message.
            if "%" in PLACEHOLDER.sub("", text).replace("%%", ""):
                wrong.append((english[0], text))
    assert wrong == []


def marked_in_code() -> set[str]:
    """What `make translations` would extract from the code and templates (babel.cfg's rules)."""
    method_map = [("app/admin/**", "ignore"), ("app/templates/admin/**", "ignore"),
                  ("app/**.py", "python"), ("app/templates/**.html", "jinja2")]
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map=method_map, options_map={"app/templates/**.html": {"trimmed": "true"}},
            # The Makefile's `translations` target gives pybabel the same keywords.
            keywords={"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "N_": None,
                      "t": None, "plural": (1, 2)}):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


def test_the_catalog_holds_exactly_the_text_marked_in_the_code():
    in_catalog = {forms(m)[0][0] for m in entries()}
    in_code = marked_in_code()
    # Missing: run `make translations` and translate. Extra: text no longer in the code.
    assert sorted(in_code - in_catalog) == []
    assert sorted(in_catalog - in_code) == []


def test_babel_cfg_says_what_the_test_extracts():
    text = (ROOT / "babel.cfg").read_text()
    for line in ("[ignore: app/admin/**]", "[ignore: app/templates/admin/**]", "[python: app/**.py]",
                 "[jinja2: app/templates/**.html]", "trimmed = true"):
        assert line in text


def test_the_compiled_catalog_says_what_the_po_says():
    with open(SW_DIR / "messages.mo", "rb") as f:
        compiled = {tuple(forms(m)[0]): tuple(forms(m)[1]) for m in read_mo(f) if m.id}
    written = {tuple(forms(m)[0]): tuple(forms(m)[1]) for m in entries()}
    # A stale .mo shows customers old wording: `make translations` compiles it again.
    assert compiled == written


# ---------------------------------------------------------------- which language a page speaks

@pytest.fixture
def customer_sw(db):
    user = make_user(db)
    db.users.update_one({"username": user.username}, {"$set": {"language": "sw"}})
    return user


def test_a_customer_who_chose_swahili_reads_swahili(client, customer_sw):
    login(client, customer_sw)
    page = client.get("/spend").get_data(as_text=True)
    assert '<html lang="sw">' in page
    assert "Tumia maneno" in page and "Hesabu na utoze" in page
    assert "Count and charge" not in page


def test_the_stored_choice_wins_over_the_browser(client, customer_sw):
    login(client, customer_sw)
    page = client.get("/spend", headers={"Accept-Language": "en-GB,en;q=0.9"}).get_data(as_text=True)
    assert "Hesabu na utoze" in page


def test_a_visitor_whose_browser_asks_for_swahili_reads_swahili(client):
    page = client.get("/login", headers={"Accept-Language": "sw-KE,sw;q=0.9,en;q=0.5"}).get_data(as_text=True)
    assert '<html lang="sw">' in page
    assert "Vifurushi" in page and "Jisajili" in page


def test_english_is_the_default_and_for_languages_we_do_not_have(client):
    for header in ({}, {"Accept-Language": "fr-FR,fr;q=0.9"}):
        page = client.get("/login", headers=header).get_data(as_text=True)
        assert '<html lang="en">' in page and "Register" in page


def test_the_switch_remembers_a_visitor_in_a_cookie(app, client):
    app.config["WTF_CSRF_ENABLED"] = False
    response = client.post("/language", data={"lang": "sw", "next": "/login"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/login")
    cookie = response.headers["Set-Cookie"]
    assert f"{COOKIE}=sw" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # The cookie beats the browser's own preference.
    page = client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Jisajili" in page


def test_the_switch_keeps_a_customers_choice_on_the_account(app, client, db):
    app.config["WTF_CSRF_ENABLED"] = False
    user = make_user(db)
    login(client, user)
    client.post("/language", data={"lang": "sw", "next": "/spend"})
    assert db.users.find_one({"username": user.username})["language"] == "sw"
    # Another browser of the same customer, without the cookie, follows the account.
    other = app.test_client()
    login(other, user)
    assert "Hesabu na utoze" in other.get("/spend").get_data(as_text=True)
    client.post("/language", data={"lang": "en", "next": "/spend"})
    assert db.users.find_one({"username": user.username})["language"] == "en"


def test_a_bad_switch_changes_nothing_and_goes_nowhere_else(app, client, db):
    app.config["WTF_CSRF_ENABLED"] = False
    user = make_user(db)
    login(client, user)
    for data in ({"lang": "xx", "next": "/spend"}, {"lang": "sw" * 200}, {"lang": "sw", "next": "https://evil.example/"}):
        response = client.post("/language", data=data)
        assert response.status_code == 303
        assert not response.headers["Location"].startswith("https://evil.example")
    assert db.users.find_one({"username": user.username}).get("language") in (None, "sw")
    assert client.get("/language").status_code == 405  # GET never changes anything


def test_the_switch_needs_the_forms_csrf_token(client, db):
    user = make_user(db)
    login(client, user)
    client.post("/language", data={"lang": "sw", "next": "/spend"})
    assert db.users.find_one({"username": user.username}).get("language") is None


def test_the_payment_status_speaks_the_customers_language(client, db, customer_sw):
    login(client, customer_sw)
    payment = pushed(db, new_payment(db, customer_sw))
    state = client.get(f"/payments/{payment['_id']}/status.json").get_json()
    assert state["title"] == "Angalia simu yako"
    assert state["message"].startswith("Weka PIN yako ya M-Pesa")
    page = client.get(f"/payments/{payment['_id']}").get_data(as_text=True)
    assert "Hukupokea ombi la PIN?" in page and "Ghairi malipo" in page


def test_a_message_stored_in_english_is_shown_in_swahili(client, db, customer_sw):
    from app.mpesa.result_codes import classify
    login(client, customer_sw)
    payment = pushed(db, new_payment(db, customer_sw))
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {
        "status": "cancelled", "customer_message": classify(1032).customer_message}})
    state = client.get(f"/payments/{payment['_id']}/status.json").get_json()
    assert state["message"] == "Ulighairi malipo kwenye simu yako. Hakuna pesa zilizotolewa."
    # Text the catalog does not know is shown as it was stored.
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"customer_message": "Something Daraja said."}})
    assert client.get(f"/payments/{payment['_id']}/status.json").get_json()["message"] == "Something Daraja said."


def test_the_waiting_pages_script_gets_its_words_from_the_page(client, customer_sw):
    login(client, customer_sw)
    page = client.get("/spend").get_data(as_text=True)
    assert 'data-t-working="Inashughulikiwa…"' in page
    assert 'data-t-words="maneno {n}"' in page


def test_flash_messages_are_translated(app, client, db, customer_sw):
    app.config["WTF_CSRF_ENABLED"] = False
    login(client, customer_sw)
    page = client.post("/spend", data={"text": "   ", "idempotency_key": "k" * 16}).get_data(as_text=True)
    assert "Bandika maandishi ili yahesabiwe na kutozwa." in page


def test_a_missing_page_speaks_swahili(client):
    page = client.get("/no-such-page", headers={"Accept-Language": "sw"}).get_data(as_text=True)
    assert "Ukurasa haukupatikana" in page and "Rudi kwenye vifurushi" in page


def test_operator_pages_stay_in_english(client, db):
    admin = make_user(db, role="admin")
    db.users.update_one({"username": admin.username}, {"$set": {"language": "sw"}})
    login(client, admin)
    page = client.get("/admin/", headers={"Accept-Language": "sw"}).get_data(as_text=True)
    assert '<html lang="en">' in page
    assert "Dashboard" in page


# ---------------------------------------------------------------- notices and e-mails, written away from a request

def test_notices_are_written_in_the_customers_language(db, app):
    from app.notices import service
    from app.payments import settlement
    from tests.support.factories import ended_outcome as ended, notices_of, paid_outcome as paid
    from tests.support.factories import prompted as make_payment
    from tests.support.factories import make_user as make_customer

    service.configure(None)
    user = make_customer(db, "wanjiku")
    db.users.update_one({"username": "wanjiku"}, {"$set": {"language": "sw"}})
    payment = make_payment(db, user)
    settlement.settle(db, payment["_id"], paid(payment, receipt="RKTSW00001"))
    failed = make_payment(db, user)
    from app.mpesa.result_codes import classify
    settlement.settle(db, failed["_id"], ended("cancelled", classify(1032).customer_message))
    by_kind = {n["kind"]: n for n in notices_of(db, "wanjiku")}
    received, cancelled = by_kind["payment_completed"], by_kind["payment_cancelled"]
    assert received["title"] == "Malipo yamepokelewa: maneno 10,000 yameongezwa"
    assert received["body"].startswith("Imethibitishwa. Tumepokea KES 100") and "RKTSW00001" in received["body"]
    assert received["link_label"] == "Tazama risiti yako"
    assert cancelled["title"] == "Malipo yameghairiwa"
    assert cancelled["body"].endswith("Ulighairi malipo kwenye simu yako. Hakuna pesa zilizotolewa.")
    # Without a stored choice: English, as before.
    other = make_payment(db, make_customer(db, "otieno", phone="254712345679"))
    settlement.settle(db, other["_id"], paid(other, receipt="RKTEN00001"))
    [english] = notices_of(db, "otieno")
    assert english["title"] == "Payment received: 10,000 words added"


def test_an_email_says_its_own_lines_in_the_language_of_its_notice(db, app):
    from app.notices import service
    from app.notices.mailer import build_message
    from app.payments import settlement
    from tests.support.factories import paid_outcome as paid, prompted as make_payment
    from tests.support.factories import make_user as make_customer

    settings = {"SMTP_HOST": "127.0.0.1", "PUBLIC_BASE_URL": "https://lipia.example",
                "MAIL_FROM": "Lipia <no-reply@lipia.example>"}
    service.configure(settings)
    try:
        user = make_customer(db, "wanjiku", email="wanjiku@example.com")
        db.users.update_one({"username": "wanjiku"}, {"$set": {"language": "sw"}})
        payment = make_payment(db, user)
        from app import ledger
        settlement.settle(db, payment["_id"], paid(payment, receipt="RKTSW00002"))
    finally:
        service.configure(None)
    [message] = list(db.outbox.find())
    assert message["language"] == "sw" and message["subject"].startswith("Malipo yamepokelewa")
    text = build_message(message, settings).get_content()
    assert "Tazama risiti yako: https://lipia.example/payments/" in text
    assert "Chagua barua pepe unazopokea kwenye wasifu wako: https://lipia.example/profile" in text
    assert "Kumbukumbu: " in text


def test_registration_keeps_the_language_the_visitor_read_the_site_in(app, client, db):
    app.config["WTF_CSRF_ENABLED"] = False
    response = client.post("/register", headers={"Accept-Language": "sw"}, data={
        "username": "wanjiku", "password": "correct horse battery", "confirm": "correct horse battery",
        "phone_number": "0712345678"})
    assert response.status_code == 302
    assert db.users.find_one({"username": "wanjiku"})["language"] == "sw"


# ---------------------------------------------------------------- pages and e-mails merged after the first catalog

SW = {"Accept-Language": "sw-KE,sw;q=0.9"}


def test_the_terms_and_refund_pages_speak_swahili(client):
    terms = client.get("/terms", headers=SW).get_data(as_text=True)
    assert '<html lang="sw">' in terms
    assert "Sheria na masharti ya mauzo" in terms and "Maneno yako hayaishi muda" in terms
    # The link inside a translated sentence still goes where it did.
    assert 'kwenye <a href="/refunds">sera ya kurejesha pesa</a>' in terms
    assert "Terms of sale" not in terms and "By paying you agree" not in terms
    refunds = client.get("/refunds", headers=SW).get_data(as_text=True)
    assert "Sera ya kurejesha pesa" in refunds and "<strong>siku " in refunds
    assert "How to ask" not in refunds


def test_the_forgot_password_page_and_its_errors_speak_swahili(app, client):
    app.config["WTF_CSRF_ENABLED"] = False
    page = client.get("/forgot", headers=SW).get_data(as_text=True)
    assert "Umesahau nenosiri lako?" in page and "Jina lako la mtumiaji au anwani ya barua pepe" in page
    assert "Nitumie kiungo" in page and "Forgot your password?" not in page
    refused = client.post("/forgot", headers=SW, data={"account": ""}).get_data(as_text=True)
    assert "Weka jina lako la mtumiaji au anwani yako ya barua pepe." in refused
    # A reset link that cannot be used says why in Swahili (the reason is marked, not formatted, in code).
    bad = client.get("/reset/not-a-token", headers=SW).get_data(as_text=True)
    assert "Kiungo hiki kimeshatumika, au hakijakamilika." in bad


def test_a_reset_email_is_written_in_the_accounts_language(app, db):
    from app.auth import recovery
    from app.notices.mailer import build_message
    user = make_user(db, "wanjiku", email="wanjiku@example.com")
    db.users.update_one({"username": "wanjiku"}, {"$set": {"language": "sw"}})
    make_user(db, "otieno", phone="254712345679", email="otieno@example.com")
    config = {**app.config, "PASSWORD_RESET_LINK_MINUTES": 30}
    assert recovery.send_links(db, config, user.username) == 1
    assert recovery.send_links(db, config, "otieno") == 1
    sw, en = db.outbox.find_one({"to": "wanjiku@example.com"}), db.outbox.find_one({"to": "otieno@example.com"})
    assert sw["language"] == "sw" and sw["subject"] == "Weka nenosiri jipya la Lipia"
    assert "akaunti ya Lipia wanjiku" in sw["text"] and "kwa dakika 30" in sw["text"]
    assert sw["link_label"] == "Weka nenosiri jipya"
    text = build_message(sw, {"PUBLIC_BASE_URL": "https://lipia.example", "MAIL_FROM": "Lipia <a@lipia.example>"}
                         ).get_content()
    assert "Weka nenosiri jipya: https://lipia.example/reset/" in text
    # Without a stored choice: English, as before.
    assert en["language"] == "en" and en["subject"] == "Set a new Lipia password"
    assert "It works once, for 30 minutes." in en["text"]


def test_password_rules_speak_the_customers_language_and_stay_english_elsewhere(app):
    from flask_babel import force_locale, gettext
    from app.auth import passwords
    assert passwords.problem("short") == "A password has at least 8 characters."
    with app.test_request_context(), force_locale("sw"):
        assert passwords.problem("short", translate=gettext) == "Nenosiri lina angalau herufi 8."
        assert passwords.problem("x" * 80, translate=gettext).startswith("Nenosiri hilo ni refu mno: baiti 72")
        assert passwords.problem("wanjiku2026", "wanjiku", translate=gettext).startswith("Nenosiri lisiwe")
