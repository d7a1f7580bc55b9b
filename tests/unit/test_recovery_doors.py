"""Recovery closes every door: each way of taking an account back (a password change, "Log out
everywhere", an operator's reset, a reset by link) retires the API key an intruder may have
made, says so and is audited; logging out empties the session cookie; and the limits meant
per customer count per account, not per log-in."""
import re

import pytest
from flask.sessions import SecureCookieSessionInterface

from app import users
from app.auth import recovery
from app.auth.service import hash_password
from app.payments import checkout, records, settlement
from app.payments.outcomes import from_result
from app.plans.service import get_plan
from tests.unit.test_account_security import GOOD, cookie, csrf_of, login, logout, register

NEW = "mvua ya jioni 77"
# What the customer is told when a key is retired, in each language.
RETIRED_EN = "Your API key no longer works"
RETIRED_SW = "Ufunguo wako wa API haufanyi kazi tena"


@pytest.fixture(autouse=True)
def quick_bcrypt(monkeypatch):
    from app.extensions import bcrypt
    monkeypatch.setattr(bcrypt, "_log_rounds", 4)


def api_status(client, key):
    return client.get("/api/v1/balance", headers={"Authorization": f"Bearer {key}"}).status_code


def owner(db, language=None):
    user = users.get_by_username(db, "Wanjiku.M")
    if language:
        db.users.update_one({"_id": users.ObjectId(user.id)}, {"$set": {"language": language}})
    return user


def intruders_key(db):
    """The key a stranger who got into the account made for themselves."""
    return users.rotate_api_key(db, owner(db).id)


def change_password(client):
    return client.post("/profile/password", data={"csrf_token": csrf_of(client, "/profile"), "current_password": GOOD,
                                                  "new_password": NEW, "confirm": NEW}, follow_redirects=True)


def log_out_everywhere(client):
    return client.post("/logout/everywhere", data={"csrf_token": csrf_of(client, "/profile")}, follow_redirects=True)


def operator_reset(app):
    return app.test_cli_runner().invoke(args=["reset-password", "wanjiku.m", "--reason", "ticket 42"],
                                        input=f"{NEW}\n{NEW}\n")


def reset_by_link(app, client, db):
    link = recovery.issue(db, app.config, owner(db), recovery.BY_OPERATOR)
    client.get(link.path)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/reset").text).group(1)
    return client.post("/reset", data={"csrf_token": token, "new_password": NEW, "confirm": NEW},
                       follow_redirects=True)


def session_of(app, client) -> dict:
    """The Flask session as the browser's cookie carries it (signed, not encrypted: anyone holding
    the cookie can read it)."""
    raw = cookie(client, "session")
    if not raw:
        return {}
    return dict(SecureCookieSessionInterface().get_signing_serializer(app).loads(raw))


# ---------------------------------------------------------------- every recovery retires the API key

@pytest.mark.parametrize("language,told", [("en", RETIRED_EN), ("sw", RETIRED_SW)])
def test_a_password_change_retires_the_api_key_says_so_and_is_audited(app, client, db, language, told):
    register(client)
    key = intruders_key(db)
    owner(db, language)
    assert api_status(app.test_client(), key) == 200
    page = change_password(client)
    assert page.status_code == 200 and told in page.text
    assert api_status(app.test_client(), key) == 401
    doc = db.users.find_one({})
    assert not {"api_key_hash", "api_key_hint", "api_key_created_at"} & set(doc)
    [entry] = db.audit_log.find({"action": "password_change"})
    assert entry["actor"] == "Wanjiku.M" and entry["target"] == {"type": "user", "id": "Wanjiku.M"}
    assert "API key retired" in entry["result"]


@pytest.mark.parametrize("language,told", [("en", RETIRED_EN), ("sw", RETIRED_SW)])
def test_log_out_everywhere_retires_the_api_key_says_so_and_is_audited(app, client, db, language, told):
    register(client)
    key = intruders_key(db)
    owner(db, language)
    page = log_out_everywhere(client)
    assert page.status_code == 200 and told in page.text
    assert api_status(app.test_client(), key) == 401
    [entry] = db.audit_log.find({"action": "log_out_everywhere"})
    assert entry["actor"] == "Wanjiku.M" and "API key retired" in entry["result"]


