"""Accounts against an attacker: operator accounts, usernames, log-ins that can be ended,
password rules, log-in limits, GET that changes nothing, and the API key shown once."""
import datetime as dt
import re

import pytest

from app import users
from app.dbsetup import init_db
from app.users import get_by_username
from tests.support.factories import make_user

GOOD = "kahawa chungu 42"


def csrf_of(client, path):
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get(path).text).group(1)


@pytest.fixture(autouse=True)
def quick_bcrypt(monkeypatch):
    # Real bcrypt hashes, at the cheapest cost: these tests register and log in a lot.
    from app.extensions import bcrypt
    monkeypatch.setattr(bcrypt, "_log_rounds", 4)


@pytest.fixture
def csrf_app(app):
    app.config["WTF_CSRF_ENABLED"] = True
    return app


def register(client, username="Wanjiku.M", password=GOOD, phone="0712 345 678", **env):
    token = csrf_of(client, "/register")
    return client.post("/register", data={"csrf_token": token, "username": username, "password": password,
                                          "confirm": password, "phone_number": phone}, **env)


def login(client, username="Wanjiku.M", password=GOOD, remember=False, addr="10.0.0.1"):
    token = csrf_of(client, "/login")
    data = {"csrf_token": token, "username": username, "password": password}
    if remember:
        data["remember"] = "y"
    return client.post("/login", data=data, environ_base={"REMOTE_ADDR": addr})


def logout(client):
    return client.post("/logout", data={"csrf_token": csrf_of(client, "/")})


def cookie(client, name):
    found = client.get_cookie(name)
    return found.value if found else None


# ---------------------------------------------------------------- flask create-admin

def test_create_admin_never_promotes_an_existing_account_without_promote(app, db, monkeypatch):
    monkeypatch.delenv("LIPIA_ADMIN_PASSWORD", raising=False)
    stranger = make_user(db, "opsadmin", phone="254712345678")
    result = app.test_cli_runner().invoke(args=["create-admin", "OpsAdmin"])
    assert result.exit_code != 0
    assert "--promote" in result.output and "existing account" in result.output.lower()
    # It says whose account it is: name, created date, phone masked.
    assert "opsadmin" in result.output and "created 20" in result.output and "2547****5678" in result.output
    assert "254712345678" not in result.output
    assert not get_by_username(db, stranger.username).is_admin


def test_create_admin_with_a_password_for_an_existing_account_is_an_error(app, db, monkeypatch):
    make_user(db, "opsadmin")
    monkeypatch.setenv("LIPIA_ADMIN_PASSWORD", "operator chose this one")
    for args in (["create-admin", "opsadmin"], ["create-admin", "opsadmin", "--promote", "--yes"]):
        result = app.test_cli_runner().invoke(args=args)
        assert result.exit_code != 0 and "LIPIA_ADMIN_PASSWORD" in result.output
    assert not get_by_username(db, "opsadmin").is_admin


def test_promote_asks_and_says_whose_account_it_is(app, db, monkeypatch):
    monkeypatch.delenv("LIPIA_ADMIN_PASSWORD", raising=False)
    make_user(db, "wanjiku", phone="254712345678")
    refused = app.test_cli_runner().invoke(args=["create-admin", "WANJIKU", "--promote"], input="n\n")
    assert refused.exit_code != 0 and "2547****5678" in refused.output
    assert not get_by_username(db, "wanjiku").is_admin
    agreed = app.test_cli_runner().invoke(args=["create-admin", "WANJIKU", "--promote"], input="y\n")
    assert agreed.exit_code == 0 and "wanjiku is now an admin" in agreed.output
    assert get_by_username(db, "wanjiku").is_admin


def test_promote_of_nobody_and_weak_admin_passwords_are_refused(app, db, monkeypatch):
    monkeypatch.delenv("LIPIA_ADMIN_PASSWORD", raising=False)
    assert app.test_cli_runner().invoke(args=["create-admin", "nobody", "--promote", "--yes"]).exit_code != 0
    for weak in ("12345678", "boss-admin-1", "x" * 73):
        monkeypatch.setenv("LIPIA_ADMIN_PASSWORD", weak)
        result = app.test_cli_runner().invoke(args=["create-admin", "boss-admin"])
        assert result.exit_code != 0, weak
    assert db.users.count_documents({}) == 0


