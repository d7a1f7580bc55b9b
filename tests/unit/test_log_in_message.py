"""A logged-out visit to a page that needs an account: one message, never two.

A plan's checkout lands on a log-in page whose heading names the plan, so Flask-Login's
general "Please log in" flash would repeat it; every other page keeps the flash, since
its log-in page would otherwise not say why it appeared."""
import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from app import create_app
from app.db import database_for
from app.dbsetup import init_db
from app.plans.service import seed_plans
from tests.conftest import TEST_ENV

PLEASE = "Please log in to continue."


@pytest.fixture
def client():
    app = create_app({"MONGO_URI": f"mongomock://localhost/login_msg_{uuid.uuid4().hex[:8]}",
                      "RATELIMIT_STORAGE_URI": "memory://", "WTF_CSRF_ENABLED": False}, environ=TEST_ENV)
    db = database_for(app.config["MONGO_URI"])
    init_db(db)
    seed_plans(db)
    return app.test_client()


def _alerts(html: str) -> list[str]:
    return [" ".join(re.sub(r"<[^>]+>", " ", alert).split())
            for alert in re.findall(r'<div class="alert[^"]*"[^>]*>(.*?)</div>', html, re.S)]


@pytest.mark.parametrize("checkout", ["/checkout/premium", "/checkout/premium?phone=other"])
def test_a_plans_checkout_lands_on_one_message_naming_the_plan(client, checkout):
    response = client.get(checkout)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")
    page = client.get(response.headers["Location"]).text
    assert _alerts(page) == []
    assert PLEASE not in page
    assert "Log in to buy Premium — 50,000 words for KES 400" in page


@pytest.mark.parametrize("path", ["/history", "/notices", "/checkout/nosuchplan"])
def test_any_other_page_still_says_why_log_in_is_asked(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]
    assert _alerts(client.get(response.headers["Location"]).text) == [PLEASE]


def test_after_logging_in_the_customer_is_back_at_the_checkout(client):
    client.post("/register", data={"username": "achieng", "password": "mvua ya jioni 7",
                                   "confirm": "mvua ya jioni 7", "phone_number": "0712345678"})
    client.post("/logout")
    location = client.get("/checkout/basic").headers["Location"]
    next_url = parse_qs(urlsplit(location).query)["next"][0]
    response = client.post("/login", data={"username": "achieng", "password": "mvua ya jioni 7", "next": next_url})
    assert response.status_code == 302 and response.headers["Location"] == "/checkout/basic"
