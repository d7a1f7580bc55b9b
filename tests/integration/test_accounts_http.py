"""Accounts and plans over real HTTP against gunicorn, CSRF included."""
import re

import pytest
import requests

from tests.support.web import Customer

pytestmark = pytest.mark.integration


def test_register_log_out_log_in_and_browse_plans(stack):
    customer = Customer(stack.web_url, phone="0712 345 678")
    assert customer.register().status_code == 302
    plans = customer.get("/")
    assert "Basic" in plans.text and "Premium" in plans.text and "KES 100" in plans.text
    _, fields = customer.form("/")
    customer.http.post(stack.web_url + "/logout", data=fields, timeout=5)
    assert "Log in" in customer.get("/").text
    response = customer.login()
    assert response.status_code == 302
    assert customer.get("/profile").status_code == 200
    doc = stack.db.users.find_one({"username": customer.username})
    assert doc["phone_number"] == "254712345678" and doc["last_login"] is not None


def test_post_without_csrf_token_is_refused(stack):
    response = requests.post(stack.web_url + "/register", timeout=5, data={
        "username": "nocsrf", "password": "password123", "confirm": "password123", "phone_number": "0712345678"})
    assert response.status_code == 400
    assert stack.db.users.count_documents({"username": "nocsrf"}) == 0


def test_pages_are_served_without_any_other_host(stack):
    page = requests.get(stack.web_url + "/", timeout=5)
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    assert not re.search(r'(?:href|src)="(?:https?:)?//', page.text), "an asset from another host"
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
    for name in (r"vendor/bootstrap/bootstrap\.min", r"css/app", r"js/app"):
        assert any(re.fullmatch(rf"/static/{name}\.[0-9a-f]{{12}}\.(css|js)", asset) for asset in assets), (name, assets)
    for asset in assets:
        response = requests.get(stack.web_url + asset, timeout=5)
        assert response.status_code == 200 and "immutable" in response.headers["Cache-Control"], asset
        if asset.endswith((".css", ".js")):  # a tiny icon may not be worth compressing
            assert response.headers.get("Content-Encoding") in ("gzip", "br"), asset