# ---------------------------------------------------------------- usernames without regard to case

def test_usernames_are_unique_without_regard_to_case_and_login_ignores_case(client, db):
    assert register(client).status_code == 302
    logout(client)
    again = register(client, username="wanjiku.m", phone="0799 999 999")
    assert again.status_code == 400 and "be used. Please choose another." in again.text
    assert db.users.count_documents({}) == 1
    assert login(client, username="WANJIKU.M").status_code == 302
    doc = db.users.find_one({})
    assert doc["username"] == "Wanjiku.M" and doc["username_key"] == "wanjiku.m"  # shown as typed


def test_init_db_gives_old_accounts_their_key_and_reports_clashes(app, db):
    from app.auth.service import hash_password
    hashed = hash_password(GOOD)
    db.users.drop()
    # Accounts from before the rule: no key, two names that differ only in case.
    for name in ("OpsAdmin", "opsadmin", "amina"):
        db.users.insert_one({"username": name, "password": hashed, "role": "customer", "words_remaining": 0,
                             "applied_keys": [], "created_at": dt.datetime.now(dt.timezone.utc)})
    reported = []
    init_db(db, report=reported.append)
    assert len(reported) == 1 and "OpsAdmin, opsadmin" in reported[0]
    assert db.users.find_one({"username": "amina"})["username_key"] == "amina"
    assert db.users.find_one({"username": "OpsAdmin"})["username_key"] == "opsadmin"
    assert "username_key" not in db.users.find_one({"username": "opsadmin"})
    init_db(db, report=reported.append)  # safe to repeat; the clash is reported again until fixed
    assert len(reported) == 2
    client = app.test_client()
    assert login(client, username="AMINA").status_code == 302
    logout(client)
    # The un-keyed clash still logs in by its exact name, and the keyed one by any case.
    assert login(client, username="opsadmin").status_code == 302
    assert "<strong>opsadmin</strong>" in client.get("/profile").text
    logout(client)
    assert login(client, username="OPSADMIN").status_code == 302
    assert "<strong>OpsAdmin</strong>" in client.get("/profile").text


def test_init_db_command_prints_the_clash(app, db):
    db.users.insert_many([{"username": n, "password": "x", "role": "customer"} for n in ("Kim", "kim")])
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0 and "Kim, kim" in result.output


# ---------------------------------------------------------------- log-ins that can be ended

def test_a_cookie_copied_before_logout_opens_nothing_after(app, client, db):
    register(client)
    stolen = cookie(client, "session")
    assert client.get("/profile").status_code == 200
    logout(client)
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    assert thief.get("/profile").status_code == 302  # to the log-in page


def test_the_remember_cookie_is_lax_http_only_30_days_and_dies_with_its_login(app, client, db):
    register(client)
    logout(client)
    response = login(client, remember=True)
    header = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("remember_token=")][0]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header
    expires = dt.datetime.strptime(re.search(r"Expires=([^;]+)", header).group(1), "%a, %d %b %Y %H:%M:%S GMT")
    days = (expires - dt.datetime.utcnow()).days
    assert 29 <= days <= 30
    remembered = cookie(client, "remember_token")
    fresh = app.test_client()
    fresh.set_cookie("remember_token", remembered)
    assert fresh.get("/profile").status_code == 200  # it works while the log-in is open
    # Not the same on every log-in: it names this log-in.
    assert remembered.split("|")[0] != get_by_username(db, "Wanjiku.M").id
    logout(client)
    thief = app.test_client()
    thief.set_cookie("remember_token", remembered)
    assert thief.get("/profile").status_code == 302


