"""The operator console in a real browser at desktop width, against the real stack.

An operator created with `flask create-admin` logs in, reads the dashboard, searches
the payments, opens a paid payment's whole story, and approves one held for review.
Screenshots go to tests/artifacts/admin/ for a person to look at. It uses the stack and
browser the other browser tests share, with its own customer and its own operator.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from bson import ObjectId
from playwright.sync_api import expect

from app.payments import outcomes, settlement
from tests.support.invariants import assert_money_invariants
from tests.support.web import Customer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "admin"
DESKTOP = {"viewport": {"width": 1366, "height": 900}}
ADMIN_PASSWORD = "operator password " + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def operator(stack) -> str:
    username = "ops" + uuid.uuid4().hex[:6]
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "create-admin", username],
                            env={**os.environ, **stack.env, "LIPIA_ADMIN_PASSWORD": ADMIN_PASSWORD},
                            cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "created" in result.stdout
    return username


@pytest.fixture(scope="module")
def payments(stack) -> dict:
    """A customer with one paid payment and one whose callback confirmed the wrong amount."""
    customer = Customer(stack.web_url)
    assert customer.register().status_code == 302
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.2})
    paid = customer.checkout("basic")
    customer.wait_for(paid, "completed")
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.2, "amount": 1})
    review = customer.checkout("basic")
    customer.wait_for(review, "review")
    # Paid on the phone, but the callback never came and the payment ended expired.
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.2, "callback": "none"})
    late = customer.checkout("basic")
    customer.wait_for(late, "pending")
    settlement.settle(stack.db, late, outcomes.expired("no answer from M-Pesa in time"))
    assert customer.status(late)["status"] == "expired"
    return {"customer": customer, "paid": paid, "review": review, "late": late}


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"desktop-{name}.png"
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


def test_an_operator_uses_the_console_at_desktop_width(browser, stack, operator, payments):
    context = browser.new_context(**DESKTOP, base_url=stack.web_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    customer = payments["customer"]
    try:
        page.goto("/login?next=/admin/")
        page.fill("#username", operator)
        page.fill("#password", ADMIN_PASSWORD)
        page.locator("main").get_by_role("button", name="Log in").click()

        # Dashboard: today's figures, the payment under review, the queue.
        expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
        expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin")).to_be_visible()
        expect(page.get_by_text("Success rate").first).to_be_visible()
        expect(page.locator("#review-heading")).to_contain_text("1")
        expect(page.locator("main")).to_contain_text("KES 100")
        shot(page, "dashboard")

        # Payments: the list, then a search by username.
        page.get_by_role("link", name="Payments", exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Payments")
        rows = page.locator("table tbody tr")
        # The stack is shared with the other browser tests: the list shows every payment in it.
        expect(rows).to_have_count(stack.db.payments.count_documents({}))
        page.fill("#username", customer.username)
        page.get_by_role("button", name="Search").click()
        expect(page).to_have_url(re.compile(r"username="))
        expect(rows).to_have_count(3)
        shot(page, "payments")

        # A paid payment: its history, Daraja exchanges, raw callback, job and ledger entry.
        page.goto(f"/admin/payments/{payments['paid']}")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Basic")
        expect(page.locator("#history-heading")).to_be_visible()
        expect(page.locator("main")).to_contain_text("/mpesa/stkpush/v1/processrequest")
        expect(page.locator("#callbacks-heading")).to_contain_text("1")
        expect(page.locator("main")).to_contain_text(f"push:{payments['paid']}")
        expect(page.locator("main")).to_contain_text("+10,000")
        page.locator("details.exchange summary").first.click()
        shot(page, "payment-paid")
        secret = stack.db.payments.find_one({"_id": ObjectId(payments["paid"])})["callback_secret"]
        assert secret not in page.content()

        # The payment under review: approve it with a reason.
        page.goto(f"/admin/payments/{payments['review']}")
        expect(page.locator("#review-heading")).to_have_text("Resolve the review")
        shot(page, "payment-review")
        page.get_by_label("Approve: credit the words").check()
        page.locator("#review-reason").fill("Customer sent the M-Pesa SMS; amount matches the order")
        page.get_by_role("button", name="Record decision").click()
        expect(page.locator(".alert-success")).to_contain_text("Approved")
        expect(page.locator("h1 + .status-badge, h1 ~ .badge").first).to_have_text("completed")
        shot(page, "payment-approved")

        # The expired payment that was paid after all: ask Daraja, and it is credited.
        page.goto(f"/admin/payments/{payments['late']}")
        page.locator("#ask-reason").fill("Customer has the M-Pesa SMS for this payment")
        page.get_by_role("button", name="Ask Daraja").click()
        expect(page.locator(".alert-success")).to_contain_text("Daraja answered 0")
        expect(page.locator("main")).to_contain_text("/mpesa/stkpushquery/v1/query")
        shot(page, "payment-asked")

        # The user page and the audit log show the corrections.
        page.goto(f"/admin/users/{customer.username}")
        expect(page.locator("main")).to_contain_text("30,000")
        shot(page, "user")
        page.get_by_role("link", name="Audit log").click()
        expect(page.locator("table")).to_contain_text("approve_review")
        expect(page.locator("table")).to_contain_text("ask_daraja")
        expect(page.locator("table")).to_contain_text(operator)
        shot(page, "audit")
        assert problems == [], problems
    finally:
        context.close()
    assert customer.status(payments["review"])["words_remaining"] == 30_000
    assert_money_invariants(stack.db)
