"""A customer's journeys in a real browser, with the simulator's handset in a second page.

Each journey runs at a phone's size (360x740, touch) and at desktop width, checks the
layout on every page it visits, and leaves a screenshot of each state it reaches under
tests/artifacts/screenshots/.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .a11y import audit, icon_glyph
from .pages import (CORRECT_PIN, PROMPT_TIMEOUT, SETTLE_MS, Shopper, Watch, balance, check_layout,
                    enter_pin, expect_prompt, expect_waiting_for_pin, handset_result, mark_document,
                    open_handset, origin, register, same_document, signed_in, start_payment, status_card,
                    wait_for_status)

pytestmark = pytest.mark.e2e

WORDS = "Habari ya asubuhi, this short note costs exactly twelve words of credit."


def test_pay_then_spend(stack, context, screenshot, axe_script):
    """Register, choose a plan, pay on the handset, watch the page settle, spend words.

    Each page on the way is also audited for accessibility in the state it is in."""
    context.add_init_script(path=str(axe_script))
    shopper = Shopper.new()
    page = context.new_page()
    shop = Watch.attach(page)

    register(page, shopper)
    expect(page.get_by_role("status").filter(has_text="Welcome to Lipia")).to_be_visible()
    assert balance(page) == "0"
    check_layout(page)
    screenshot(page, "plans")

    page.get_by_role("link", name=re.compile("^Choose Basic")).click()
    # The saved number as the customer writes it (stored as 2547XXXXXXXX).
    local = shopper.local_phone
    expect(page.locator("#phone_number")).to_have_value(f"{local[:4]} {local[4:7]} {local[7:]}")
    check_layout(page)
    screenshot(page, "checkout")
    page.get_by_role("button", name="Pay KES 100 with M-Pesa").click()

    left = expect_waiting_for_pin(page)
    mark_document(page)
    check_layout(page)
    screenshot(page, "waiting")
    audit(page, "payment (waiting)")
    # The news is in a polite live region, so a screen reader reads it out; the ticking
    # countdown is not, or it would be read out every second.
    live = status_card(page).locator("[aria-live=polite]")
    expect(live.locator("[data-message]")).to_contain_text("Enter your M-Pesa PIN")
    expect(live.locator("[data-countdown]")).to_have_count(0)

    handset = context.new_page()
    phone = Watch.attach(handset)
    open_handset(handset, stack.sim_url, shopper)
    expect_prompt(handset, "100")
    # Time passes on the payment page while the customer reaches for the phone.
    expect(status_card(page).locator("[data-countdown]")).not_to_have_text(f"0:0{left}")
    enter_pin(handset, CORRECT_PIN)
    expect(handset_result(handset)).to_contain_text("Payment of KES 100 sent")

    wait_for_status(page, "completed")
    card = status_card(page)
    expect(card.locator("[data-title]")).to_have_text("Paid")
    expect(live.locator("[data-message]")).to_contain_text("10,000 words were added")
    expect(card.locator("[data-receipt]")).to_have_text(re.compile(r"^[A-Z0-9]{10}$"))
    expect(card.locator("[data-countdown-wrap]")).to_be_hidden()
    expect(page.locator("nav [data-balance]:visible")).to_have_text("10,000")
    assert same_document(page), "the payment page reloaded; it should update in place"
    check_layout(page)
    screenshot(page, "paid")
    assert icon_glyph(page) == '"\u2713"', "the paid state needs its tick, not only green"
    audit(page, "payment (paid)")

    page.get_by_role("link", name="Start using your words").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Spend words")
    page.get_by_label("Paste your text").fill(WORDS)
    expect(page.locator("#word-count")).to_have_text("12 words")
    check_layout(page)
    screenshot(page, "spending")
    audit(page, "spend")
    page.get_by_role("button", name="Count and charge").click()
    expect(page.get_by_role("status").filter(has_text="12 words charged")).to_contain_text("9,988 words left")
    expect(page.locator("nav [data-balance]:visible")).to_have_text("9,988")
    expect(page.locator("main [data-balance]")).to_have_text("9,988")

    page.goto("/history")
    payments = page.get_by_role("region", name="Payments")
    expect(payments.locator(".status-badge")).to_have_text(["Paid"])
    expect(payments).to_contain_text("Paid")
    words = page.get_by_role("region", name="Words in and out").locator("li")
    expect(words).to_have_count(2)  # newest first: the spend, then the words bought
    expect(words.nth(0)).to_contain_text("−12 words")
    expect(words.nth(1)).to_contain_text("+10,000 words")
    check_layout(page)
    screenshot(page, "history")
    audit(page, "history")

    # Nothing on either page went to another origin, and nothing broke in the console.
    assert not shop.foreign(stack.web_url), shop.foreign(stack.web_url)
    assert not phone.foreign(origin(stack.sim_url)), phone.foreign(origin(stack.sim_url))
    assert any(url.endswith("/status.json") for url in shop.requests)
    assert not shop.errors, shop.errors
    assert not phone.errors, phone.errors


def waiting_for_pin(stack, context):
    """A signed-in customer presses Pay; the payment page waits for the PIN."""
    shopper = signed_in(context, stack.web_url)
    page = context.new_page()
    watch = Watch.attach(page)
    start_payment(page)
    left = expect_waiting_for_pin(page)
    return shopper, page, watch, left


def prompted_handset(stack, context, shopper):
    """The simulator's handset in a second page, showing the customer's prompt."""
    handset = context.new_page()
    open_handset(handset, stack.sim_url, shopper)
    expect_prompt(handset)
    return handset


def expect_ended(page, status: str, title: str, glyph: str, message: str, **wait):
    """The payment page settles on an unpaid end, says why, and offers to try again."""
    wait_for_status(page, status, **wait)
    card = status_card(page)
    expect(card.locator("[data-title]")).to_have_text(title)
    assert icon_glyph(page) == glyph
    expect(card.locator("[data-message]")).to_contain_text(message)
    expect(card.get_by_role("button", name="Try again")).to_be_visible()
    return card


def finish(stack, page, watch, screenshot, state: str) -> None:
    """The layout holds, a screenshot is kept, and nothing broke or went to another origin."""
    check_layout(page)
    screenshot(page, state)
    assert not watch.errors and not watch.foreign(stack.web_url), watch


def test_cancel_on_the_phone(stack, context, screenshot):
    shopper, page, watch, _ = waiting_for_pin(stack, context)
    handset = prompted_handset(stack, context, shopper)
    handset.click("#pin-cancel")
    expect(handset_result(handset)).to_contain_text("cancelled")

    expect_ended(page, "cancelled", "Cancelled", '"\u2015"', "You cancelled the payment on your phone")
    expect(page.locator("nav [data-balance]:visible")).to_have_text("0")
    finish(stack, page, watch, screenshot, "cancelled")


def test_wrong_pin(stack, context, screenshot):
    shopper, page, watch, _ = waiting_for_pin(stack, context)
    handset = prompted_handset(stack, context, shopper)
    enter_pin(handset, "9999")
    expect(handset_result(handset)).to_contain_text("Wrong PIN")

    expect_ended(page, "failed", "Payment failed", '"\u2715"', "The M-Pesa PIN entered was wrong")
    finish(stack, page, watch, screenshot, "wrong-pin")


def test_prompt_times_out(stack, context, screenshot):
    """Nobody answers: the countdown runs out and the page says the prompt timed out."""
    shopper, page, watch, _ = waiting_for_pin(stack, context)
    handset = prompted_handset(stack, context, shopper)

    card = expect_ended(page, "timeout", "Timed out", '"!"', "not answered in time",
                        timeout=(PROMPT_TIMEOUT + 15) * 1000)
    expect(card.locator("[data-countdown-wrap]")).to_be_hidden()
    expect(handset_result(handset)).to_contain_text("timed out", timeout=SETTLE_MS)
    finish(stack, page, watch, screenshot, "timed-out")


def test_reload_while_waiting(stack, context):
    """A reload in the middle of a payment picks the tracking up again and ends paid."""
    shopper, page, watch, before = waiting_for_pin(stack, context)
    payment_url = page.url

    page.reload()
    assert page.url == payment_url
    after = expect_waiting_for_pin(page)
    assert after <= before, "the countdown restarted after the reload"
    mark_document(page)

    handset = prompted_handset(stack, context, shopper)
    enter_pin(handset, CORRECT_PIN)

    wait_for_status(page, "completed")
    expect(status_card(page).locator("[data-title]")).to_have_text("Paid")
    expect(page.locator("nav [data-balance]:visible")).to_have_text("10,000")
    assert same_document(page)
    assert not watch.errors and not watch.foreign(stack.web_url), watch