def test_the_remember_cookie_lifetime_comes_from_the_setting(app, client):
    app.config["REMEMBER_COOKIE_DURATION"] = dt.timedelta(days=3)
    register(client)
    logout(client)
    header = [h for h in login(client, remember=True).headers.getlist("Set-Cookie")
              if h.startswith("remember_token=")][0]
    expires = dt.datetime.strptime(re.search(r"Expires=([^;]+)", header).group(1), "%a, %d %b %Y %H:%M:%S GMT")
    assert 2 <= (expires - dt.datetime.utcnow()).days <= 3


def test_production_remember_cookie_is_secure():
    from app.config import flask_settings
    settings = flask_settings({"LIPIA_ENV": "production", "SECRET_KEY": "k" * 40, "REMEMBER_COOKIE_DAYS": 30})
    assert settings["REMEMBER_COOKIE_SECURE"] and settings["REMEMBER_COOKIE_SAMESITE"] == "Lax"
    assert settings["REMEMBER_COOKIE_DURATION"] == dt.timedelta(days=30)


def test_log_out_everywhere_ends_every_login(app, client, db):
    register(client)
    phone = app.test_client()
    assert login(phone, remember=True).status_code == 302
    phone_remember = cookie(phone, "remember_token")
    token = csrf_of(client, "/profile")
    assert client.post("/logout/everywhere", data={"csrf_token": token}).status_code == 302
    assert client.get("/profile").status_code == 302
    assert phone.get("/profile").status_code == 302
    thief = app.test_client()
    thief.set_cookie("remember_token", phone_remember)
    assert thief.get("/profile").status_code == 302
    assert db.users.find_one({})["sessions"] == []


def test_log_out_everywhere_needs_the_csrf_token(csrf_app, client, db):
    register(client)
    client.post("/logout/everywhere", data={"csrf_token": "forged"})
    assert client.get("/profile").status_code == 200


def test_a_password_change_ends_every_other_login_and_keeps_this_one(app, client, db):
    register(client)
    other = app.test_client()
    login(other, remember=True)
    other_remember = cookie(other, "remember_token")
    token = csrf_of(client, "/profile")
    response = client.post("/profile/password", data={"csrf_token": token, "current_password": GOOD,
                                                      "new_password": "mvua ya jioni 7", "confirm": "mvua ya jioni 7"})
    assert response.status_code == 302
    assert client.get("/profile").status_code == 200  # this browser carries on
    assert other.get("/profile").status_code == 302
    thief = app.test_client()
    thief.set_cookie("remember_token", other_remember)
    assert thief.get("/profile").status_code == 302
    logout(client)
    assert login(client, password=GOOD).status_code == 400
    assert login(client, password="mvua ya jioni 7").status_code == 302


@pytest.mark.parametrize("fields,message", [
    ({"current_password": "not it at all"}, "That is not your current password."),
    ({"new_password": "12345678", "confirm": "12345678"}, "most common passwords"),
    ({"new_password": "wanjiku.m-2024", "confirm": "wanjiku.m-2024"}, "must not be your username"),
    ({"new_password": "ü" * 40, "confirm": "ü" * 40}, "at most 72 bytes"),
    ({"confirm": "something else"}, "The two passwords you typed were different."),
])
def test_a_bad_password_change_says_why_and_changes_nothing(client, db, fields, message):
    register(client)
    before = db.users.find_one({})["password"]
    token = csrf_of(client, "/profile")
    data = {"csrf_token": token, "current_password": GOOD, "new_password": "mvua ya jioni 7",
            "confirm": "mvua ya jioni 7", **fields}
    response = client.post("/profile/password", data=data)
    assert response.status_code == 400 and message in response.text
    assert db.users.find_one({})["password"] == before
    assert client.get("/profile").status_code == 200


def test_users_set_password_revokes_sessions_for_any_caller(app, client, db):
    """An operator's reset (or any future one) goes through users.set_password."""
    register(client)
    users.set_password(db, get_by_username(db, "wanjiku.m").id, "$2b$12$" + "y" * 53)
    assert client.get("/profile").status_code == 302


def test_log_ins_per_account_are_bounded(app, db):
    register(app.test_client())
    for _ in range(users.SESSIONS_KEPT + 5):
        login(app.test_client())
    assert len(db.users.find_one({})["sessions"]) == users.SESSIONS_KEPT


