"""Account recovery: an e-mail at sign-up, "forgot password" links (signed, single-use,
short-lived) sent through the outbox, an operator's one-time link, and what a reset ends."""
import datetime as dt
import logging
import re

import pytest

from app import users
from app.auth import recovery
from app.auth.service import hash_password
from tests.support.factories import login as login_as, make_user
from tests.unit.test_account_security import GOOD, csrf_of, login

NEW = "mvua ya jioni 77"


@pytest.fixture(autouse=True)
def quick_bcrypt(monkeypatch):
    from app.extensions import bcrypt
    monkeypatch.setattr(bcrypt, "_log_rounds", 4)


@pytest.fixture
def mail_on(app):
    app.config["SMTP_HOST"] = "127.0.0.1"
    return app


def register(client, username="Wanjiku.M", phone="0712 345 678", email=""):
    return client.post("/register", data={"csrf_token": csrf_of(client, "/register"), "username": username,
                                          "password": GOOD, "confirm": GOOD, "phone_number": phone, "email": email})


def customer(db, name="Wanjiku.M", email="wanjiku@example.com"):
    return users.create_user(db, name, hash_password(GOOD), "254712345678", email=email)


def forgot(client, account, addr="10.0.0.1"):
    answer = client.post("/forgot", data={"csrf_token": csrf_of(client, "/forgot"), "account": account},
                         environ_base={"REMOTE_ADDR": addr})
    answer.close()  # as a WSGI server does once the answer is sent: the e-mail is queued then
    return answer


def mailed_links(db, to=None):
    query = {"category": "account"} | ({"to": to} if to else {})
    return [m["link"] for m in db.outbox.find(query).sort("created_at", 1)]


def set_password(client, password, confirm=None):
    # The CSRF token of the session, from a page that has a form whatever state the link is in
    # (none when a test turned CSRF off).
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login").text)
    return client.post("/reset", data={"csrf_token": token.group(1) if token else "", "new_password": password,
                                       "confirm": password if confirm is None else confirm})


# ---------------------------------------------------------------- e-mail at sign-up

def test_registration_keeps_an_optional_email_lower_cased_and_says_why(client, db):
    page = client.get("/register").text
    assert "E-mail (optional)" in page and "if you forget your password" in page
    assert register(client, email="Wanjiku@Example.COM ").status_code == 302
    assert db.users.find_one({"username": "Wanjiku.M"})["email"] == "wanjiku@example.com"


def test_registration_without_email_stores_none_and_a_bad_one_changes_nothing(client, db):
    bad = register(client, email="not an address")
    assert bad.status_code == 400 and "Enter a valid e-mail address" in bad.text
    assert db.users.count_documents({}) == 0
    assert register(client).status_code == 302
    assert "email" not in db.users.find_one({})


def test_an_address_already_on_an_account_is_accepted_so_sign_up_reveals_nothing(app, db):
    assert register(app.test_client(), username="amina", email="family@example.com").status_code == 302
    assert register(app.test_client(), username="baraka", email="FAMILY@example.com",
                     phone="0722 000 111").status_code == 302
    assert db.users.count_documents({"email": "family@example.com"}) == 2


# ---------------------------------------------------------------- forgot password: no enumeration

def test_forgot_answers_alike_for_known_unknown_and_email_less_accounts(client, db, mail_on):
    customer(db)
    make_user(db, "no_email_person")
    answers = [forgot(client, typed, addr=f"10.0.1.{i}") for i, typed in enumerate(
        ["WANJIKU.M", "Wanjiku@Example.com", "nobody-here", "nobody@example.com", "no_email_person"])]
    assert {(a.status_code, a.headers["Location"]) for a in answers} == {(303, "/forgot/sent")}
    assert {a.get_data() for a in answers} == {answers[0].get_data()}  # the same answer, byte for byte
    sent_page = client.get("/forgot/sent").text
    assert "If an account matches" in sent_page and "30 minutes" in sent_page
    # Two e-mails, both to the one account that has an address: by username and by address.
    assert db.outbox.count_documents({}) == 2
    assert {m["to"] for m in db.outbox.find()} == {"wanjiku@example.com"}
    message = db.outbox.find_one()
    assert message["subject"] == "Set a new Lipia password" and "ignore this e-mail" in message["text"]
    assert re.fullmatch(r"/reset/[\w.-]+", message["link"])


