"""Phone numbers as Kenyans write them, and M-Pesa lines only, on a 360-pixel phone."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.support.invariants import assert_money_invariants

from .a11y import audit
from .pages import SCREENSHOTS, check_layout, signed_in, status_card, wait_for_status

pytestmark = pytest.mark.e2e


def test_an_airtel_number_is_refused_by_name_and_a_moved_one_goes_through(stack, phone_page):
    context, page = phone_page
    shopper = signed_in(context, stack.web_url)
    page.goto("/checkout/basic")
    local = "0" + shopper.phone[3:]
    # The saved number is shown as the customer writes it, not as Daraja wants it.
    expect(page.locator("#phone_number")).to_have_value(f"{local[:4]} {local[4:7]} {local[7:]}")
    expect(page.locator("#moved-choice")).to_have_count(0)

    page.fill("#phone_number", "0733123456")
    page.get_by_role("button", name="Pay KES 100 with M-Pesa").click()
    error = page.locator("#phone_number-error")
    expect(error).to_have_text("0733 123 456 is an Airtel number; M-Pesa needs a Safaricom line.")
    expect(page.locator("#phone_number")).to_have_value("0733123456")  # as typed
    moved = page.get_by_label("This number has moved to Safaricom and has M-Pesa")
    expect(moved).not_to_be_checked()
    check_layout(page)
    audit(page, "checkout refused an Airtel number")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "phone-airtel-refused.png"), full_page=True, animations="disabled")
    assert stack.db.payments.count_documents({"username": shopper.username}) == 0

    moved.check()
    page.get_by_role("button", name="Pay KES 100 with M-Pesa").click()
    expect(page).to_have_url(re.compile(r"/payments/[^/]+$"))
    wait_for_status(page, "pending")
    expect(status_card(page).locator("[data-phone]")).to_have_text("0733 123 456")
    page.get_by_role("button", name="Cancel payment").click()
    wait_for_status(page, "cancelled")
    page.goto("/history")
    expect(page.locator("main")).to_contain_text("0733 123 456")
    expect(page.get_by_text("254733123456")).to_have_count(0)
    assert_money_invariants(stack.db)