def test_a_bare_user_id_in_a_session_is_not_a_login(app, db):
    user = make_user(db)
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = user.id
    assert client.get("/profile").status_code == 302


# ---------------------------------------------------------------- password rules

@pytest.mark.parametrize("password,message", [
    ("12345678", "most common passwords"),
    ("Password1", "most common passwords"),
    ("Wanjiku.M", "must not be your username"),
    ("my wanjiku.m pass", "must not be your username"),
    ("x" * 73, "at most 72 bytes"),
    ("😀" * 19, "at most 72 bytes"),  # 19 characters, 76 bytes
    ("x" * 500, "at most 72 bytes"),
])
def test_registration_refuses_weak_or_unhashable_passwords_with_words(client, db, password, message):
    response = register(client, password=password)
    assert response.status_code == 400 and message in response.text
    assert db.users.count_documents({}) == 0


def test_the_common_password_list_is_large_and_bundled():
    from app.auth import passwords
    assert len(passwords.common_passwords()) >= 10_000
    assert passwords.COMMON_LIST.exists()


@pytest.mark.parametrize("password", ["x" * 73, "ü" * 100, "y" * 128])
def test_a_long_password_at_login_just_fails(client, db, password):
    register(client)
    logout(client)
    response = login(client, password=password)
    assert response.status_code == 400 and "Incorrect username or password." in response.text


# ---------------------------------------------------------------- log-in limits

def test_a_stranger_cannot_lock_the_owner_out(app, client, db):
    app.config["LOGIN_RATE_LIMIT"] = "3 per minute"
    register(client)
    logout(client)
    stranger = app.test_client()
    codes = [login(stranger, password="wrong guess", addr="10.6.6.6").status_code for _ in range(5)]
    assert codes[:3] == [400, 400, 400] and codes[3:] == [303, 303]
    refused = stranger.get("/login")
    assert "Too many attempts. Please wait" in refused.text  # in words, on the form page
    assert login(client, addr="10.0.0.1").status_code == 302  # the owner, from their own address


def test_one_account_has_a_higher_ceiling_across_addresses(app, client, db):
    app.config["LOGIN_RATE_LIMIT"] = "3 per minute"
    app.config["LOGIN_ACCOUNT_RATE_LIMIT"] = "5 per minute"
    register(client)
    logout(client)
    codes = [login(app.test_client(), password="wrong guess", addr=f"10.0.1.{i}").status_code for i in range(7)]
    assert codes == [400] * 5 + [303] * 2


def test_one_address_is_limited_across_accounts(app, db):
    app.config["LOGIN_ADDRESS_RATE_LIMIT"] = "4 per minute"
    client = app.test_client()
    codes = [login(client, username=f"user{i}", password="guess guess", addr="10.9.9.9").status_code
             for i in range(6)]
    assert codes == [400] * 4 + [303] * 2
    response = client.post("/login", data={"csrf_token": csrf_of(client, "/login"), "username": "x",
                                           "password": "guess guess"}, environ_base={"REMOTE_ADDR": "10.9.9.9"},
                           follow_redirects=True)
    assert response.status_code == 200 and "Too many attempts" in response.text


def test_a_limit_under_api_answers_json(app, client, db):
    app.config["API_RATE_LIMIT"] = "2 per minute"
    codes = [client.get("/api/v1/balance", headers={"Authorization": "Bearer lip_nope"}) for _ in range(3)]
    assert [c.status_code for c in codes] == [401, 401, 429]
    body = codes[-1].json["error"]
    assert body["code"] == "rate_limited" and "Too many attempts" in body["message"]
    assert int(codes[-1].headers["Retry-After"]) > 0


# ---------------------------------------------------------------- GET changes nothing; the key shown once

