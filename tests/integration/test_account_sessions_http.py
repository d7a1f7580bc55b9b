"""Log-ins that end, recovery that shuts an intruder's API key out, logout that empties the
session cookie, and usernames without regard to case, on the real database over HTTP."""
import os
import re
import subprocess
import sys
import uuid

import pytest
import requests
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from app import users
from app.auth import recovery
from tests.support.invariants import assert_money_invariants
from tests.support.web import _CSRF, Customer

pytestmark = pytest.mark.integration


def _logout(customer: Customer) -> None:
    _, fields = customer.form("/profile")
    customer.http.post(customer.base + "/logout", data=fields, timeout=10, allow_redirects=False)


def _opens_profile(base: str, cookies: dict) -> bool:
    response = requests.get(base + "/profile", cookies=cookies, timeout=10, allow_redirects=False)
    return response.status_code == 200


def test_copied_session_and_remember_cookies_die_with_their_log_in(stack):
    customer = Customer(stack.web_url)
    assert customer.register().status_code == 302
    _logout(customer)
    response = customer.post_form("/login", {"username": customer.username, "password": customer.password,
                                             "remember": "y"})
    assert response.status_code == 302
    copied = {"session": customer.http.cookies["session"]}
    remembered = {"remember_token": customer.http.cookies["remember_token"]}
    assert _opens_profile(stack.web_url, copied) and _opens_profile(stack.web_url, remembered)
    _logout(customer)
    assert not _opens_profile(stack.web_url, copied)
    assert not _opens_profile(stack.web_url, remembered)
    assert_money_invariants(stack.db)


def test_log_out_everywhere_over_http(stack):
    laptop = Customer(stack.web_url)
    assert laptop.register().status_code == 302
    phone = Customer(stack.web_url, username=laptop.username)
    assert phone.login().status_code == 302
    assert laptop.post_form("/logout/everywhere", {}, form_path="/profile").status_code == 302
    assert phone.get("/profile").url.split("?")[0].endswith("/login")
    assert laptop.get("/profile").url.split("?")[0].endswith("/login")
    assert stack.db.users.find_one({"username": laptop.username})["sessions"] == []
    assert_money_invariants(stack.db)


def test_usernames_ignore_case_on_the_real_database(stack):
    name = "Wanjiku." + uuid.uuid4().hex[:6]
    first = Customer(stack.web_url, username=name)
    assert first.register().status_code == 302
    clash = Customer(stack.web_url, username=name.lower())
    refused = clash.register()
    assert refused.status_code == 400 and "be used. Please choose another." in refused.text
    assert stack.db.users.count_documents({"username_key": name.lower()}) == 1
    shouting = Customer(stack.web_url, username=name.upper())
    assert shouting.login().status_code == 302
    assert f"<strong>{name}</strong>" in shouting.get("/profile").text  # shown as typed at sign-up
    assert_money_invariants(stack.db)


