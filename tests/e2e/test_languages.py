"""A customer switches to Swahili on a 360-pixel phone while paying, and back to English.

The switch sits in the footer of every customer page. The choice is kept on the account, so
the waiting page (and its live status, fetched by the page's script) speaks it too.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.support.invariants import assert_money_invariants

from .a11y import audit
from .pages import DEVICES, SCREENSHOTS, check_layout, signed_in, status_card, wait_for_status

pytestmark = pytest.mark.e2e


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"phone-language-{name}.png"), full_page=True, animations="disabled")


def switch_to(page, name: str) -> None:
    page.locator("#language-switch").get_by_role("button", name=name).click()
    expect(page.locator("#language-switch").get_by_role("button", name=name)).to_have_attribute("aria-pressed", "true")


def test_switching_to_swahili_while_paying_and_back(stack, phone_page):
    context, page = phone_page
    shopper = signed_in(context, stack.web_url)

    page.goto("/checkout/basic")
    expect(page.get_by_role("heading", level=1)).to_have_text("Pay for Basic")
    switch_to(page, "Kiswahili")
    # Back on the same checkout page, now in Swahili.
    expect(page).to_have_url(re.compile(r"/checkout/basic$"))
    expect(page.locator("html")).to_have_attribute("lang", "sw")
    expect(page.get_by_role("heading", level=1)).to_have_text("Lipia Basic")
    expect(page.get_by_label("Lipa kwa nambari hii ya M-Pesa")).to_be_visible()
    check_layout(page)
    shot(page, "checkout-sw")
    audit(page, "checkout in Swahili")

    page.get_by_role("button", name="Lipa KES 100 kwa M-Pesa").click()
    expect(page).to_have_url(re.compile(r"/payments/[^/]+$"))
    wait_for_status(page, "pending")
    card = status_card(page)
    # Written by the page's script from the status it polls: in Swahili as well.
    expect(card.locator("[data-title]")).to_have_text("Angalia simu yako")
    expect(card.locator("[data-message]")).to_contain_text("Weka PIN yako ya M-Pesa")
    expect(card).to_contain_text("Ombi la PIN litaisha baada ya")
    expect(page.get_by_role("button", name="Ghairi malipo")).to_be_visible()
    check_layout(page)
    shot(page, "waiting-sw")
    audit(page, "waiting page in Swahili")

    page.get_by_role("button", name="Ghairi malipo").click()
    wait_for_status(page, "cancelled")
    expect(card.locator("[data-title]")).to_have_text("Yameghairiwa")
    expect(card.locator("[data-message]")).to_contain_text("Umeghairi malipo haya")

    # Back to English: the choice on the account changes with it.
    switch_to(page, "English")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(card.locator("[data-title]")).to_have_text("Cancelled")
    expect(card.locator("[data-message]")).to_contain_text("You cancelled this payment")
    shot(page, "cancelled-en")
    assert stack.db.users.find_one({"username": shopper.username})["language"] == "en"
    assert_money_invariants(stack.db)


def test_a_visitor_reads_the_landing_and_forgot_password_pages_in_swahili(browser, stack, axe_script):
    # The browser asks for Swahili (Accept-Language from the locale): no switch, no account.
    context = browser.new_context(**DEVICES["phone"], base_url=stack.web_url, locale="sw-KE")
    context.set_default_timeout(10_000)
    context.add_init_script(path=str(axe_script))
    try:
        page = context.new_page()
        page.goto("/")
        expect(page.locator("html")).to_have_attribute("lang", "sw")
        expect(page.locator("#about-title")).to_have_text("Unachopata")
        expect(page.locator("footer")).to_contain_text("Sera ya kurejesha pesa")
        check_layout(page)
        shot(page, "landing-sw")
        audit(page, "landing page in Swahili")

        page.goto("/forgot")
        expect(page.get_by_role("heading", level=1)).to_have_text("Umesahau nenosiri lako?")
        page.get_by_role("button", name="Nitumie kiungo").click()
        # Sent empty: refused with the reason in Swahili beside the box.
        expect(page.get_by_label("Jina lako la mtumiaji au anwani ya barua pepe")).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_role("alert")).to_contain_text("Weka jina lako la mtumiaji au anwani yako ya barua pepe.")
        check_layout(page)
        shot(page, "forgot-sw")
        audit(page, "forgot password in Swahili")
    finally:
        context.close()