def test_an_operators_reset_retires_the_api_key_says_so_and_is_audited(app, client, db):
    register(client)
    key = intruders_key(db)
    result = operator_reset(app)
    assert result.exit_code == 0, result.output
    assert "API key" in result.output and "retired" in result.output
    assert api_status(app.test_client(), key) == 401
    [entry] = db.audit_log.find({"action": "reset_password"})
    assert "API key retired" in entry["result"]


@pytest.mark.parametrize("language,told", [("en", RETIRED_EN), ("sw", RETIRED_SW)])
def test_a_reset_by_link_retires_the_api_key_and_says_so(app, client, db, language, told):
    register(client)
    logout(client)
    key = intruders_key(db)
    client.set_cookie("lang", language)  # the reset page speaks the browser's language: nobody is logged in
    page = reset_by_link(app, client, db)
    assert page.status_code == 200 and told in page.text
    assert api_status(app.test_client(), key) == 401
    [entry] = db.audit_log.find({"action": "password_reset"})
    assert "API key retired" in entry["result"]


@pytest.mark.parametrize("recover", ["password", "everywhere", "operator", "link"])
def test_without_a_key_nobody_is_told_of_one(app, client, db, recover):
    register(client)
    if recover == "password":
        text = change_password(client).text
    elif recover == "everywhere":
        text = log_out_everywhere(client).text
    elif recover == "operator":
        text = operator_reset(app).output
    else:
        logout(client)
        text = reset_by_link(app, client, db).text
    assert RETIRED_EN not in text and "retired" not in text
    assert "API key retired" not in db.audit_log.find_one({})["result"]


@pytest.mark.parametrize("recover", [
    lambda db, user: users.set_password(db, user.id, hash_password(NEW)),
    lambda db, user: users.close_all_sessions(db, user.id),
    lambda db, user: users.reset_password(db, user.id, users.reset_nonce(db, user.id), hash_password(NEW)),
], ids=["set_password", "close_all_sessions", "reset_password"])
def test_every_recovery_write_ends_every_log_in_and_retires_the_key_in_one_write(app, db, recover):
    user = users.create_user(db, "Wanjiku.M", hash_password(GOOD), "254712345678")
    users.open_session(db, user)
    key = users.rotate_api_key(db, user.id)
    shut = recover(db, user)
    assert shut.username == "Wanjiku.M" and shut.api_key_retired
    assert users.get_by_api_key(db, key) is None
    assert db.users.find_one({})["sessions"] == []
    assert recover(db, user) is None or not recover(db, user).api_key_retired  # nothing left to retire


def test_a_new_key_made_after_recovery_works(app, client, db):
    register(client)
    intruders_key(db)
    change_password(client)
    client.post("/profile/api-key", data={"csrf_token": csrf_of(client, "/profile/api-key")})
    key = re.search(r'id="new-api-key" readonly value="(lip_[^"]+)"', client.get("/profile/api-key").text).group(1)
    assert api_status(app.test_client(), key) == 200


def test_the_profile_warns_before_each_button_that_the_key_stops_working(app, client, db):
    register(client)
    assert "switches off your API key" not in client.get("/profile").text  # no key, nothing to warn of
    intruders_key(db)
    assert client.get("/profile").text.count("switches off your API key") == 2


# ---------------------------------------------------------------- logout empties the session

def test_logout_leaves_no_new_api_key_in_the_cookie(app, client, db):
    register(client)
    # The key is made, the page that shows it is never opened (a lost connection, a closed tab).
    client.post("/profile/api-key", data={"csrf_token": csrf_of(client, "/profile/api-key")})
    assert "new_api_key" in session_of(app, client)
    logout(client)
    carried = session_of(app, client)
    assert "new_api_key" not in carried and "_user_id" not in carried
    assert "You are logged out." in client.get("/").text  # the goodbye survives the clearing