def test_the_api_key_is_shown_once_after_a_redirect_and_never_cached(client, db):
    register(client)
    token = csrf_of(client, "/profile/api-key")
    created = client.post("/profile/api-key", data={"csrf_token": token})
    assert created.status_code == 303 and created.headers["Location"].endswith("/profile/api-key")
    page = client.get("/profile/api-key")
    assert page.headers["Cache-Control"] == "no-store"
    key = re.search(r'id="new-api-key" readonly value="(lip_[^"]+)"', page.text).group(1)
    stored = db.users.find_one({})["api_key_hash"]
    assert users.hash_api_key(key) == stored
    reload = client.get("/profile/api-key")
    assert key not in reload.text and "lip_" in reload.text  # the hint only
    assert db.users.find_one({})["api_key_hash"] == stored  # a reload rotated nothing
    assert client.get("/api/v1/balance", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_replacing_a_key_needs_confirmation(client, db):
    register(client)
    client.post("/profile/api-key", data={"csrf_token": csrf_of(client, "/profile/api-key")})
    client.get("/profile/api-key")
    stored = db.users.find_one({})["api_key_hash"]
    page = client.get("/profile/api-key").text
    assert "Replace my key" in page and 'name="confirm"' in page
    unconfirmed = client.post("/profile/api-key", data={"csrf_token": csrf_of(client, "/profile/api-key")},
                              follow_redirects=True)
    assert "Tick the box to confirm" in unconfirmed.text
    assert db.users.find_one({})["api_key_hash"] == stored
    client.post("/profile/api-key", data={"csrf_token": csrf_of(client, "/profile/api-key"), "confirm": "y"})
    assert db.users.find_one({})["api_key_hash"] != stored


def test_a_get_of_the_key_page_never_rotates(client, db):
    register(client)
    for _ in range(3):
        client.get("/profile/api-key")
    assert "api_key_hash" not in db.users.find_one({})


def test_an_operators_reset_ends_every_login_and_is_audited(app, client, db):
    register(client)
    phone = app.test_client()
    login(phone, remember=True)
    remembered = cookie(phone, "remember_token")
    result = app.test_cli_runner().invoke(args=["reset-password", "WANJIKU.M", "--reason", "ticket 42"],
                                          input="chai ya tangawizi\nchai ya tangawizi\n")
    assert result.exit_code == 0, result.output
    assert "2547****5678" in result.output
    assert client.get("/profile").status_code == 302 and phone.get("/profile").status_code == 302
    thief = app.test_client()
    thief.set_cookie("remember_token", remembered)
    assert thief.get("/profile").status_code == 302
    assert login(app.test_client(), password="chai ya tangawizi").status_code == 302
    entry = db.audit_log.find_one({"action": "reset_password"})
    assert entry["target"]["id"] == "Wanjiku.M" and entry["reason"] == "ticket 42"


def test_an_operators_reset_refuses_a_weak_password(app, db):
    make_user(db, "amina")
    before = db.users.find_one({})["password"]
    result = app.test_cli_runner().invoke(args=["reset-password", "amina", "--reason", "x"],
                                          input="12345678\n12345678\n")
    assert result.exit_code != 0 and "most common" in result.output
    assert db.users.find_one({})["password"] == before


def test_a_checkout_limit_answers_in_words_on_the_checkout_page(app, client, db):
    app.config["PAYMENT_RATE_LIMIT"] = "1 per minute"
    register(client)
    posts = [client.post("/checkout/basic", data={"csrf_token": csrf_of(client, "/checkout/basic"),
                                                  "phone_number": "0712 345 678"}) for _ in range(2)]
    assert posts[1].status_code == 303 and posts[1].headers["Location"] == "/checkout/basic"
    page = client.get(posts[1].headers["Location"])
    assert page.status_code == 200 and "Too many attempts. Please wait" in page.text


def test_a_new_key_not_shown_in_time_is_not_shown_later(client, db, monkeypatch):
    import app.auth.views as views
    register(client)
    client.post("/profile/api-key", data={"csrf_token": csrf_of(client, "/profile/api-key")})
    later = views.time.time() + views.NEW_KEY_SHOWN_FOR_SECONDS + 1
    monkeypatch.setattr(views.time, "time", lambda: later)
    assert 'id="new-api-key"' not in client.get("/profile/api-key").text