def test_the_login_page_links_to_forgot_and_forgot_says_when_email_is_off(client, db):
    assert 'href="/forgot"' in client.get("/login").text
    customer(db)
    assert "cannot send e-mail" in client.get("/forgot").text
    assert forgot(client, "wanjiku.m").headers["Location"] == "/forgot/sent"
    assert db.outbox.count_documents({}) == 0
    assert "no link was sent" in client.get("/forgot/sent").text


def test_forgot_is_limited_per_account_typed_in_words_not_a_bare_429(client, db, mail_on):
    customer(db)
    for i in range(3):  # PASSWORD_RESET_RATE_LIMIT: 3 per 15 minutes, from any address
        assert forgot(client, "wanjiku.m", addr=f"10.0.2.{i}").status_code == 303
    refused = forgot(client, "Wanjiku.M", addr="10.0.2.9")
    assert refused.status_code == 303 and refused.headers["Location"] == "/forgot"
    page = client.get("/forgot")
    assert page.status_code == 200 and "Too many attempts. Please wait" in page.text
    assert db.outbox.count_documents({}) == 3
    # Another account is not held up by it.
    assert forgot(client, "someone.else", addr="10.0.2.9").headers["Location"] == "/forgot/sent"


def test_the_email_is_queued_only_after_the_answer_is_sent(client, db, mail_on):
    customer(db)
    answer = client.post("/forgot", data={"csrf_token": csrf_of(client, "/forgot"), "account": "wanjiku.m"})
    assert answer.status_code == 303 and db.outbox.count_documents({}) == 0
    answer.close()
    assert db.outbox.count_documents({}) == 1


def test_forgot_refuses_bad_input_with_words_and_sends_nothing(client, db, mail_on):
    customer(db)
    for typed in ("", "x" * 255):
        answer = forgot(client, typed)
        assert answer.status_code == 400 and ("Enter your username" in answer.text or "too long" in answer.text)
    assert db.outbox.count_documents({}) == 0


# ---------------------------------------------------------------- token rules

def test_a_link_works_for_its_lifetime_then_expires(app, db):
    user = customer(db)
    link = recovery.issue(db, app.config, user, recovery.BY_EMAIL)
    token = link.path.removeprefix("/reset/")
    now = dt.datetime.now(dt.timezone.utc)
    assert recovery.read(db, app.config, token)[0].username == "Wanjiku.M"
    assert recovery.read(db, app.config, token, now + dt.timedelta(minutes=29))[2] == recovery.BY_EMAIL
    with pytest.raises(recovery.LinkExpired):
        recovery.read(db, app.config, token, now + dt.timedelta(minutes=31))
    with pytest.raises(recovery.LinkExpired):
        recovery.complete(db, app.config, token, NEW, now + dt.timedelta(minutes=31))
    assert link.valid_until - now < dt.timedelta(minutes=30, seconds=5)


def test_an_operators_link_lives_longer_but_not_for_ever(app, db):
    token = recovery.issue(db, app.config, customer(db), recovery.BY_OPERATOR).path.removeprefix("/reset/")
    now = dt.datetime.now(dt.timezone.utc)
    assert recovery.read(db, app.config, token, now + dt.timedelta(hours=23))
    with pytest.raises(recovery.LinkExpired):
        recovery.read(db, app.config, token, now + dt.timedelta(hours=25))


def test_a_link_works_once_even_when_issued_alongside_others(app, db):
    user = customer(db)
    first, second = (recovery.issue(db, app.config, user, recovery.BY_EMAIL).path.removeprefix("/reset/")
                     for _ in range(2))
    recovery.complete(db, app.config, first, NEW)
    for used in (first, second):  # the reset ended every link issued before it
        with pytest.raises(recovery.LinkUnusable):
            recovery.complete(db, app.config, used, "another fine phrase 9")
    from app.auth.service import authenticate
    assert authenticate(db, "wanjiku.m", NEW) and not authenticate(db, "wanjiku.m", GOOD)
    # A new link after the reset works again.
    again = recovery.issue(db, app.config, user, recovery.BY_EMAIL).path.removeprefix("/reset/")
    assert recovery.read(db, app.config, again)


def test_a_password_change_ends_every_link(app, db):
    user = customer(db)
    token = recovery.issue(db, app.config, user, recovery.BY_EMAIL).path.removeprefix("/reset/")
    users.set_password(db, user.id, hash_password("changed it myself 3"))
    with pytest.raises(recovery.LinkUnusable):
        recovery.read(db, app.config, token)