def test_logout_leaves_no_reset_token_in_the_cookie(app, client, db):
    register(client)
    link = recovery.issue(db, app.config, owner(db), recovery.BY_OPERATOR)
    assert client.get(link.path).status_code == 303
    assert session_of(app, client).get("reset_token")
    logout(client)
    assert "reset_token" not in session_of(app, client)
    assert client.get("/reset").status_code == 400  # the link is no longer at hand in this browser


def test_log_out_everywhere_leaves_nothing_in_the_cookie(app, client, db):
    register(client)
    client.post("/profile/api-key", data={"csrf_token": csrf_of(client, "/profile/api-key")})
    log_out_everywhere(client)
    assert not {"new_api_key", "_user_id"} & set(session_of(app, client))


def test_logout_still_ends_the_remember_cookie_and_keeps_the_language(app, client, db):
    register(client)
    logout(client)
    login(client, remember=True)
    owner(db, "sw")  # chosen on another device: this browser has no language cookie
    logged_out = logout(client)
    assert any(h.startswith("remember_token=;") for h in logged_out.headers.getlist("Set-Cookie"))
    assert "Umetoka." in client.get("/").text and '<html lang="sw"' in client.get("/").text


def test_a_new_key_never_shown_leaves_the_cookie_once_its_time_is_up(app, client, db, monkeypatch):
    import app.auth.views as views
    register(client)
    client.post("/profile/api-key", data={"csrf_token": csrf_of(client, "/profile/api-key")})
    later = views.time.time() + views.NEW_KEY_SHOWN_FOR_SECONDS + 1
    monkeypatch.setattr(views.time, "time", lambda: later)
    assert client.get("/profile").status_code == 200  # any page of the site
    assert "new_api_key" not in session_of(app, client)


def test_a_new_key_leaves_the_cookie_as_it_is_shown(app, client, db):
    register(client)
    client.post("/profile/api-key", data={"csrf_token": csrf_of(client, "/profile/api-key")})
    assert 'id="new-api-key"' in client.get("/profile/api-key").text
    assert "new_api_key" not in session_of(app, client)


# ---------------------------------------------------------------- limits per customer, not per log-in

def relog(client):
    logout(client)
    assert login(client).status_code == 302


def test_the_checkout_limit_does_not_restart_at_each_log_in(app, client, db):
    app.config["PAYMENT_RATE_LIMIT"] = "2 per hour"
    register(client)

    def checkout_post():
        return client.post("/checkout/basic", data={"csrf_token": csrf_of(client, "/checkout/basic"),
                                                    "phone_number": "0712 345 678"})
    assert [checkout_post().status_code for _ in range(2)] == [302, 302]
    relog(client)
    refused = checkout_post()
    assert refused.status_code == 303 and "Too many attempts" in client.get(refused.headers["Location"]).text


def test_the_receipt_claim_limit_does_not_restart_at_each_log_in(app, client, db):
    app.config["RECEIPT_CLAIM_RATE_LIMIT"] = "2 per hour"
    register(client)
    user = owner(db)
    payment = checkout.start(db, app.config, user=user, plan=get_plan(db, "basic"), phone="254712345678",
                             idempotency_key="k-claim-doors").payment
    settlement.settle(db, payment["_id"], from_result(1037, "DS timeout", via="callback"))
    page = f"/payments/{records.get(db, payment['_id'])['_id']}"

    def claim():
        return client.post(f"{page}/claim", data={"csrf_token": csrf_of(client, page), "receipt": "RKL51ZDR4F"},
                           headers={"Referer": "http://localhost" + page})
    assert [claim().status_code for _ in range(2)] == [302, 302]
    relog(client)
    refused = claim()
    assert refused.status_code == 303  # the third check of this hour, whatever the log-in
    assert "Too many attempts" in client.get(refused.headers["Location"]).text


def test_limits_meant_per_customer_are_keyed_by_account():
    """Every limit keyed on the signed-in customer names the account, never the log-in
    (User.get_id() is account + log-in, so a new log-in would get a fresh allowance)."""
    from pathlib import Path
    offenders = [str(path) for path in Path("app").rglob("*.py") if "current_user.get_id()" in path.read_text()]
    assert offenders == []
