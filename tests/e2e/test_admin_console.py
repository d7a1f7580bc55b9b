"""The operator console in a real browser at desktop width, against the real stack.

An operator created with `flask create-admin` logs in, reads the dashboard, searches
the payments, opens a paid payment's whole story, records a partial refund through its
preview, approves one held for review, reads how a timed-out payment ended, downloads
both CSV exports for a range of days and finds them in the audit log. The console has its
own menu (no customer menu, no words balance) at 1280x800. Screenshots go to
tests/artifacts/admin/ for a person to look at. It uses the stack and browser the other
browser tests share, with its own customer and its own operator.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
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

from .a11y import audit

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "admin"
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
ADMIN_PASSWORD = "operator password " + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def operator(stack) -> str:
    # A long name, as real ones are: it must not wrap mid-word in the audit log.
    username = "operations.desk." + uuid.uuid4().hex[:8]
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "create-admin", username],
                            env={**os.environ, **stack.env, "LIPIA_ADMIN_PASSWORD": ADMIN_PASSWORD},
                            cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "created" in result.stdout
    return username


@pytest.fixture(scope="module")
def payments(stack) -> dict:
    """A customer with one paid payment and one paid from another phone (held for review)."""
    customer = Customer(stack.web_url)
    assert customer.register().status_code == 302
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.2})
    paid = customer.checkout("basic")
    customer.wait_for(paid, "completed")
    # Paid from another phone (a relative's, say): held for review, and an operator may approve it.
    # (A callback of another amount can only be rejected: approving it would credit unpaid words.)
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.2,
                               "phone_in_callback": "254799999999"})
    review = customer.checkout("basic")
    customer.wait_for(review, "review")
    # Paid on the phone, but the callback never came and the payment ended expired.
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.2, "callback": "none"})
    late = customer.checkout("basic")
    customer.wait_for(late, "pending")
    settlement.settle(stack.db, late, outcomes.expired("no answer from M-Pesa in time"))
    assert customer.status(late)["status"] == "expired"
    # The customer never answered the prompt: M-Pesa's callback says 1037.
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 1037, "after": 0.2})
    unanswered = customer.checkout("basic")
    customer.wait_for(unanswered, "timeout")
    return {"customer": customer, "paid": paid, "review": review, "late": late, "unanswered": unanswered}


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"desktop-{name}.png"
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


def test_an_operator_uses_the_console_at_desktop_width(browser, stack, operator, payments, axe_script):
    context = browser.new_context(**DESKTOP, base_url=stack.web_url)
    context.set_default_timeout(10_000)
    context.add_init_script(path=str(axe_script))
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

        # Dashboard: today's figures, the payment under review, the queue, in the console's own layout.
        expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
        console = page.get_by_role("navigation", name="Operator console")
        expect(console.get_by_role("button", name="Log out")).to_be_visible()
        expect(console).to_contain_text(f"Signed in as {operator}")
        expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
        expect(page.locator(".nav-balance-badge")).to_have_count(0)
        expect(page.get_by_role("link", name="Spend words")).to_have_count(0)
        audit(page, "dashboard")
        expect(page.get_by_text("Success rate").first).to_be_visible()
        expect(page.locator("#review-heading")).to_contain_text("1")
        under_review = page.locator("section[aria-labelledby=review-heading]")
        expect(under_review).to_contain_text(customer.username)
        expect(under_review).to_contain_text("paid from a different phone number than the order's")
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
        expect(rows).to_have_count(4)
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
        expect(page.locator("[data-ending]")).to_contain_text("Paid")
        expect(page.locator("[data-ending]")).to_contain_text("reported by M-Pesa's callback")

        # A partial refund: the form starts empty; the operator types, sees what will happen, confirms.
        expect(page.locator("#refund-words")).to_have_value("")
        expect(page.locator("#refund-amount_kes")).to_have_value("")
        page.locator("#refund-words").fill("4000")
        page.locator("#refund-amount_kes").fill("40")
        page.locator("#refund-reason").fill("Half the order was never used; agreed on the phone")
        page.get_by_role("button", name="Check the refund").click()
        preview = page.locator("#refund-preview")
        expect(preview).to_contain_text("Take back 4,000 words from " + customer.username)
        expect(preview).to_contain_text("balance 10,000 → 6,000 words")
        expect(preview).to_contain_text("KES 40")
        assert stack.db.ledger.count_documents({"_id": f"refund:{payments['paid']}"}) == 0  # nothing yet
        preview.scroll_into_view_if_needed()
        audit(page, "refund preview")
        shot(page, "refund-preview")
        preview.get_by_role("button", name="Confirm: take back 4,000 words, KES 40").click()
        expect(page.locator(".alert-success")).to_contain_text("Refund recorded: 4,000 words taken back")
        expect(page.locator("#refund-heading + p")).to_contain_text(f"Refund recorded by {operator} (applied): 4,000 words")
        shot(page, "refund-recorded")

        # A prompt nobody answered ended timed out, as the callback said: not "settled".
        page.goto(f"/admin/payments/{payments['unanswered']}")
        expect(page.locator("[data-ending]")).to_contain_text("Timed out")
        expect(page.locator("[data-ending]")).to_contain_text("reported by M-Pesa's callback")
        expect(page.locator("main")).not_to_contain_text("Settled")
        shot(page, "payment-timed-out")

        # The payment under review: approve it with a reason.
        page.goto(f"/admin/payments/{payments['review']}")
        expect(page.locator("#review-heading")).to_have_text("Resolve the review")
        shot(page, "payment-review")
        page.get_by_label("Approve: credit the words").check()
        page.locator("#review-reason").fill("Customer sent the M-Pesa SMS: paid by her sister's phone")
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
        expect(page.locator("[data-ending]")).to_contain_text("found by an STK Query")
        shot(page, "payment-asked")

        # The user page shows the corrections.
        page.goto(f"/admin/users/{customer.username}")
        expect(page.locator("main")).to_contain_text("26,000")
        shot(page, "user")

        # Exports: both with date pickers, in Kenyan time with the offset.
        today = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)).date().isoformat()
        page.get_by_role("link", name="Exports").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Exports")
        for picker in ("#date_from", "#date_to", "#ledger-from", "#ledger-to"):
            expect(page.locator(picker)).to_have_attribute("type", "date")
        page.locator("#date_from").fill(today)
        page.locator("#date_to").fill(today)
        page.locator("#username").fill(customer.username)
        audit(page, "exports")
        shot(page, "exports")
        with page.expect_download() as download:
            page.get_by_role("button", name="Download payments CSV").click()
        table = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert len(table) == 4 and all(row["created_at"].endswith("+03:00") for row in table), table
        page.locator("#ledger-from").fill(today)
        page.locator("#ledger-to").fill(today)
        page.locator("#ledger-username").fill(customer.username)
        with page.expect_download() as download:
            page.get_by_role("button", name="Download ledger CSV").click()
        entries = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert sorted(e["kind"] for e in entries) == ["purchase", "purchase", "purchase", "refund"], entries
        assert all(e["created_at"].endswith("+03:00") for e in entries)

        # The audit log: every repair and both exports, with readable rows at 1280 px.
        page.get_by_role("link", name="Audit log", exact=True).click()
        table = page.locator("table")
        for action in ("approve_review", "ask_daraja", "refund", "export_payments", "export_ledger"):
            expect(table).to_contain_text(action)
        expect(table).to_contain_text(f"Range: {today} → {today}")
        expect(table).to_contain_text(operator)
        # Names and ids on one line each: a Range over each one's text has a single box.
        lines = page.evaluate("""() => [...document.querySelectorAll('.audit-actor, .audit-name, .audit-target .font-monospace')]
            .map(el => { const r = document.createRange(); r.selectNodeContents(el); return [el.textContent.trim(), r.getClientRects().length]; })""")
        assert lines and all(count == 1 for _text, count in lines), lines
        audit(page, "audit log")
        shot(page, "audit")
        widths = page.locator(".table-responsive").first.evaluate(
            "el => [el.scrollWidth, el.clientWidth, [...el.querySelectorAll('thead th')].map(th => th.offsetWidth)]")
        assert widths[0] <= widths[1] + 1, f"the audit table scrolls sideways at 1280 px: {widths}"
        assert problems == [], problems
    finally:
        context.close()
    assert customer.status(payments["review"])["words_remaining"] == 26_000
    assert_money_invariants(stack.db)
