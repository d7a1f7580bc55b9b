"""The waiting page gets a customer out of every dead end, on a 360-pixel phone.

- A mistyped number: "Use another number" cancels the live prompt on our side and the
  checkout to the right number goes through at once; the old prompt, approved after all,
  still credits.
- "Didn't get the prompt?" says what to check and offers a new prompt after a short wait;
  "Cancel payment" ends it; "Try again" sends a new prompt to the same number in one tap.
- Daraja down: the page says so within seconds instead of a silent spinner.
- A lost callback: the end of the countdown asks M-Pesa at once (with the scheduled
  query minutes away), and a payment paid without a receipt code says where the code is.
"""
from __future__ import annotations

import re

import pytest
from bson import ObjectId
from playwright.sync_api import expect

from tests.support.invariants import assert_money_invariants
from tests.support.stack import start_database, start_stack
from tests.support.web import random_phone

from .a11y import audit
from .pages import DEVICES, PROMPT_TIMEOUT, SCREENSHOTS, check_layout, expect_waiting_for_pin, \
    signed_in, start_payment, status_card, wait_for_status

pytestmark = pytest.mark.e2e


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"phone-waiting-{name}.png"), full_page=True, animations="disabled")


def local(phone: str) -> str:
    return "0" + phone[3:]


def shown(phone: str) -> str:
    digits = local(phone)
    return f"{digits[:4]} {digits[4:7]} {digits[7:]}"


def payment_id(page) -> str:
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def test_use_another_number_cancels_the_prompt_and_the_old_one_still_credits(stack, phone_page):
    context, page = phone_page
    shopper = signed_in(context, stack.web_url)
    # The first number's prompt is approved after all, a few seconds after it went out.
    stack.sim("/_sim/script", {"phone": shopper.phone, "result_code": 0, "after": PROMPT_TIMEOUT - 2})
    start_payment(page)
    wait_for_status(page, "pending")
    first = payment_id(page)
    card = status_card(page)
    expect(card.locator("[data-phone]")).to_have_text(shown(shopper.phone))
    expect(card.get_by_text("M-Pesa receipt", exact=True)).to_be_hidden()  # no receipt row while waiting

    page.get_by_role("button", name="Use another number").click()
    expect(page).to_have_url(re.compile(r"/checkout/basic\?phone=other$"))
    expect(page.locator(".alert")).to_contain_text("cancelled the earlier prompt")
    expect(page.locator("#phone_number")).to_have_value("")
    other = random_phone()
    page.fill("#phone_number", local(other))
    page.get_by_role("button", name="Pay KES 100 with M-Pesa").click()
    expect(page).to_have_url(re.compile(r"/payments/[^/]+$"))
    assert payment_id(page) != first  # not sent back to the old payment
    wait_for_status(page, "pending")
    expect(status_card(page).locator("[data-phone]")).to_have_text(shown(other))
    check_layout(page)
    shot(page, "another-number")

    db = stack.db
    # The old prompt's approval arrives after the cancel and credits the cancelled payment.
    old = None
    for _ in range(100):
        old = db.payments.find_one({"_id": ObjectId(first)})
        if old and old["status"] == "completed" and old.get("credited"):
            break
        page.wait_for_timeout(200)
    assert [h["status"] for h in old["history"]][-2:] == ["cancelled", "completed"], old["history"]
    page.goto(f"/payments/{first}")
    wait_for_status(page, "completed")
    expect(page.locator("nav [data-balance]:visible")).to_have_text("10,000")
    assert_money_invariants(db)