@pytest.mark.parametrize("spoil", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),        # signature
    lambda t: t.replace(t.split(".")[1][:6], "eyJ1Ij", 1),              # payload
    lambda t: t[:40],                                                   # cut short
    lambda t: "",
    lambda t: t + "x" * 400,                                            # longer than any real token
])
def test_a_tampered_link_is_refused(app, db, spoil):
    token = recovery.issue(db, app.config, customer(db), recovery.BY_EMAIL).path.removeprefix("/reset/")
    with pytest.raises(recovery.LinkUnusable):
        recovery.read(db, app.config, spoil(token))


def test_a_token_signed_with_another_key_or_for_another_purpose_is_refused(app, db):
    from itsdangerous import URLSafeTimedSerializer
    user = customer(db)
    nonce = users.reset_nonce(db, user.id)
    payload = {"u": user.id, "n": nonce, "k": recovery.BY_EMAIL}
    for token in (URLSafeTimedSerializer("another secret key", salt=recovery.SALT).dumps(payload),
                  URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="itsdangerous").dumps(payload),
                  URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=recovery.SALT).dumps(
                      {**payload, "k": "forever"})):
        with pytest.raises(recovery.LinkUnusable):
            recovery.read(db, app.config, token)
    good = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=recovery.SALT).dumps(payload)
    assert recovery.read(db, app.config, good)  # the same payload, properly signed: the check above is real


# ---------------------------------------------------------------- the reset page

def test_reset_sets_the_password_ends_every_session_and_is_audited(app, client, db, mail_on, caplog):
    user = customer(db)
    elsewhere = app.test_client()
    assert login(elsewhere, username="wanjiku.m").status_code == 302
    assert elsewhere.get("/profile").status_code == 200
    forgot(client, "wanjiku.m")
    [path] = mailed_links(db)
    token = path.removeprefix("/reset/")

    with caplog.at_level(logging.INFO, logger="lipia"):
        opened = client.get(path)
        assert opened.status_code == 303 and opened.headers["Location"] == "/reset"
        page = client.get("/reset")
        assert page.status_code == 200 and "Wanjiku.M" in page.text and page.headers["Cache-Control"] == "no-store"
        weak = set_password(client, "12345678")
        assert weak.status_code == 400 and "most common passwords" in weak.text
        mismatch = set_password(client, NEW, "something else 1")
        assert mismatch.status_code == 400 and "The two passwords you typed were different." in mismatch.text
        done = set_password(client, NEW)
        assert done.status_code == 303 and done.headers["Location"] == "/login"
        assert "Your password is changed" in client.get("/login").text

    # The other browser is logged out; the old password is gone; the new one logs in.
    assert elsewhere.get("/profile").status_code == 302
    assert "Incorrect username or password" in login(app.test_client(), username="WANJIKU.M").text
    assert login(app.test_client(), username="WANJIKU.M", password=NEW).status_code == 302
    assert db.users.find_one({"_id": users.ObjectId(user.id)})["sessions"][-1:]  # only the new log-in

    [entry] = list(db.audit_log.find({"action": "password_reset"}))
    assert entry["actor"] == "Wanjiku.M" and entry["target"] == {"type": "user", "id": "Wanjiku.M"}
    assert "e-mailed reset link" in entry["reason"]
    # The token is never written to the log or the audit log.
    assert token not in caplog.text and "/reset/***" in caplog.text
    assert all(token not in str(doc) for doc in db.audit_log.find())

    # The same link again: refused in words, with a way to ask for a new one.
    again = app.test_client().get(path)
    assert again.status_code == 400 and "already been used" in again.text and 'action="/forgot"' in again.text


def test_an_expired_link_says_so_and_the_reset_page_needs_a_link(app, client, db, monkeypatch):
    token = recovery.issue(db, app.config, customer(db), recovery.BY_EMAIL).path.removeprefix("/reset/")
    app.config["PASSWORD_RESET_LINK_MINUTES"] = 0  # every e-mailed link is past its lifetime
    answer = client.get(f"/reset/{token}")
    assert answer.status_code == 410 and "This link has expired" in answer.text
    assert client.get("/reset").status_code == 400  # no link in this session
    app.config["PASSWORD_RESET_LINK_MINUTES"] = 30
    assert client.get(f"/reset/{token}").status_code == 303