def test_init_db_reports_old_clashes_and_creates_the_index_on_the_real_database(stack):
    suffix = uuid.uuid4().hex[:6]
    stack.db.users.insert_many([{"username": f"Kim{suffix}", "password": "x", "role": "customer",
                                 "words_remaining": 0, "applied_keys": []},
                                {"username": f"kim{suffix}", "password": "x", "role": "customer",
                                 "words_remaining": 0, "applied_keys": []}])
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "init-db"], env={**os.environ, **stack.env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"Kim{suffix}, kim{suffix}" in result.stderr
    assert "username_key_unique" in stack.db.users.index_information()
    assert stack.db.users.find_one({"username": f"Kim{suffix}"})["username_key"] == f"kim{suffix}"
    stack.db.users.delete_many({"username": {"$in": [f"Kim{suffix}", f"kim{suffix}"]}})
    assert_money_invariants(stack.db)


# ---------------------------------------------------------------- recovery closes every door

NEW_PASSWORD = "mvua ya jioni 77"


def _api_status(stack, key: str) -> int:
    return requests.get(stack.web_url + "/api/v1/balance", headers={"Authorization": f"Bearer {key}"},
                        timeout=10).status_code


def _make_api_key(customer: Customer) -> str:
    made = customer.post_form("/profile/api-key", {}, form_path="/profile/api-key")
    assert made.status_code == 303, made.text[:300]
    return re.search(r'id="new-api-key" readonly value="(lip_[^"]+)"', customer.get("/profile/api-key").text).group(1)


def _reset_link(stack, username: str) -> str:
    config = {"SECRET_KEY": stack.env["SECRET_KEY"], "PASSWORD_RESET_OPERATOR_LINK_HOURS": 24}
    return recovery.issue(stack.db, config, users.get_by_username(stack.db, username), recovery.BY_OPERATOR).path


def _recover(stack, owner: Customer, how: str) -> str:
    """The owner (or their operator) takes the account back; what they are told."""
    if how == "password":
        done = owner.post_form("/profile/password", {"current_password": owner.password, "new_password": NEW_PASSWORD,
                                                     "confirm": NEW_PASSWORD}, form_path="/profile")
    elif how == "everywhere":
        done = owner.post_form("/logout/everywhere", {}, form_path="/profile")
    elif how == "link":
        _logout(owner)
        assert owner.get(_reset_link(stack, owner.username), allow_redirects=False).status_code == 303
        token = _CSRF.search(owner.get("/reset").text).group(1)
        done = owner.http.post(owner.base + "/reset", data={"csrf_token": token, "new_password": NEW_PASSWORD,
                                                            "confirm": NEW_PASSWORD}, timeout=10, allow_redirects=False)
    else:
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "reset-password", owner.username,
                                 "--reason", "ticket 42"], env={**os.environ, **stack.env}, capture_output=True,
                                text=True, timeout=120, input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
        assert result.returncode == 0, result.stderr
        return result.stdout
    assert done.status_code in (302, 303), done.text[:300]
    return owner.get(done.headers["Location"]).text


@pytest.mark.parametrize("how", ["password", "everywhere", "operator", "link"])
def test_an_intruders_api_key_dies_with_every_recovery(stack, how):
    owner = Customer(stack.web_url)
    assert owner.register().status_code == 302
    intruder = Customer(stack.web_url, username=owner.username)  # who learned the password
    assert intruder.login().status_code == 302
    key = _make_api_key(intruder)
    assert _api_status(stack, key) == 200
    told = _recover(stack, owner, how)
    assert _api_status(stack, key) == 401
    assert "Your API key no longer works" in told or "Their API key is retired" in told  # and the owner is told
    assert intruder.get("/profile").url.split("?")[0].endswith("/login")  # and the intruder's log-in is over
    assert "API key retired" in stack.db.audit_log.find_one({"target.id": owner.username},
                                                            sort=[("at", -1)])["result"]
    assert_money_invariants(stack.db)


def _session_cookie(stack, customer: Customer) -> dict:
    """What the browser's session cookie carries, read as anyone holding a copy could (it is signed,
    not encrypted)."""
    raw = customer.http.cookies.get("session")
    if not raw:
        return {}
    reader = Flask("reader")
    reader.secret_key = stack.env["SECRET_KEY"]
    return dict(SecureCookieSessionInterface().get_signing_serializer(reader).loads(raw))


def test_logout_leaves_neither_a_new_api_key_nor_a_reset_token_in_the_cookie(stack):
    customer = Customer(stack.web_url)
    assert customer.register().status_code == 302
    # The key is made, its page never opened (a lost connection); a reset link is opened on the same browser.
    assert customer.post_form("/profile/api-key", {}, form_path="/profile/api-key").status_code == 303
    assert customer.get(_reset_link(stack, customer.username), allow_redirects=False).status_code == 303
    carried = _session_cookie(stack, customer)
    assert carried.get("new_api_key", {}).get("key", "").startswith("lip_") and carried.get("reset_token")
    _logout(customer)
    left = _session_cookie(stack, customer)
    assert not {"new_api_key", "reset_token", "_user_id"} & set(left), sorted(left)
    assert customer.get("/reset").status_code == 400  # the link is no longer at hand here