def test_prompt_help_resend_cancel_and_try_again_in_one_tap(stack, phone_page):
    context, page = phone_page
    shopper = signed_in(context, stack.web_url)
    start_payment(page)
    expect_waiting_for_pin(page)
    card = status_card(page)
    card.get_by_text("Didn't get the prompt?").click()
    help_panel = card.locator("#prompt-help")
    expect(help_panel).to_contain_text("unlocked")
    expect(help_panel).to_contain_text("SIM menu")
    expect(help_panel).to_contain_text("already open")
    resend = help_panel.get_by_role("button", name="Send the prompt again")
    expect(resend).to_be_disabled()  # the first prompt may still arrive
    expect(help_panel.locator("[data-resend-wait]")).to_contain_text("you can send a new one in")
    check_layout(page)
    audit(page, "waiting page with its help open")
    shot(page, "prompt-help")
    expect(resend).to_be_enabled(timeout=PROMPT_TIMEOUT * 1000)
    first = payment_id(page)
    resend.click()
    expect(page).not_to_have_url(re.compile(first + "$"))
    wait_for_status(page, "pending")
    second = payment_id(page)

    page.get_by_role("button", name="Cancel payment").click()
    wait_for_status(page, "cancelled")
    expect(card.locator("[data-message]")).to_contain_text("You cancelled this payment")
    retry = card.get_by_role("button", name="Try again")
    expect(retry).to_be_visible()
    expect(card.locator("#retry-what")).to_contain_text(shown(shopper.phone))
    check_layout(page)
    shot(page, "cancelled-by-customer")
    retry.click()
    expect_waiting_for_pin(page)
    third = payment_id(page)
    assert len({first, second, third}) == 3
    statuses = {str(p["_id"]): p["status"] for p in stack.db.payments.find({"username": shopper.username})}
    assert statuses[first] == "cancelled" and statuses[second] == "cancelled" and len(statuses) == 3
    assert_money_invariants(stack.db)


def test_daraja_outage_is_said_within_seconds_then_try_again(stack, phone_page):
    context, page = phone_page
    shopper = signed_in(context, stack.web_url)
    stack.sim("/_sim/faults", {"push_status": 503, "push_times": 100})
    try:
        start_payment(page)
        card = status_card(page)
        expect(card.locator("[data-title]")).to_have_text(
            re.compile("^(M-Pesa is not answering|Payment failed)$"), timeout=6_000)
        expect(card.locator("[data-message]")).to_contain_text("no money has been taken", ignore_case=True)
        shot(page, "daraja-down")
    finally:
        stack.sim("/_sim/faults", {})
    # The customer gives up on it (or the worker already did): either way it ends, and "Try again" is there.
    if card.get_attribute("data-final") != "true":
        page.get_by_role("button", name="Cancel payment").click()
    expect(card).to_have_attribute("data-status", re.compile("^(cancelled|failed)$"))
    card.get_by_role("button", name="Try again").click()
    expect_waiting_for_pin(page)
    expect(status_card(page).locator("[data-phone]")).to_have_text(shown(shopper.phone))
    assert_money_invariants(stack.db)


@pytest.fixture(scope="module")
def slow_reconciler_stack():
    """The scheduled STK Query ten minutes away: only the end of the countdown can ask sooner."""
    base, database = start_database()
    try:
        stack = start_stack(base, SIMULATOR_PROMPT_TIMEOUT=str(PROMPT_TIMEOUT),
                            PROMPT_TIMEOUT_SECONDS=str(PROMPT_TIMEOUT), RECONCILE_AFTER_SECONDS="600")
    except Exception:
        if database:
            database.stop()
        raise
    yield stack
    stack.stop()
    if database:
        database.stop()


def test_end_of_countdown_asks_mpesa_and_says_where_the_receipt_is(browser, slow_reconciler_stack):
    stack = slow_reconciler_stack
    context = browser.new_context(**DEVICES["phone"], base_url=stack.web_url)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        shopper = signed_in(context, stack.web_url)
        # Paid at once, but M-Pesa's callback never arrives.
        stack.sim("/_sim/script", {"phone": shopper.phone, "result_code": 0, "after": 0.5, "callback": "none"})
        start_payment(page)
        expect_waiting_for_pin(page)
        card = status_card(page)
        expect(card.get_by_text("Asks M-Pesa now whether this payment went through.")).to_be_visible()
        wait_for_status(page, "completed", timeout=(PROMPT_TIMEOUT + 12) * 1000)
        payment = stack.db.payments.find_one({"username": shopper.username})
        assert payment["settled_via"] == "query" and payment.get("asked_after_prompt")
        expect(card.get_by_text("M-Pesa receipt", exact=True)).to_be_hidden()
        expect(card.locator("[data-receipt-note]")).to_have_text(
            f"Your M-Pesa receipt code is in the SMS M-Pesa sent to {shown(shopper.phone)}.")
        check_layout(page)
        shot(page, "paid-by-query")
        assert_money_invariants(stack.db)
    finally:
        context.close()