def test_a_link_that_expires_while_the_form_is_open_changes_nothing(app, client, db):
    user = customer(db)
    token = recovery.issue(db, app.config, user, recovery.BY_EMAIL).path.removeprefix("/reset/")
    client.get(f"/reset/{token}")
    before = db.users.find_one({"_id": users.ObjectId(user.id)})["password"]
    app.config["PASSWORD_RESET_LINK_MINUTES"] = 0
    assert set_password(client, NEW).status_code == 410
    assert db.users.find_one({"_id": users.ObjectId(user.id)})["password"] == before


# ---------------------------------------------------------------- an operator's link

def test_an_operator_issues_a_one_time_link_shown_once_and_audited(app, client, db, as_admin, admin, caplog):
    make_user(db, "mama_mboga")  # no e-mail address
    page = as_admin.get("/admin/users/mama_mboga")
    assert "Make a reset link" in page.text
    assert as_admin.post("/admin/users/mama_mboga/reset-link", data={"reset-reason": ""}).status_code == 400
    with caplog.at_level(logging.INFO, logger="lipia"):
        posted = as_admin.post("/admin/users/mama_mboga/reset-link", data={"reset-reason": "called in, ticket 7"})
        assert posted.status_code == 303 and posted.headers["Location"] == "/admin/users/mama_mboga"
        issued = as_admin.get("/admin/users/mama_mboga")
    assert issued.status_code == 200 and issued.headers["Cache-Control"] == "no-store"
    url = re.search(r'id="reset-link"[^>]*>(http://[^<]+/reset/[^<]+)</textarea>', issued.text).group(1)
    token = url.rsplit("/", 1)[1]
    assert token not in as_admin.get("/admin/users/mama_mboga").text  # shown once only
    [entry] = list(db.audit_log.find({"action": "reset_link"}))
    assert entry["actor"] == admin.username and entry["target"]["id"] == "mama_mboga"
    assert entry["reason"] == "called in, ticket 7" and entry["at"]
    assert token not in str(entry) and token not in caplog.text

    # The customer uses it from their own browser.
    customer_browser = app.test_client()
    assert customer_browser.get(url.removeprefix("http://127.0.0.1:5000")).status_code == 303
    assert set_password(customer_browser, NEW).status_code == 303
    assert "operator" in db.audit_log.find_one({"action": "password_reset"})["reason"]


def test_operators_links_are_for_customers_and_operators_only(app, db, as_admin):
    other_admin = make_user(db, "ops_other", role="admin")
    refused = as_admin.post(f"/admin/users/{other_admin.username}/reset-link", data={"reset-reason": "why not"})
    assert refused.status_code == 400 and "flask reset-password" in refused.text
    assert db.audit_log.count_documents({}) == 0 and "reset_nonce" not in db.users.find_one({"role": "admin",
                                                                                             "username": "ops_other"})
    target = make_user(db, "kamau")
    stranger = app.test_client()
    login_as(stranger, make_user(db))
    assert stranger.post("/admin/users/kamau/reset-link", data={"reset-reason": "let me in"}).status_code == 403
    assert "reset_nonce" not in db.users.find_one({"_id": users.ObjectId(target.id)})


def test_operators_are_never_reset_by_link_whatever_address_they_share(app, client, db, mail_on):
    operator = users.create_user(db, "ops.lead", hash_password(GOOD), None, role="admin", email="shared@example.com")
    before = users.password_hash_of(db, "ops.lead")
    promoted = customer(db, "Later.Ops", email="later@example.com")
    early = recovery.issue(db, app.config, promoted, recovery.BY_OPERATOR)  # issued while a customer
    db.users.update_one({"_id": users.ObjectId(promoted.id)}, {"$set": {"role": "admin"}})
    assert forgot(client, "shared@example.com").status_code == 303
    assert mailed_links(db, "shared@example.com") == []  # the same answer, and nothing sent
    for token in (early.path.removeprefix("/reset/"),
                  recovery.issue(db, app.config, operator, recovery.BY_EMAIL).path.removeprefix("/reset/")):
        with pytest.raises(recovery.LinkUnusable):
            recovery.complete(db, app.config, token, NEW)
    assert users.password_hash_of(db, "ops.lead") == before
    assert db.users.find_one({"username": "Later.Ops"}).get("password_changed_at") is None


def test_a_reset_retires_the_api_key_someone_else_may_hold(app, db):
    user = customer(db)
    key = users.rotate_api_key(db, user.id)
    assert users.get_by_api_key(db, key) is not None
    link = recovery.issue(db, app.config, user, recovery.BY_EMAIL)
    recovery.complete(db, app.config, link.path.removeprefix("/reset/"), NEW)
    assert users.get_by_api_key(db, key) is None
