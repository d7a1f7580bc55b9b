"""Log-ins that end, and usernames without regard to case, on the real database over HTTP."""
import os
import subprocess
import sys
import uuid

import pytest
import requests

from tests.support.invariants import assert_money_invariants
from tests.support.web import Customer

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
